"""LLFlow: golden equivalence with the official code, official key set, invertibility, log-dets, checkpoints."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.image_io import read_rgb
from tests.flow_checks import assert_invertible, assert_logdet_matches_jacobian, perturb_
from models.build import build_generator
from models.checkpoint import read_state_dict
from models.networks.flow.couplings.llflow import CondAffineSeparatedAndCond
from models.networks.flow.invconv import InvertibleConv1x1
from models.networks.flow.ops import ActNorm2d, SqueezeLayer, squeeze2d, unsqueeze2d
from models.networks.flow.step import FlowStep
from models.conversion.flows import never_run_shapes, official_state_dict
from options.options import load_options
from engine.inference import Enhancer
from utils.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def _load(golden):
    g = golden("LLFlow")
    opt = load_options(g / "config.yml")
    model, _ = build_generator(opt, str(g / "weights.pth"))
    return g, opt, model.eval()


def npy(g, name):
    return torch.from_numpy(np.load(g / name))


def test_golden_features_reverse_and_nll(golden):
    g, opt, model = _load(golden)
    lq, gt = npy(g, "cond_input.npy"), npy(g, "gt_input.npy")
    with torch.inference_mode():
        cond = model.RRDB(lq)
        for name in ("fea_up0", "fea_up1", "fea_up2", "fea_up4", "last_lr_fea", "color_map", "block_0"):
            assert (cond[name] - npy(g, f"feat_{name}.npy")).abs().max() < 1e-4, name
        assert (model.prior_mean(cond) - npy(g, "reverse_z_in.npy")).abs().max() < 1e-4
        out = model.reverse(lq)
        assert (out - npy(g, "enhanced.npy")).abs().max() < 1e-4
        ref = __import__("json").loads((g / "golden.json").read_text())["forward"]
        for branch, from_gt in (("nonoise_meancolormap", False), ("nonoise_meangt", True)):
            r = model.nll(gt, lq, prior_from_gt=from_gt)
            assert (r["z"] - npy(g, f"z_{branch}_level0.npy")).abs().max() < 1e-4
            assert r["logdet"].item() == pytest.approx(ref[branch]["logdet"][0], rel=1e-5)
            assert r["nll"].item() == pytest.approx(ref[branch]["nll"][0], abs=1e-4)


def test_preprocessing_reproduces_cond_input(golden):
    g, opt, model = _load(golden)
    enh = Enhancer(model, opt, device="cpu")
    lq, aux = enh.prepare(read_rgb(g / "low.png"))
    assert aux is None
    assert (lq - npy(g, "cond_input.npy")).abs().max() < 1e-6


def test_missing_log_low_is_an_error_not_a_silent_linear_input(golden):
    import yaml
    from utils.errors import OptionError
    g = golden("LLFlow")
    raw = yaml.safe_load((g / "config.yml").read_text())
    for phase in raw["datasets"].values():
        phase.pop("log_low")
    opt = load_options(raw=raw)
    model, _ = build_generator(opt)
    with pytest.raises(OptionError, match="log_low"):
        Enhancer(model, opt, device="cpu")


def test_heat_samples_around_the_colour_map(golden):
    g, opt, model = _load(golden)
    lq = npy(g, "cond_input.npy")
    with torch.inference_mode():
        a = model.reverse(lq, heat=0.0)
        torch.manual_seed(0)
        b = model.reverse(lq, heat=0.5)
    # the official code ignored heat; here heat 0 is the official output and heat > 0 samples
    assert (a - npy(g, "enhanced.npy")).abs().max() < 1e-4
    assert (a - b).abs().mean() > 1e-3


@pytest.mark.parametrize("conf", ["LOL-pc", "LOLv2-pc"])
def test_official_configs_give_official_keys(official_keys, conf):
    """What we build plus the declared never-run modules is exactly the official layout, and the export writes it."""
    model, _ = build_generator(load_options(ROOT / f"confs/LLFlow/{conf}.yml"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    never = {k: tuple(v) for k, v in never_run_shapes(model).items()}
    assert not set(ours) & set(never)
    assert {**ours, **never} == official_keys("LLFlow")
    assert {k: tuple(v.shape) for k, v in official_state_dict(model).items()} == official_keys("LLFlow")
    assert sum(v.numel() for v in never_run_shapes(model).values()) == 1_182_086     # spec §6.5


def test_small_net_parameter_count():
    model, _ = build_generator(load_options(ROOT / "confs/LLFlow/LOL_smallNet.yml"))
    sd = official_state_dict(model)
    assert len(sd) == 412 and sum(v.numel() for v in sd.values()) == 5_429_849  # spec §6.4/§6.5
    assert sum(v.numel() for v in never_run_shapes(model).values()) == 462_214


@pytest.mark.parametrize("layer", ["actnorm", "invconv", "squeeze", "coupling", "step"])
def test_layers_invert_and_logdet_matches_jacobian(layer):
    torch.manual_seed(0)
    kw = {"hidden_channels": 8}
    z, ft = torch.randn(2, 12, 4, 4), torch.randn(2, 5, 4, 4)
    mod = {"actnorm": lambda: ActNorm2d(12), "invconv": lambda: InvertibleConv1x1(12),
           "squeeze": lambda: SqueezeLayer(2),
           "coupling": lambda: CondAffineSeparatedAndCond(12, 5, **kw),
           "step": lambda: FlowStep(12, 5, "CondAffineSeparatedAndCond", kw)}[layer]()
    perturb_(mod).eval()
    if layer in ("actnorm", "invconv", "squeeze"):
        wrapped = lambda x, ld, ft=None, reverse=False: mod(x, ld, reverse=reverse)  # noqa: E731
        assert_invertible(wrapped, z)
        mod.double()
        assert_logdet_matches_jacobian(lambda x, ld, reverse=False: mod(x, ld, reverse=reverse), z)
    else:
        assert_invertible(mod, z, ft)
        assert_logdet_matches_jacobian(mod, z, ft)


def test_squeeze_channel_order():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    y = squeeze2d(x, 2)
    # output channel c*4 + 2i + j holds x[c, 2h+i, 2w+j]
    assert y[0, 4 * 1 + 2 * 1 + 0, 1, 0] == x[0, 1, 3, 0]
    assert torch.equal(unsqueeze2d(y, 2), x)


def test_whole_flow_inverts(golden):
    g, opt, model = _load(golden)
    lq, gt = npy(g, "cond_input.npy"), npy(g, "gt_input.npy")
    with torch.inference_mode():
        r = model.nll(gt, lq)
        back = model.reverse(lq, z=r["z"])
    assert (back - gt).abs().max() < 1e-4


def test_actnorm_data_initialises_once():
    a = ActNorm2d(3).train()
    x = torch.randn(4, 3, 8, 8) * 3 + 2
    y, _ = a(x, torch.zeros(4))
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5 and (y.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    before = a.bias.detach().clone()
    a(x * 5, torch.zeros(4))
    assert torch.equal(a.bias.detach(), before)


def test_checkpoint_loading_variants(golden, tmp_path):
    g, opt, model = _load(golden)
    sd = read_state_dict(g / "weights.pth")
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pth")
    m2, _ = build_generator(opt, str(tmp_path / "dp.pth"))
    assert all(torch.equal(a, b) for a, b in zip(m2.state_dict().values(), model.state_dict().values()))
    torch.save({"params": sd}, tmp_path / "ours.pth")
    build_generator(opt, str(tmp_path / "ours.pth"))
    bad = dict(sd)
    bad.pop(next(iter(bad)))
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing"):
        build_generator(opt, str(tmp_path / "missing.pth"))
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        read_state_dict(tmp_path / "corrupt.pth")
    # a pickled object that needs code execution is refused by weights_only loading
    torch.save({"x": torch.nn.Linear(1, 1)}, tmp_path / "module.pth")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "module.pth")


def test_odd_sizes_are_padded_and_cropped_back(golden):
    g, opt, model = _load(golden)
    low = read_rgb(g / "low.png")[:61, :90]
    out = Enhancer(model, opt, device="cpu")(low)
    assert out.shape == (61, 90, 3) and np.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("script,ref", [("test.py", "enhanced_plain.png"), ("test_with_tricks.py", "enhanced.png")])
def test_cli_writes_the_official_images(golden, tmp_path, script, ref):
    g = golden("LLFlow")
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    cv2.imwrite(str(tmp_path / "in/img.png"), cv2.imread(str(g / "low.png")))
    cv2.imwrite(str(tmp_path / "gt/img.png"), cv2.imread(str(g / "gt.png")))
    cmd = [sys.executable, str(ROOT / script), "--opt", str(g / "config.yml"), "--model_path", str(g / "weights.pth"),
           "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    if script == "test_with_tricks.py":
        cmd += ["--gt", str(tmp_path / "gt")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ours = read_rgb(tmp_path / "out/img.png").astype(int)
    theirs = read_rgb(g / ref).astype(int)
    assert np.abs(ours - theirs).max() <= 1
    if script == "test_with_tricks.py":
        assert (tmp_path / "out/metrics.csv").read_text().startswith("# protocol: PSNR")
        # NHWC off as well: both layouts stay within one grey level of the official image after truncation
        nchw = [str(tmp_path / "nchw") if c == str(tmp_path / "out") else c for c in cmd]
        r = subprocess.run(nchw + ["--set", "inference.channels_last=false"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        diff = np.abs(read_rgb(tmp_path / "nchw/img.png").astype(int) - theirs)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.slow
def test_cli_reports_bad_input_in_one_line(golden, tmp_path):
    g = golden("LLFlow")
    (tmp_path / "in").mkdir()
    (tmp_path / "in/broken.png").write_bytes(b"\x89PNG garbage")
    r = subprocess.run([sys.executable, str(ROOT / "test.py"), "--opt", str(g / "config.yml"), "--model_path",
                        str(g / "weights.pth"), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "broken.png" in last
