"""N2LDiff: golden equivalence with the official code (../shared/golden/N2LDiff: condition, encoder, q_sample, denoiser,
one sampling step, the full 100-step sample with the saved noise, the loss terms), checkpoint loading, the official
config format, the sampler's determinism and noise replay through the synthesis backend, and a tiny training run."""
import json
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_weights, read_state_dict
from models.networks.n2ldiff.condition import condition_tensor, histeq
from models.networks.n2ldiff.diffusion import CenterDiffusion, respaced_timesteps
from models.networks.n2ldiff.network import N2LDiffNet
from models.methods.n2ldiff_model import N2LDiffModel
from models.optimizers import Lion
from options.options import load_options
from utils.errors import CheckpointError, OptionError

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


@pytest.fixture(scope="module")
def gold(golden):
    return golden("N2LDiff")


@pytest.fixture(scope="module")
def G(gold):
    """Loader of one golden array as a tensor."""
    return lambda name: torch.from_numpy(np.load(gold / f"{name}.npy"))


@pytest.fixture(scope="module")
def opt(gold):
    return load_options(gold / "config.yaml")


@pytest.fixture(scope="module")
def net(opt, gold):
    model, notes = N2LDiffModel.build_network(opt, str(gold / "weights.ckpt"))
    return model.eval()


@pytest.fixture(scope="module")
def vgg16(shared_dir):
    p = shared_dir / "weights" / "vgg16_features.pth"
    if not p.is_file():
        pytest.skip(f"{p} not present")
    return str(p)


def maxdiff(a, b):
    return float((a - b).abs().max())


# -- checkpoint and config ---------------------------------------------------------------------------------------
def test_official_lightning_checkpoint_loads_strictly(opt, gold):
    state = read_state_dict(gold / "weights.ckpt")  # unwraps the Lightning 'state_dict', weights_only
    assert len(state) == 451 and any(k.startswith("model.unet.") for k in state) and any(k.startswith("encoder.")
                                                                                          for k in state)
    net, notes = N2LDiffModel.build_network(opt, str(gold / "weights.ckpt"))
    own = net.state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in state)


