"""N2LDiff trains step by step like the official Lightning module (official_compat).

The golden (tests/golden_training/n2ldiff_steps/golden.pt, written by bench/golden_training_n2ldiff.py) holds 10
steps of the official LitDiffusion.training_step stepped by a Lightning 1.9 Trainer (lion-pytorch Lion lr 4e-4,
gradient clipping at 0.5 so that it acts) at a small width, on recorded batches of real LOL-v1 crops: the official config as run, its
initial weights in our layout, the timesteps, noise and centre choices it drew, per step the loss, its LPIPS and
SmoothL1 terms and the pre-clip gradient norm, and the final denoiser weights. Our N2LDiffModel, built from that
config by our options layer with train.n2ldiff.official_compat, replays the draws through its ``draw`` seam.
Measured: losses and their terms within 1.4e-7 relative, gradient norms 1.1e-6, step-1 gradients 1.6e-5 per
tensor, weights after 10 steps bit-identical (on the machine that wrote the golden).

Lion updates by the sign of a gradient average, so convolution kernels that round differently (another CPU's
instruction set) make the trajectories part after a few steps: with oneDNN limited to AVX2 on the golden's machine
the loss is 1.9e-7 / 2.9e-6 apart at steps 1 / 2, then 6e-5 at step 3 and up to 1.6e-3 later (the pre-clip
gradient norm 8e-4 already at step 2). The losses of steps 1 and 2 and step 1's gradients are therefore checked
everywhere; the later steps and the final weights only where step 2 agrees to 1e-6, i.e. where
the kernels round as the golden's did (elsewhere those tests skip and say so).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models.losses.vgg import VGG16_ENV
from models.methods.n2ldiff_model import N2LDiffModel
from models.networks.n2ldiff.layers import Mish, WNConv2d, set_official_numerics
from options.options import load_options

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests/golden_training/n2ldiff_steps/golden.pt"
TOL = 1e-4
CHECKED_EVERYWHERE = 2   # steps compared on any CPU (see the module docstring)
SAME_KERNELS = 1e-6      # step-2 loss difference below which this CPU rounds as the golden's machine did


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} absent: run bench/golden_training_n2ldiff.py")
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def vgg16(request):
    env = os.environ.get(VGG16_ENV)
    p = Path(env) if env else request.getfixturevalue("shared_dir") / "weights" / "vgg16_features.pth"
    if not p.is_file():
        pytest.skip(f"{p} not present (the LPIPS-VGG trunk; ${VGG16_ENV} may name it)")
    return str(p)


def _model(g, vgg16, tmp, official=True):
    cfg = tmp / "config.yaml"
    cfg.write_text(g["config"])
    opt = load_options(cfg, [f"train.n2ldiff.official_compat={str(official).lower()}",
                             f"path.vgg16_features={vgg16}"], is_train=True)
    model = N2LDiffModel(opt, torch.device("cpu"))
    model.generator.load_state_dict(g["init"], strict=True)
    return model


def _batch(g, i):
    return {"LQ": g["normal"][i].float().div(255), "GT": g["low"][i].float().div(255)}


def _replayed(g, model):
    """Makes `model.draw` return the official draws of step 1, 2, ... in turn."""
    step = iter(range(g["meta"]["steps"]))

    def draw(img_hr):
        i = next(step)
        return g["t"][i], g["noise"][i].clone(), g["ref"][i].expand(img_hr.shape[0]).clone()
    model.draw = draw


def _run(g, model):
    """Our steps on the golden batches and draws: per-step logs, the step-1 gradients."""
    _replayed(g, model)
    logs, grads1 = [], None
    for i in range(g["meta"]["steps"]):
        logs.append(model.optimize(_batch(g, i)))
        if grads1 is None:
            grads1 = {n: p.grad.detach().clone() for n, p in model.generator.named_parameters() if p.grad is not None}
    return {"model": model, "logs": logs, "grads1": grads1,
            **{k: torch.tensor([lg[k] for lg in logs], dtype=torch.float64)
               for k in ("loss", "lpips", "smooth_l1", "grad_norm")}}


@pytest.fixture(scope="module")
def replay(golden, vgg16, tmp_path_factory):
    return _run(golden, _model(golden, vgg16, tmp_path_factory.mktemp("n2ldiff_steps")))


def _same_kernels(golden, replay) -> bool:
    i = CHECKED_EVERYWHERE - 1
    return abs(replay["loss"][i] / golden["loss"][i] - 1).item() < SAME_KERNELS


def _require_same_kernels(golden, replay):
    if not _same_kernels(golden, replay):
        pytest.skip("this CPU's kernels round differently from the golden's (step-2 loss "
                    f"{abs(replay['loss'][1] / golden['loss'][1] - 1).item():.1e} apart); Lion amplifies that, so "
                    f"only steps 1-{CHECKED_EVERYWHERE} are compared here")


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_setup_matches_the_official_run(golden, replay):
    m = replay["model"]
    assert m.official and not m.train_encoder and m.loss_type == "combined"
    assert m.grad_clip == 0.5 and (golden["grad_norm"] > 0.5).sum() >= 5   # the run's clip value, and it acted
    group = m.optimizers["G"].param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"]) == (4e-4, (0.9, 0.99), 0.0)
    # only the denoiser is optimised, as the official configure_optimizers(self.model.parameters())
    assert {id(p) for p in group["params"]} == {id(p) for p in m.generator.model.parameters()}
    assert not any(lg["skipped"] for lg in replay["logs"])
    assert all(x.official_numerics for x in m.generator.modules() if isinstance(x, (Mish, WNConv2d)))


@pytest.mark.parametrize("term", ["loss", "lpips", "smooth_l1", "grad_norm"])
def test_loss_terms_per_step(golden, replay, term):
    ours, off = replay[term], golden[term]
    rel = (ours - off).abs() / off.abs()
    # the step-2 gradient norm comes from weights one Lion step apart: on other kernels only step 1's is comparable
    assert rel[:1 if term == "grad_norm" else CHECKED_EVERYWHERE].max() < TOL, rel
    _require_same_kernels(golden, replay)
    assert rel.max() < TOL, rel


def test_step1_gradients(golden, replay):
    """The same parameters get a gradient, each within 1e-4 (relative norm of the difference) of the official; 1e-3
    where the kernels round differently (tensors with gradients of 1e-6 then reach 1.1e-4)."""
    assert sorted(replay["grads1"]) == sorted(golden["grads1"])
    tol = TOL if _same_kernels(golden, replay) else 10 * TOL
    for k, v in golden["grads1"].items():
        assert _rel(replay["grads1"][k], v) < tol, k


def test_weights_after_10_steps(golden, replay):
    """Every denoiser tensor ends where the official one does (the encoder is never optimised: unchanged)."""
    _require_same_kernels(golden, replay)
    state = replay["model"].generator.state_dict()
    moved = 0
    for k, v in golden["final"].items():
        assert _rel(state[k], v) < 1e-5, k
        if not torch.equal(v, golden["init"][k]):
            moved += 1
            assert (state[k] - v).norm() < 1e-3 * (v - golden["init"][k]).norm(), k
    assert moved == len(golden["final"])
    for k, v in golden["init"].items():
        if k.startswith("encoder."):
            assert torch.equal(state[k], v), k


def test_our_own_operations_drift_apart(golden, vgg16, tmp_path):
    """Why official_compat also uses the official operations for weight norm and Mish: with ours (the same
    functions, other float32 rounding; step-1 gradients up to 3.3e-4 apart) Lion's sign update amplifies the
    rounding and the losses leave the tolerance within 10 steps (measured: 1.1e-4 at step 3, up to 8.7e-4)."""
    model = _model(golden, vgg16, tmp_path)
    set_official_numerics(model.generator, False)
    ours = _run(golden, model)
    rel = (ours["loss"] - golden["loss"]).abs() / golden["loss"].abs()
    assert rel.max() > TOL, rel


def test_the_default_loss_is_not_the_official_one(golden, vgg16, tmp_path):
    """Without official_compat (its in-place double centre shift fixed, the centre always the encoder's) the first
    loss already differs from the official one far beyond the tolerance."""
    g = golden
    model = _model(g, vgg16, tmp_path, official=False)
    with torch.no_grad():
        b = _batch(g, 0)
        terms = model.loss_terms(b["LQ"], b["GT"], g["t"][0], g["noise"][0].clone())
    assert abs(terms["loss"].item() / g["loss"][0].item() - 1) > 100 * TOL
