"""DRBN stage 1 and stage 2 (band recomposition): official layout, goldens with the authors' weights (in-process and
through test.py), any input size, the training losses against independent computations, stage-2 training
(frozen DRBN, learning recomposition net and discriminator) and its guards (test splits, VGG weights)."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import correlate
from skimage.metrics import structural_similarity
from torch.utils.data import default_collate

from data.image_io import read_rgb, write_rgb
from data.loader import create_dataset
from data.preprocess import paired_flip_rot
from data.semi_dataset import check_unpaired_sources
from models.build import build_network
from models.checkpoint import read_state_dict, save_generator
from models.networks.drbn import BandRecomposer, DRBN, DRBNRecompose
from models.methods.drbn_model import DRBNRecomposeModel
from models.losses import SSIM, VGGPerceptualLoss, load_vgg16_features, lsgan_d_loss, ssim_map
from options.options import load_options
from utils.errors import CheckpointError, OptionError

ROOT = Path(__file__).resolve().parents[1]
CONFS = ROOT / "confs/DRBN"
TINY = {"width": 4, "growth": 2, "n_layers": 2, "recurrences": 2}


def _weights(shared_dir, name):
    p = shared_dir / "weights/drbn" / name
    if not p.is_file():
        pytest.skip(f"{p} not present")
    return p


def _vgg(shared_dir):
    p = shared_dir / "weights/vgg16_features.pth"
    if not p.is_file():
        pytest.skip(f"{p} not present")
    return p


def _nchw(path):
    return torch.from_numpy(read_rgb(path).astype(np.float32) / 255).permute(2, 0, 1)[None]


def _quantise(x):
    return np.clip(np.rint(np.clip(x, 0, 1) * 255), 0, 255).astype(np.uint8)


def _run(script, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def _one_line_error(r):
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and not any("Traceback" in line for line in lines), r.stderr[-2000:]
    return lines[-1]


# -- layout ------------------------------------------------------------------------------------------------------
def test_official_keys_shapes_and_parameter_counts(official_keys, shared_dir):
    ours = {k: tuple(v.shape) for k, v in DRBN().state_dict().items()}
    assert ours == official_keys("DRBN")
    assert sum(p.numel() for p in DRBN().parameters()) == 557_668
    rec = BandRecomposer()
    assert sum(p.numel() for p in rec.parameters()) == 19_161
    official = read_state_dict(_weights(shared_dir, "model_R_s2.pt"))
    assert {k: tuple(v.shape) for k, v in rec.state_dict().items()} == {k: tuple(v.shape) for k, v in official.items()}
    # a stage-2 checkpoint of ours holds both networks
    keys = DRBNRecompose().state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"drbn", "recompose"}


# -- stage 1 -----------------------------------------------------------------------------------------------------
def test_stage1_golden_every_recurrence(golden, shared_dir):
    g = golden("DRBN")
    opt = load_options(CONFS / "DRBN_stage1.yml")
    net, _ = build_network(opt, str(_weights(shared_dir, "model_s1.pt")))  # the legacy CUDA-tagged original
    x = torch.from_numpy(np.load(g / "cond_input.npy"))
    np.testing.assert_array_equal(x.numpy(), _nchw(g / "low.png").numpy())
    with torch.inference_mode():
        every = net.eval()(x, return_all=True)
        final = net.enhance(x)
    assert len(every) == 4
    for k, bands in enumerate(every[:3], start=1):
        for band, s in zip(bands, (1, 2, 4)):
            np.testing.assert_allclose(band.numpy(), np.load(g / f"recur{k}_res_s{s}.npy"), rtol=0, atol=1e-5)
    for band, name in zip(every[3], ("enhanced", "enhanced_s2", "enhanced_s4")):
        np.testing.assert_allclose(band.numpy(), np.load(g / f"{name}.npy"), rtol=0, atol=1e-5)
    assert torch.equal(final, every[3][0])


@pytest.mark.slow
def test_stage1_test_py_golden_png_and_any_size(golden, shared_dir, tmp_path):
    g = golden("DRBN")
    weights = _weights(shared_dir, "model_s1.pt")
    low = read_rgb(g / "low.png")
    odd = low[1:62, 3:93]  # 61 x 90: neither side a multiple of 4
    write_rgb(tmp_path / "in/crop.png", low)
    write_rgb(tmp_path / "in/odd.png", odd)
    r = _run("test.py", "--opt", CONFS / "DRBN_stage1.yml", "--model_path", weights, "--input", tmp_path / "in",
             "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    ours = read_rgb(tmp_path / "out/crop.png").astype(int)
    assert np.abs(ours - read_rgb(g / "enhanced.png").astype(int)).max() <= 1
    # odd size: reflect-padded to 64 x 92 at the bottom/right, enhanced, cropped back
    out_odd = read_rgb(tmp_path / "out/odd.png")
    assert out_odd.shape == odd.shape
    net, _ = build_network(load_options(CONFS / "DRBN_stage1.yml"), str(weights))
    padded = np.pad(odd, ((0, 3), (0, 2), (0, 0)), mode="reflect")
    with torch.inference_mode():
        ref = net.eval().enhance(_nchw_array(padded))[0, :, :61, :90].permute(1, 2, 0).numpy()
    assert np.abs(out_odd.astype(int) - _quantise(ref).astype(int)).max() <= 1


def test_stage1_full_400x600_image_equals_the_official_output(golden, shared_dir, tmp_path):
    """enhanced_full.png is the official output for the whole LOL-v1 image whose 64x96 crop is low.png; that input is
    not in ../shared (golden README), so this runs when LLFLOW_DRBN_FULL_INPUT points at it."""
    g = golden("DRBN")
    src = os.environ.get("LLFLOW_DRBN_FULL_INPUT")
    if not src or not Path(src).is_file():
        pytest.skip("set LLFLOW_DRBN_FULL_INPUT to the official input/LOL-v1.png (not in ../shared)")
    full = read_rgb(src)
    assert np.array_equal(full[160:224, 250:346], read_rgb(g / "low.png")), "not the golden's input image"
    write_rgb(tmp_path / "in/full.png", full)
    r = _run("test.py", "--opt", CONFS / "DRBN_stage1.yml", "--model_path", _weights(shared_dir, "model_s1.pt"),
             "--input", tmp_path / "in", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    ours = read_rgb(tmp_path / "out/full.png").astype(int)
    assert np.abs(ours - read_rgb(g / "enhanced_full.png").astype(int)).max() <= 1


def _nchw_array(img):
    return torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_stage1_rejects_other_checkpoints_in_one_line(shared_dir, tmp_path):
    opt = load_options(CONFS / "DRBN_stage1.yml")
    with pytest.raises(CheckpointError) as e:
        build_network(opt, str(_weights(shared_dir, "model_R_s2.pt")))
    assert "recomposition" in str(e.value) and "\n" not in str(e.value)
    torch.save(DRBN(**TINY).state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError) as e:
        build_network(opt, str(tmp_path / "tiny.pth"))
    msg = str(e.value)
    assert "network_G.drbn" in msg and "recurrences 2" in msg and "\n" not in msg


# -- stage 2 -----------------------------------------------------------------------------------------------------
def _stage2_opt(shared_dir, *extra):
    return load_options(CONFS / "DRBN_stage2.yml",
                        [f"path.pretrain_stage1={_weights(shared_dir, 'model_s2.pt')}", *extra])


def test_stage2_golden_bands_weights_output(golden, shared_dir):
    g = golden("DRBN-stage2")
    net, _ = build_network(_stage2_opt(shared_dir), str(_weights(shared_dir, "model_R_s2.pt")))
    x = torch.from_numpy(np.load(g / "cond_input.npy"))
    with torch.inference_mode():
        every = net.eval().drbn(x, return_all=True)
        res = net(x)
    for k, bands in enumerate(every, start=1):
        for band, s in zip(bands, (1, 2, 4)):
            np.testing.assert_allclose(band.numpy(), np.load(g / f"recur{k}_res_s{s}.npy"), rtol=0, atol=1e-5)
    for i in range(3):
        np.testing.assert_allclose(res.bands[i].numpy(), np.load(g / f"band_b{i + 1}.npy"), rtol=0, atol=1e-5)
        np.testing.assert_allclose(res.weights[i].numpy(), np.load(g / f"weight{i + 1}.npy"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.output.numpy(), np.load(g / "enhanced.npy"), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_stage2_test_py_golden_png(golden, shared_dir, tmp_path):
    g = golden("DRBN-stage2")
    write_rgb(tmp_path / "in/low.png", read_rgb(g / "low.png")[:56, :88])  # the official test's crop
    args = ["--opt", CONFS / "DRBN_stage2.yml", "--model_path", _weights(shared_dir, "model_R_s2.pt"),
            "--input", tmp_path / "in", "--out", tmp_path / "out"]
    r = _run("test.py", *args, "--set", f"path.pretrain_stage1={_weights(shared_dir, 'model_s2.pt')}")
    assert r.returncode == 0, r.stderr[-3000:]
    ours = read_rgb(tmp_path / "out/low.png").astype(int)
    assert np.abs(ours - read_rgb(g / "enhanced.png").astype(int)).max() <= 1
    # the official recompose-only file without the stage-1 weights: one line naming the option
    assert "path.pretrain_stage1" in _one_line_error(_run("test.py", *args))


# -- losses ------------------------------------------------------------------------------------------------------
def _ssim_reference(a, b):
    """SSIM map of two HxW float64 images: zero-padded 11x11 Gaussian (sigma 1.5) statistics, scipy only."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / g.sum() ** 2
    f = lambda z: correlate(z, w, mode="constant", cval=0.0)  # noqa: E731
    mx, my = f(a), f(b)
    vx, vy, cxy = f(a * a) - mx * mx, f(b * b) - my * my, f(a * b) - mx * my
    return ((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx * mx + my * my + 1e-4) * (vx + vy + 9e-4))