def test_training_only_lpips_keys_are_skipped_with_a_note(opt, gold):
    state = read_state_dict(gold / "weights.ckpt")
    state["lpips.net.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
    state["loss_fn_alex.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    net = N2LDiffNet.from_options(opt)
    notes = load_weights(net, state, source="ckpt")
    assert len(notes) == 1 and "skipped 2 tensors" in notes[0] and "\n" not in notes[0]
    del state["encoder.final_conv.1.bias"]
    with pytest.raises(CheckpointError, match="encoder.final_conv.1.bias"):
        load_weights(N2LDiffNet.from_options(opt), state, source="ckpt")


def test_official_config_is_converted(opt, gold):
    n = opt["network_G"]["n2ldiff"]
    assert opt["model"] == "N2LDiff" and n["dim"] == 8 and n["dim_mults"] == [1, 2, 2, 4, 4]
    assert n["timesteps"] == 100 and n["stronger_cond"] and n["use_center_sampler"]
    tr = opt["train"]
    assert tr["lr_G"] == 4e-4 and tr["grad_clip"] == 1.0 and tr["manual_seed"] == 3407
    assert tr["n2ldiff"]["optimizer"] == "Lion" and tr["n2ldiff"]["loss_type"] == "combined"
    # switch_normal_low: the input is the normal-light ('high') image, the reference the low one
    assert opt["dataroot_LR"].endswith("data/golden/high") and opt["dataroot_GT"].endswith("data/golden/low")
    assert opt["datasets"]["val"]["swap_roles"] is True


def test_official_config_rejects_unknown_keys_and_unsupported_values(gold, tmp_path):
    text = (gold / "config.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "\nunet_dimm: 3\n")
    with pytest.raises(OptionError, match="unknown option 'unet_dimm'"):
        load_options(bad)
    bad.write_text(text.replace("on_res: False", "on_res: True"))
    with pytest.raises(OptionError, match="'on_res: True' is not supported"):
        load_options(bad)


def test_official_size_parameter_counts():
    # schema defaults = cfg/train/from_scratch.yaml; counts from spec 8 (verified by running the official code)
    opt = load_options(raw={"model": "N2LDiff", "network_G": {"which_model_G": "N2LDiff"}})
    net = N2LDiffNet.from_options(opt)
    assert sum(p.numel() for p in net.model.unet.parameters()) == 42_503_366
    assert sum(p.numel() for p in net.encoder.parameters()) == 37_773_638


# -- networks ----------------------------------------------------------------------------------------------------
def test_condition_tensor(G):
    c = condition_tensor(G("img_lr"))
    assert c.shape == (1, 12, 64, 96)
    assert maxdiff(c, G("cond12")) < 1e-6


def test_histeq_is_the_official_pil_style_one(G):
    # the official truncating cast + PIL-style LUT; LLFlow's cv2.equalizeHist (data/preprocess.py) differs
    from data.preprocess import histeq as cv2_histeq
    img = G("img_lr")
    assert maxdiff(histeq(img), G("cond12")[:, 3:6]) == 0
    u8 = (img[0] * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    other = torch.from_numpy(cv2_histeq(u8)).permute(2, 0, 1)[None].float() / 255
    assert maxdiff(other, G("cond12")[:, 3:6]) > 5 / 255


def test_schedule_buffers_match_the_official_cosine_schedule(gold, net):
    sched = json.loads((gold / "golden.json").read_text())["schedule"]
    fresh = CenterDiffusion(torch.nn.Identity(), 100)
    for k, v in sched.items():
        if isinstance(v, list) and len(v) == 100:
            assert maxdiff(getattr(fresh, k), torch.tensor(v)) < 1e-6, k
            assert maxdiff(getattr(net.model, k), torch.tensor(v)) < 1e-6, k


def test_encoder_centre_and_features(net, G):
    with torch.no_grad():
        centre, feats = net.encoder(G("img_lr"))
    assert maxdiff(centre, G("enc_center")) < TOL
    assert len(feats) == 9
    for i, f in enumerate(feats):
        assert maxdiff(f, G(f"enc_feat_{i:02d}")) < TOL, i


def test_q_sample_and_denoiser(net, G):
    t = torch.tensor([37])
    centre, eps = G("enc_center"), G("q_noise")
    x_t = net.model.q_sample(2 * G("img_hr") - 1, t, centre, eps)
    assert maxdiff(x_t, G("q_x_t")) < TOL
    assert torch.equal(eps, G("q_noise"))  # not modified in place (the official q_sample is)
    assert maxdiff(net.model.total_noise(eps, t, centre), G("q_noise_after")) < TOL
    feats = [G(f"enc_feat_{i:02d}") for i in range(9)]
    with torch.no_grad():
        assert maxdiff(net.model.unet(G("q_x_t"), t, G("img_lr"), feats), G("unet_eps")) < TOL


def test_one_sampling_step(net, G):
    feats = [G(f"enc_feat_{i:02d}") for i in range(9)]
    args = (G("q_x_t"), 37, G("img_lr"), G("enc_center"), feats)
    with torch.no_grad():
        x_prev, x0 = net.model.p_sample(*args, G("pstep_noise"))
        mean, _ = net.model.p_sample(*args, torch.zeros_like(G("pstep_noise")))
    assert maxdiff(x0, G("pstep_x0_pred")) < TOL
    assert maxdiff(mean, G("pstep_model_mean")) < TOL
    assert maxdiff(x_prev, G("pstep_x_prev")) < TOL


def test_full_sample_with_replayed_noise(net, G, gold):
    noise = np.load(gold / "sample_noise.npy")
    out = net.sample(G("img_lr"), noise=noise)
    assert maxdiff(out, G("sample_out")) < TOL
    png = np.asarray(Image.open(gold / "sample.png")).astype(int)
    ours = (out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8).astype(int)  # the official truncating cast
    assert np.abs(png - ours).max() <= 1


# -- sampler -----------------------------------------------------------------------------------------------------
def test_sampler_determinism(net, G):
    img = G("img_lr")[..., :32, :32]
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = net.sample(img, generator=gen(1), steps=4)
    b = net.sample(img, generator=gen(1), steps=4)
    c = net.sample(img, generator=gen(2), steps=4)
    assert torch.equal(a, b)
    assert maxdiff(a, c) > 1e-3
    assert torch.equal(net.enhance(img), net.enhance(img))


def test_respaced_timesteps():
    assert respaced_timesteps(100, 100).tolist() == list(range(100))
    ts = respaced_timesteps(100, 10)
    assert ts[0] == 0 and ts[-1] == 99 and len(set(ts.tolist())) == 10


def _synth_args(tmp_path, **kw):
    base = dict(input=None, out=str(tmp_path / "out"), model_path=None, seed=0, steps=None, replay_noise=None,
                device="cpu")
    base.update(kw)
    return Namespace(**base)


def test_synthesize_replays_the_golden_sample(opt, gold, tmp_path):
    from engine.n2ldiff_synthesis import run
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(gold / "normal.png", inp / "113.png")
    run(opt, _synth_args(tmp_path, input=str(inp), model_path=str(gold / "weights.ckpt"),
                         replay_noise=str(gold / "sample_noise.npy")))
    ours = np.asarray(Image.open(tmp_path / "out" / "113.png")).astype(int)
    png = np.asarray(Image.open(gold / "sample.png")).astype(int)
    assert ours.shape == png.shape and np.abs(ours - png).max() <= 1


def test_synthesize_wrong_replay_shape_is_one_line_error(opt, gold, tmp_path):
    from engine.n2ldiff_synthesis import run
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(gold / "normal.png", inp / "a.png")
    np.save(tmp_path / "noise.npy", np.zeros((100, 2, 3, 64, 96), np.float32))
    with pytest.raises(OptionError) as e:
        run(opt, _synth_args(tmp_path, input=str(inp), model_path=str(gold / "weights.ckpt"),
                             replay_noise=str(tmp_path / "noise.npy")))
    msg = str(e.value)
    assert "\n" not in msg and "(100, 2, 3, 64, 96)" in msg and "(100, 1, 3, 64, 96)" in msg


def test_synthesize_pads_seeds_and_crops_back(opt, gold, tmp_path):
    from engine.n2ldiff_synthesis import run
    inp = tmp_path / "in"
    inp.mkdir()
    img = np.asarray(Image.open(gold / "normal.png"))
    Image.fromarray(img[:40, :50]).save(inp / "a.png")  # pads to 64x64
    Image.fromarray(img[:40, :50]).save(inp / "b.png")
    common = dict(input=str(inp), model_path=str(gold / "weights.ckpt"), steps=3)
    run(opt, _synth_args(tmp_path, out=str(tmp_path / "o1"), **common))
    run(opt, _synth_args(tmp_path, out=str(tmp_path / "o2"), **common))
    run(opt, _synth_args(tmp_path, out=str(tmp_path / "o3"), seed=5, **common))
    read = lambda d, n: np.asarray(Image.open(tmp_path / d / n))  # noqa: E731
    assert read("o1", "a.png").shape == (40, 50, 3)
    assert np.array_equal(read("o1", "a.png"), read("o2", "a.png"))      # same seed, same output
    assert not np.array_equal(read("o1", "a.png"), read("o1", "b.png"))  # seeded per image index
    assert not np.array_equal(read("o1", "a.png"), read("o3", "a.png"))  # another seed


# -- training ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loss_model(gold, vgg16):
    """Function official_compat -> N2LDiffModel with the golden weights (built once per mode)."""
    cache = {}

    def get(official: bool):
        if official not in cache:
            o = load_options(gold / "config.yaml", [f"train.n2ldiff.official_compat={str(official).lower()}",
                                                    f"path.vgg16_features={vgg16}",
                                                    f"path.pretrain_model_G={gold / 'weights.ckpt'}"], is_train=True)
            cache[official] = N2LDiffModel(o, torch.device("cpu"))
        return cache[official]
    return get


def _loss_batch(G):
    lr, hr = G("img_lr"), G("img_hr")
    return torch.cat([lr, lr.flip(-1)]), torch.cat([hr, hr.flip(-1)]), torch.tensor([5, 83]), G("loss_noise")


@pytest.mark.parametrize("branch", ["pred", "ref"])
def test_official_compat_loss_terms(gold, G, loss_model, branch):
    g = json.loads((gold / "golden.json").read_text())["loss"][branch]
    m = loss_model(True)
    assert not m.train_encoder and m.center_gt_prob == 0.5
    lr, hr, t, eps = _loss_batch(G)
    with torch.no_grad():
        terms = m.loss_terms(lr, hr, t, eps, torch.tensor([branch == "ref"] * 2))
    assert maxdiff(terms["center"], G("loss_center_pred")) < TOL
    for k in ("x_t", "eps_pred", "lpips_in_pred", "lpips_in_target"):
        assert maxdiff(terms[k], G(f"loss_{branch}_{k}")) < TOL, k
    assert abs(float(terms["smooth_l1"]) - g["smooth_l1"]) < 1e-5
    assert abs(float(terms["lpips"]) - g["lpips_vgg_mean"]) < 1e-5
    assert abs(float(terms["loss"]) - g["loss_total"]) < 1e-5


def test_default_loss_fixes_the_double_shift(gold, G, loss_model):
    g = json.loads((gold / "golden.json").read_text())["loss"]["pred"]
    m = loss_model(False)
    assert m.train_encoder and m.center_gt_prob == 0.0
    lr, hr, t, eps = _loss_batch(G)
    with torch.no_grad():
        terms = m.loss_terms(lr, hr, t, eps)
    # SmoothL1: the official value (its two shifts cancel in the difference); LPIPS target: the image of the true x_t
    assert abs(float(terms["smooth_l1"]) - g["smooth_l1"]) < 1e-5
    assert maxdiff(terms["lpips_in_target"], (G("loss_pred_x_t").clamp(-1, 1) + 1) / 2) < TOL
    assert maxdiff(terms["lpips_in_target"], G("loss_pred_lpips_in_target")) > 0.1


def test_lion_step():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.5, -0.1, 0.0])
    opt.step()  # m = 0: update = sign(0.1 g); p = p (1 - 0.05) - 0.1 sign
    assert torch.allclose(p.detach(), torch.tensor([0.95 - 0.1, -1.9 + 0.1, 2.85]))
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.005, -0.001, 0.0]))


