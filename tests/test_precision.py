"""Reduced precision: bf16 inference stays within 45 dB PSNR of fp32 for every flow family and DRBN (golden weights)
and a trained demo model, the float32 parts stay float32, bf16 training matches fp32 training (and DRBN/N2LDiff
inherit it), fp16 needs CUDA, and the dtype is part of the protocol line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.demo import ensure_demo_data
from data.image_io import read_rgb, write_rgb
from engine.inference import Enhancer
from engine.trainer import train
from models.build import build_generator, build_network
from models.networks.flow.invconv import InvertibleConv1x1
from models.methods.flow_model import FlowModel
from models.precision import cast_network, dtype_name
from options.options import load_options
from utils.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow"]
SMALL = ["datasets.train.GT_size=32", "datasets.train.batch_size=4", "network_G.nf=8", "network_G.nb=1",
         "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]", "network_G.flow.conditionInFeaDim=16",
         "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16", "use_tb_logger=false",
         "val.save_images=false", "train.warmup_iter=2", "train.lr_G=2e-3", "path.resume_state=null"]


def psnr_between(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (peak 1) between two outputs clipped to [0, 1], as they are written."""
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _outputs(opt, weights, low, casts=("weights",)):
    res = {}
    for dtype, cast in [("fp32", "weights")] + [("bf16", c) for c in casts]:
        model, _ = build_network(opt, weights)
        res[(dtype, cast)] = Enhancer(model, opt, device="cpu", dtype=dtype, cast=cast)(low)
    return res


@pytest.mark.parametrize("family", FAMILIES + ["DRBN"])
def test_bf16_inference_is_faithful_on_the_golden_weights(golden, shared_dir, family):
    g = golden(family)
    if family == "DRBN":          # the authors' stage-1 weights (test material in ../shared, never in the repo)
        conf, weights = ROOT / "confs/DRBN/DRBN_stage1.yml", shared_dir / "weights/drbn/model_s1.pt"
        if not weights.is_file():
            pytest.skip(f"{weights} not present")
    else:
        conf, weights = g / "config.yml", g / "weights.pth"
    outs = _outputs(load_options(conf), str(weights), read_rgb(g / "low.png"), casts=("weights", "autocast"))
    ref = outs[("fp32", "weights")]
    assert np.isfinite(ref).all()
    for cast in ("weights", "autocast"):
        out = outs[("bf16", cast)]
        assert not np.array_equal(out, ref)           # bf16 really ran
        assert psnr_between(out, ref) >= 45.0, (cast, psnr_between(out, ref))


def test_cast_keeps_the_float32_parts_unrounded(golden):
    g = golden("LLFlow")
    model, _ = build_generator(load_options(g / "config.yml"), str(g / "weights.pth"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cast_network(model, torch.bfloat16)
    fp32 = {k for k, v in model.state_dict().items() if v.dtype == torch.float32}
    invconv = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, InvertibleConv1x1)}
    step_actnorm = {k for k in before if ".actnorm." in k and ".fAffine." not in k and ".fFeatures." not in k}
    assert invconv and step_actnorm and invconv | step_actnorm <= fp32
    assert {k for k in fp32 if "fine_tune_color_map" not in k} == invconv | step_actnorm
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in fp32)          # never rounded
    assert model.state_dict()["RRDB.conv_first.weight"].dtype == torch.bfloat16


def test_fp16_needs_cuda():
    opt = load_options(ROOT / "confs/LLFlow/demo_tiny.yml", SMALL, is_train=True)
    model, _ = build_generator(opt)
    with pytest.raises(OptionError, match="fp16 needs a CUDA device"):
        Enhancer(model, opt, device="cpu", dtype="fp16")
    with pytest.raises(OptionError, match="train.amp_dtype: fp16 needs a CUDA device"):
        FlowModel(load_options(ROOT / "confs/LLFlow/demo_tiny.yml", SMALL + ["train.amp_dtype=fp16"], is_train=True),
                  torch.device("cpu"))
    with pytest.raises(OptionError, match="not a dtype"):
        Enhancer(model, dict(opt, inference=dict(opt["inference"], dtype="int8")), device="cpu")