def test_ssim_loss_matches_independent_computations():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 30, 41))
    y = np.clip(0.7 * x + rng.normal(0.1, 0.1, x.shape), 0, 1)
    ref = np.stack([np.stack([_ssim_reference(x[i, c], y[i, c]) for c in range(3)]) for i in range(2)])
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    ours = ssim_map(xt, yt).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)
    assert abs(SSIM()(xt, yt).item() - ref.mean()) < 2e-6
    # away from the zero-padded border it is skimage's Gaussian SSIM
    for i in range(2):
        sk = structural_similarity(x[i].transpose(1, 2, 0), y[i].transpose(1, 2, 0), gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
        assert abs(ours[i][:, 5:-5, 5:-5].mean() - sk) < 2e-6
    # differentiable
    xd = torch.tensor(x[:1, :1, :14, :14], requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ssim_map(a, torch.tensor(y[:1, :1, :14, :14])).mean(), (xd,))


def test_vgg_perceptual_loss_and_missing_weights(shared_dir, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers
    path = _vgg(shared_dir)
    loss = VGGPerceptualLoss(load_vgg16_features(str(path)))
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    ref_trunk = make_layers(cfgs["D"])  # torchvision's vgg16().features
    state = torch.load(path, map_location="cpu", weights_only=True)
    ref_trunk.load_state_dict({k[len("features."):]: v for k, v in state.items()})
    with torch.no_grad():
        fx, fy, ref = x, y, 0.0
        for i, layer in enumerate(ref_trunk[:9]):
            fx, fy = layer(fx), layer(fy)
            ref += {1: 1.0, 3: 0.6, 6: 0.4, 8: 0.2}.get(i, 0.0) * float(((fx - fy) ** 2).mean())
        assert abs(loss(x, y).item() - ref) < 1e-5 * max(1.0, ref)
    xg = x.clone().requires_grad_(True)
    loss(xg, y).backward()
    assert xg.grad.abs().sum() > 0 and all(p.grad is None for p in loss.parameters())
    # no path, no environment variable: a one-line error naming the option
    monkeypatch.delenv("LOWLIGHT_VGG16", raising=False)
    with pytest.raises(OptionError) as e:
        load_vgg16_features(None)
    assert "path.vgg16_features" in str(e.value) and "LOWLIGHT_VGG16" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("LOWLIGHT_VGG16", str(path))
    assert isinstance(load_vgg16_features(None), torch.nn.Sequential)


def test_lsgan_noisy_labels():
    torch.manual_seed(0)
    n = 20000
    # with constant scores s the expected loss is E[(s - U)^2]: the label ranges are [0.7, 1.2] and [0, 0.3]
    real, fake = torch.full((n, 1), 0.95), torch.full((n, 1), 0.15)
    var_real, var_fake = 0.5 ** 2 / 12, 0.3 ** 2 / 12
    assert abs(lsgan_d_loss(real, fake).item() - (var_real + var_fake)) < 2e-3


def test_flip_and_transpose_augmentation_reaches_all_eight_orientations():
    a = np.arange(2 * 3).reshape(2, 3, 1)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        x, y = paired_flip_rot([a, a + 10], rng, True, False, use_vflip=True, use_transpose=True)
        np.testing.assert_array_equal(y, x + 10)
        seen.add(x.tobytes() + bytes(x.shape))
    assert len(seen) == 8


# -- stage-2 training ----------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_stage1(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "stage1.pth"
    torch.save(DRBN(**TINY).state_dict(), path)
    return path


def _tiny_stage2_opt(tmp_path, stage1, vgg, *extra):
    sets = [f"path.pretrain_stage1={stage1}", f"path.vgg16_features={vgg}", "datasets.train.GT_size=32",
            f"path.experiments_root={tmp_path}", "use_tb_logger=false", "val.save_images=false",
            *[f"network_G.drbn.{k}={v}" for k, v in TINY.items()], *extra]
    return load_options(CONFS / "demo_tiny_stage2.yml", sets, is_train=True)


def test_stage2_training_step_freezes_drbn(shared_dir, tmp_path, tiny_stage1):
    opt = _tiny_stage2_opt(tmp_path, tiny_stage1, _vgg(shared_dir))
    torch.manual_seed(0)
    model = DRBNRecomposeModel(opt, torch.device("cpu"))
    data = create_dataset(dict(opt["datasets"]["train"]), "train")
    data.set_epoch(3)
    batch = default_collate([data[0], data[1]])
    assert batch["LQ_unpaired"].shape == batch["HQ"].shape == batch["GT"].shape == (2, 3, 32, 32)
    before = {k: {n: t.clone() for n, t in net.state_dict().items()} for k, net in model.networks().items()}
    for _ in range(2):
        logs = model.optimize(batch)
        assert all(np.isfinite(logs[k]) for k in ("loss", "d_loss", "perceptual", "ssim", "adv")), logs
        assert not logs["skipped"] and not logs["d_skipped"]
    g, d = model.networks()["G"].state_dict(), model.networks()["D"].state_dict()
    stage1 = read_state_dict(tiny_stage1)
    assert all(torch.equal(g[f"drbn.{k}"], v) for k, v in stage1.items())
    assert not model.generator.drbn.training
    assert not any(p.requires_grad for p in model.generator.drbn.parameters())
    changed = lambda key, sd: [n for n, t in sd.items() if t.is_floating_point() and not torch.equal(t, before[key][n])]  # noqa: E731
    rec = [n for n in changed("G", g) if n.startswith("recompose.")]
    assert len(rec) == len([n for n in g if n.startswith("recompose.")])
    assert not [n for n in changed("G", g) if n.startswith("drbn.")]
    assert any(n.endswith("weight") for n in changed("D", d))
    # our combined checkpoint needs no stage-1 file
    save_generator(model.generator, tmp_path / "combined.pth")
    net, notes = build_network(load_options(CONFS / "DRBN_stage2.yml", [
        *[f"network_G.drbn.{k}={v}" for k, v in TINY.items()]]), str(tmp_path / "combined.pth"))
    x = torch.rand(1, 3, 16, 20)
    with torch.inference_mode():
        assert torch.equal(net.eval().enhance(x), model.generator.eval().enhance(x))


def test_stage2_refuses_test_splits(tmp_path):
    opt = load_options(CONFS / "DRBN_stage2.yml")
    for folder in (opt["dataroot_LR"], "datasets/LOL-v2/Real_captured/Test/Low", "data/Our_low_test",
                   "data/LIME", str(tmp_path / "eval15" / "low")):
        bad = load_options(CONFS / "DRBN_stage2.yml", [f"datasets.train.dataroot_unpaired_LQ={folder}"])
        with pytest.raises(OptionError) as e:
            check_unpaired_sources(bad)
        assert "datasets.train.dataroot_unpaired_LQ" in str(e.value) and "\n" not in str(e.value)
    hq_in_test = load_options(CONFS / "DRBN_stage2.yml", [f"datasets.train.dataroot_HQ={opt['dataroot_GT']}/x"])
    with pytest.raises(OptionError, match="dataroot_HQ"):
        check_unpaired_sources(hq_in_test)
    check_unpaired_sources(opt)  # the shipped folders are fine


@pytest.mark.slow
def test_stage2_cli_one_line_errors(shared_dir, tmp_path, tiny_stage1):
    base = ["train.py", "--opt", CONFS / "demo_tiny_stage2.yml", "--set", f"path.experiments_root={tmp_path}",
            "--set", f"path.pretrain_stage1={tiny_stage1}",
            *sum((["--set", f"network_G.drbn.{k}={v}"] for k, v in TINY.items()), [])]
    env = {k: v for k, v in os.environ.items() if k != "LOWLIGHT_VGG16"}
    line = _one_line_error(_run(*base, "--set", "datasets.train.dataroot_unpaired_LQ=.cache/demo_data/eval15/low",
                                env=env))
    assert "dataroot_unpaired_LQ" in line and "test" in line
    line = _one_line_error(_run(*base, env=env))
    assert "path.vgg16_features" in line


# -- stage-1 training through train.py -----------------------------------------------------------------------------
@pytest.mark.slow
def test_stage1_demo_learns_through_train_py(tmp_path):
    import re
    r = _run("train.py", "--opt", CONFS / "demo_tiny.yml", "--set", f"path.experiments_root={tmp_path}",
             "--set", "train.niter=50", "--set", "train.val_freq=50", "--set", "logger.print_freq=10",
             "--set", "use_tb_logger=false", "--set", "val.save_images=false", timeout=900,
             env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "demo_tiny_DRBN"
    log = (run / "train.log").read_text()
    losses = [float(v) for v in re.findall(r"step \d+ epoch \d+: loss (\S+)", log)]
    psnr = {int(s): float(v) for s, v in re.findall(r"val @(\d+): PSNR (\S+)", log)}
    assert len(losses) == 5 and sorted(psnr) == [0, 50], log[-2000:]
    assert losses[-1] < losses[0] - 0.5, losses
    assert psnr[50] > psnr[0] + 1.0, psnr
    # the best checkpoint is a plain DRBN state dict that test.py reads with the same config
    best = read_state_dict(run / "models/best_psnr_G.pth")
    assert all(k.startswith("recur") for k in best)