@pytest.mark.slow
def test_tiny_training_loss_falls(vgg16):
    opt = load_options(ROOT / "confs/N2LDiff/demo_tiny.yml",
                       [f"path.vgg16_features={vgg16}", "network_G.n2ldiff.dim_mults=[1,2]",
                        "train.lr_G=1e-3"], is_train=True)
    torch.manual_seed(0)
    m = N2LDiffModel(opt, torch.device("cpu"))
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    normal = torch.stack([x, y, 0.5 * (x + y)])[None].repeat(2, 1, 1, 1)
    batch = {"LQ": normal, "GT": 0.15 * normal}
    probe = (torch.tensor([10, 60]), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))

    def probe_loss():
        with torch.no_grad():
            return float(m.loss_terms(batch["LQ"], batch["GT"], *probe)["loss"])

    before = probe_loss()
    for _ in range(15):
        m.optimize(batch)
    after = probe_loss()
    assert after < 0.8 * before, (before, after)


# -- data and engine wiring --------------------------------------------------------------------------------------
def test_swap_roles_makes_the_normal_image_the_input(tmp_path):
    import data  # noqa: F401  (registers the datasets)
    from data.image_io import write_rgb
    from data.loader import create_dataset
    rng = np.random.default_rng(0)
    for root, name_low, name_high in ((tmp_path / "v1", "1.png", "1.png"), (tmp_path / "v2", "low00007.png",
                                                                           "normal00007.png")):
        write_rgb(root / "low" / name_low, rng.integers(0, 40, (8, 8, 3), dtype=np.uint8))
        write_rgb(root / "high" / name_high, rng.integers(100, 255, (8, 8, 3), dtype=np.uint8))
    ds = create_dataset({"dataset": "HighLowFolders", "roots": [str(tmp_path / "v1"), str(tmp_path / "v2")],
                         "swap_roles": True}, "val")
    assert len(ds) == 2
    for item in ds:
        assert "high" in item["LQ_path"] and "low" in item["GT_path"]
        assert item["LQ"].min() >= 100 / 255 and item["GT"].max() < 40 / 255