@pytest.mark.slow
def test_cli_dtype_flag_and_protocol_line(golden, tmp_path):
    g = golden("ZMAR-SNFlow")
    write_rgb(tmp_path / "in/img.png", read_rgb(g / "low.png"))
    write_rgb(tmp_path / "gt/img.png", read_rgb(g / "gt.png"))
    base = [sys.executable, str(ROOT / "test.py"), "--opt", str(g / "config.yml"), "--model_path",
            str(g / "weights.pth"), "--input", str(tmp_path / "in"), "--gt", str(tmp_path / "gt")]
    r = subprocess.run(base + ["--out", str(tmp_path / "bf16"), "--dtype", "bf16"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    first = (tmp_path / "bf16/metrics.csv").read_text().splitlines()[0]
    assert first.startswith("# protocol: PSNR uint8 RGB") and first.endswith("no self-ensemble; dtype bf16"), first
    golden_png = read_rgb(g / "enhanced.png").astype(int)
    assert np.abs(read_rgb(tmp_path / "bf16/img.png").astype(int) - golden_png).max() <= 2
    r = subprocess.run(base + ["--out", str(tmp_path / "fp16"), "--dtype", "fp16", "--device", "cpu"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == \
        "error: --dtype / inference.dtype: fp16 needs a CUDA device (on the CPU use bf16)", r.stderr


@pytest.mark.slow
def test_bf16_training_matches_fp32_and_bf16_inference_of_the_trained_model(tmp_path):
    """A short demo run in bf16 autocast reaches the fp32 run's best validation PSNR (what best_psnr_G.pth selects)
    within 0.3 dB, and the trained fp32 model's bf16 inference stays within 45 dB of its fp32 output."""
    best = {}
    for dtype in ("fp32", "bf16"):
        opt = load_options(ROOT / "confs/LLFlow/demo_tiny.yml",
                           SMALL + [f"path.experiments_root={tmp_path / dtype}", "train.niter=100", "train.val_freq=25",
                                    "train.lr_G=1e-3", "logger.save_checkpoint_freq=100"]
                           + ([] if dtype == "fp32" else ["train.amp_dtype=bf16"]), is_train=True)
        hist = train(opt, argv=["test"])
        assert np.isfinite([v for _, v in hist["loss"]]).all()
        assert all(v["protocol"].endswith("; dtype fp32") for _, v in hist["val"])   # validation runs fp32
        best[dtype] = max(v["psnr"] for _, v in hist["val"])
    assert abs(best["bf16"] - best["fp32"]) <= 0.3, best
    # the trained fp32 model on a full-size demo photo: fp32 vs bf16 inference
    weights = tmp_path / "fp32/demo_tiny_LLFlow/models/100_G.pth"
    low = read_rgb(sorted((ensure_demo_data() / "our485/low").glob("*.png"))[-1])   # a held-out photo
    outs = _outputs(opt, str(weights), low)
    assert psnr_between(outs[("bf16", "weights")], outs[("fp32", "weights")]) >= 45.0


@pytest.mark.slow
@pytest.mark.parametrize("conf", ["DRBN/demo_tiny.yml", "N2LDiff/demo_tiny.yml"])
def test_other_methods_inherit_bf16_training(shared_dir, conf):
    """train.amp_dtype comes from models/methods/base_model.py: DRBN and N2LDiff steps run under it (same loss as fp32 to
    bf16 accuracy, weights updated, no GradScaler for bf16)."""
    from models.build import model_class
    vgg = shared_dir / "weights/vgg16_features.pth"
    if not vgg.is_file():
        pytest.skip(f"{vgg} not present")
    sets = [f"path.vgg16_features={vgg}", "datasets.train.GT_size=32"]
    if conf.startswith("N2LDiff"):
        sets.append("network_G.n2ldiff.dim_mults=[1,2]")
    g = torch.Generator().manual_seed(0)
    batch = {"LQ": 0.2 * torch.rand(2, 3, 32, 32, generator=g), "GT": torch.rand(2, 3, 32, 32, generator=g)}
    losses = {}
    for dtype in ("fp32", "bf16"):
        opt = load_options(ROOT / "confs" / conf, sets + [f"train.amp_dtype={dtype}"], is_train=True)
        torch.manual_seed(0)
        model = model_class(opt.get("model"))(opt, torch.device("cpu"))
        assert model.amp_dtype == (torch.bfloat16 if dtype == "bf16" else torch.float32)
        assert not model.scaler.is_enabled()
        before = {k: v.clone() for k, v in model.net.state_dict().items()}
        torch.manual_seed(1)                        # the same timesteps and noise draws (N2LDiff)
        logs = model.optimize(batch)
        assert not logs["skipped"] and np.isfinite(logs["loss"])
        assert any(not torch.equal(v, before[k]) for k, v in model.net.state_dict().items())
        losses[dtype] = logs["loss"]
    assert losses["bf16"] != losses["fp32"]                                  # the step really ran in bf16
    assert abs(losses["bf16"] - losses["fp32"]) <= 0.05 * abs(losses["fp32"]), losses


def _this_cpu_auto() -> str:
    """What auto should say on this machine, read here from /proc/cpuinfo independently of utils.devices."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    if "amx_bf16" in text.split():
        return "dtype bf16 (auto: CPU has AMX (amx_bf16))"
    if "AuthenticAMD" in text and "avx512_bf16" in text.split():
        return "dtype bf16 (auto: AMD CPU with AVX512-BF16)"
    return "dtype fp32 (auto: CPU without AMX (no amx_bf16))"


def test_auto_dtype_follows_the_cpu_flags(tmp_path, monkeypatch):
    """auto: bf16 on a CPU whose flags list amx_bf16 or on an AMD CPU with avx512_bf16, fp32 on an Intel CPU with
    only avx512_bf16 (or none); the reason is in the protocol line."""
    import utils.devices
    opt = load_options(ROOT / "confs/LLFlow/demo_tiny.yml", SMALL, is_train=True)
    line = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16{}\n"
    for vendor, extra, want, reason in [
            ("GenuineIntel", "", torch.float32, "auto: CPU without AMX (no amx_bf16)"),
            ("GenuineIntel", " amx_tile amx_bf16", torch.bfloat16, "auto: CPU has AMX (amx_bf16)"),
            ("AuthenticAMD", "", torch.bfloat16, "auto: AMD CPU with AVX512-BF16")]:
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n" + line.format(extra))
        monkeypatch.setattr(utils.devices, "CPUINFO", str(tmp_path / "cpuinfo"))
        model, _ = build_generator(opt)
        enh = Enhancer(model, opt, device="cpu", dtype="auto")
        assert enh.dtype == want and enh.dtype_reason == reason
        assert enh.describe(0.0).endswith(f"; dtype {dtype_name(want)} ({reason})")
        assert next(enh.model.parameters()).dtype == want          # the weights were cast for bf16
    monkeypatch.setattr(utils.devices, "CPUINFO", str(tmp_path / "missing"))
    assert Enhancer(build_generator(opt)[0], opt, device="cpu", dtype="auto").dtype == torch.float32


def test_cli_dtype_auto_writes_choice_and_reason(golden, tmp_path):
    g = golden("ZMAR-SNFlow")
    write_rgb(tmp_path / "in/img.png", read_rgb(g / "low.png"))
    write_rgb(tmp_path / "gt/img.png", read_rgb(g / "gt.png"))
    r = subprocess.run([sys.executable, str(ROOT / "test.py"), "--opt", str(g / "config.yml"), "--model_path",
                        str(g / "weights.pth"), "--input", str(tmp_path / "in"), "--gt", str(tmp_path / "gt"),
                        "--out", str(tmp_path / "auto"), "--dtype", "auto", "--threads", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    want = _this_cpu_auto()
    first = (tmp_path / "auto/metrics.csv").read_text().splitlines()[0]
    assert first.startswith("# protocol: PSNR uint8 RGB") and first.endswith(f"no self-ensemble; {want}"), first
    assert f"INFO {want}" in r.stderr and "INFO CPU: 1 threads" in r.stderr, r.stderr[-2000:]


def test_cat_for_conv_keeps_the_values_and_the_narrow_dtype():
    """Under bf16 autocast the float32 flow state is cast before the concatenation (no widened copy of the bf16
    features); the convolution that reads it gives exactly what it gave on the float32 concatenation."""
    from models.precision import cat_for_conv
    g = torch.Generator().manual_seed(0)
    z, ft = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 6, 8, 8, generator=g).bfloat16()
    conv = torch.nn.Conv2d(10, 5, 3, padding=1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = cat_for_conv([z, ft])
        assert x.dtype == torch.bfloat16
        assert torch.equal(conv(x), conv(torch.cat([z, ft], 1)))
    assert torch.equal(cat_for_conv([z, ft.float()]), torch.cat([z, ft.float()], 1))    # float32 run: a plain cat
