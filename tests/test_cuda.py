"""CUDA-only checks (marker `cuda`; skipped without a CUDA device, run by bench/gpu_check.py's pytest stage):
CUDA output equals the CPU's, reduced precisions stay close to fp32, AMP training steps update the weights, and a
checkpoint written from CUDA weights reads back on the CPU."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.inference import Enhancer
from models.build import build_network, model_class
from options.options import load_options

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cuda
FAMILIES = ("LLFlow", "GLTG-AFlow", "ZMAR-SNFlow", "UPT-Flow", "DRBN")


def _demo(family, is_train=False, extra=()):
    opt = load_options(ROOT / "confs" / family / "demo_tiny.yml", list(extra), is_train=is_train)
    torch.manual_seed(0)
    net, _ = build_network(opt)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "inited"):
                m.inited = True
        for p in net.parameters():   # zero-initialised layers would hide most of the network from the comparison
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return opt, net.eval()


def _image(h=64, w=96):
    rng = np.random.default_rng(0)
    return (rng.random((h, w, 3)) * 80).astype(np.uint8)


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_fp32_equals_cpu(family):
    opt, net = _demo(family)
    img = _image()
    cpu = Enhancer(copy.deepcopy(net), opt, device="cpu", dtype="fp32", tile=0)(img)
    gpu = Enhancer(copy.deepcopy(net), opt, device="cuda", dtype="fp32", tile=0)(img)
    # cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32): a 10-bit mantissa
    assert np.abs(cpu - gpu).max() < 2e-2 * max(1.0, float(np.abs(cpu).max())), np.abs(cpu - gpu).max()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_reduced_precision_close_to_fp32(family, dtype):
    opt, net = _demo(family)
    img = _image()
    ref = Enhancer(copy.deepcopy(net), opt, device="cuda", dtype="fp32", tile=0)(img)
    out = Enhancer(copy.deepcopy(net), opt, device="cuda", dtype=dtype, tile=0)(img)
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() < 0.05, np.abs(out - ref).max()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_amp_training_steps_update_the_weights(family, amp):
    opt = load_options(ROOT / "confs" / family / "demo_tiny.yml", [f"train.amp_dtype={amp}"], is_train=True)
    torch.manual_seed(0)
    method = model_class(opt.get("model"))(opt, torch.device("cuda"))
    g = torch.Generator().manual_seed(0)
    in_ch = 6 if opt.get("concat_histeq") else 3
    batch = {"GT": torch.rand(2, 3, 32, 32, generator=g), "LQ": torch.rand(2, in_ch, 32, 32, generator=g)}
    kind = getattr(method.net, "aux_input", None)
    aux_ch = {"gltg_mask": 3, "zmar_mask": 1, "upt_zero_map": 1}.get(kind)
    if aux_ch:
        batch["AUX"] = (torch.rand(2, aux_ch, 32, 32, generator=g) > 0.5).float()
    method.setup(batch)
    before = {k: v.detach().clone() for k, v in method.net.state_dict().items()}
    key = method.progress_keys[0]
    losses = [method.optimize(batch)[key] for _ in range(4)]
    assert all(np.isfinite(losses)), losses
    after = method.net.state_dict()
    assert all(v.device.type == "cuda" for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in after), "no weight changed"


def test_cuda_checkpoint_reads_back_on_cpu(tmp_path):
    from models.checkpoint import read_state_dict, save_generator
    opt, net = _demo("LLFlow")
    net.cuda()
    save_generator(net, tmp_path / "g.pth")
    state = read_state_dict(tmp_path / "g.pth")
    assert all(v.device.type == "cpu" for v in state.values())
    ref = net.state_dict()
    assert all(torch.equal(state[k], ref[k].cpu()) for k in state)