def test_enhance_protocol_through_the_engine(opt, gold):
    from engine.inference import Enhancer
    o = load_options(gold / "config.yaml", ["network_G.n2ldiff.sample_steps=3"])
    model, _ = N2LDiffModel.build_network(o, str(gold / "weights.ckpt"))
    assert model.pad_multiple == 32 and model.aux_input is None
    img = np.asarray(Image.open(gold / "normal.png"))[:40, :50]
    enh = Enhancer(model, o, device="cpu")
    a, b = enh(img), enh(img)
    assert a.shape == (40, 50, 3) and np.array_equal(a, b)


@pytest.mark.slow
def test_train_py_path_end_to_end(tmp_path):
    """engine.trainer.train on the demo data: steps, validation through the enhance path, checkpoints that reload."""
    from engine.trainer import train
    opt = load_options(ROOT / "confs/N2LDiff/demo_tiny.yml",
                       [f"path.experiments_root={tmp_path}", "train.niter=3", "train.val_freq=3",
                        "logger.save_checkpoint_freq=3", "train.n2ldiff.loss_type=l1", "datasets.train.batch_size=2",
                        "network_G.n2ldiff.sample_steps=2", "val.max_images=1", "use_tb_logger=false",
                        "train.ema_decay=0.9"], is_train=True)
    hist = train(opt, argv=["test"])
    assert [s for s, _ in hist["val"]] == [3] and np.isfinite(hist["val"][0][1]["psnr"])
    run = tmp_path / "demo_tiny_N2LDiff"
    for f in ("3_G.pth", "3_G_ema.pth"):
        net, _ = N2LDiffModel.build_network(opt, str(run / "models" / f))  # official layout, strict
        assert "model.betas" in net.state_dict() and "encoder.final_conv.1.weight_g" in net.state_dict()
