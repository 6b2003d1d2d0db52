"""DRBN stage 1 trains step by step like the authors' trainer (DRBL-stage1/src/trainer.py).

The golden (tests/golden_training/drbn_stage1/golden.pt, written by bench/golden_training_drbn.py from the official
code) holds 20 steps of the official trainer from our seed-0 DRBN at the official sizes, on recorded batches of
real LOL-v1 crops: the three -SSIM terms per step, the learning rate per step, skipped steps, the gradient of every
parameter at step 1 and the weights after step 20. Our DRBNModel replays the same batches from the same weights.
The official StepLR(lr_decay=2 epochs of 5 batches) is stepped at the start of each epoch, so it decays *in*
epoch 2 (after 5 iterations) and epoch 4 (after 15): train.lr_steps [5, 15].
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.methods.drbn_model import DRBNModel
from options.options import load_options

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests/golden_training/drbn_stage1/golden.pt"
MILESTONES = "[5,15]"


def _sample_index(numel, i, full_below):
    import numpy as np
    if numel <= full_below:
        return torch.arange(numel)
    rng = np.random.default_rng([2026, i])   # the indices bench/golden_training_drbn.py stored values at
    return torch.from_numpy(np.sort(rng.choice(numel, numel // 8, replace=False)).astype(np.int64))


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


def _model(g, milestones=MILESTONES):
    m = g["meta"]
    opt = load_options(ROOT / m["config"], [f"train.lr_G={m['lr']}", f"train.lr_steps={milestones}",
                                            "train.lr_gamma=0.5", f"train.niter={m['steps']}"], is_train=True)
    torch.manual_seed(m["seed"])
    model = DRBNModel(opt, torch.device("cpu"))
    return model


@pytest.fixture(scope="module")
def replay(golden):
    """Our 20 steps: lr used, the three -SSIM terms, skipped flags, step-1 gradients, final weights."""
    g = golden
    model = _model(g)
    net = model.generator
    keys = list(net.state_dict())
    assert keys == g["keys"]
    idx = {k: _sample_index(v.numel(), i, g["meta"]["full_below"]) for i, (k, v) in enumerate(net.state_dict().items())}
    init = {k: v.reshape(-1)[idx[k]] for k, v in net.state_dict().items()}
    lrs, terms, skipped, grads1 = [], [], [], None
    for i in range(g["meta"]["steps"]):
        lrs.append(model.optimizers["G"].param_groups[0]["lr"])
        logs = model.optimize({"LQ": g["low"][i].float() / 255.0, "GT": g["high"][i].float() / 255.0})
        terms.append([-logs["ssim_s1"], -logs["ssim_s2"], -logs["ssim_s4"]])
        skipped.append(logs["skipped"])
        if grads1 is None:
            grads1 = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
    final = net.state_dict()
    return {"init": init, "idx": idx, "lr": lrs, "terms": torch.tensor(terms, dtype=torch.float64),
            "skipped": skipped, "grads1": grads1, "final": final}


def test_same_start(golden, replay):
    for k, v in golden["init"].items():
        assert torch.equal(replay["init"][k], v), k


def test_learning_rates_and_updates_per_step(golden, replay):
    assert replay["lr"] == golden["lr"].tolist()
    assert [not s for s in replay["skipped"]] == golden["stepped"].tolist()


def test_losses_per_scale(golden, replay):
    ours, off = replay["terms"], golden["terms"]
    rel = ((ours - off).abs() / off.abs()).max(dim=1).values
    assert rel[:10].max() < 1e-4, rel
    assert rel.max() < 1e-3, rel
    assert off.sum(1)[-1] < off.sum(1)[0] - 1.0      # the run learnt: the comparison is not of idle steps


def test_step1_gradients(golden, replay):
    assert sorted(replay["grads1"]) == golden["trained"]
    for k in golden["trained"]:
        g = replay["grads1"][k]
        assert abs(g.double().norm().item() / golden["grads1_norm"][k].item() - 1) < 1e-4, k
        assert _rel(g.reshape(-1)[replay["idx"][k]], golden["grads1"][k]) < 1e-4, k


def test_weights_after_20_steps(golden, replay):
    """Within float rounding grown over 20 Adam steps: our own run from weights scaled by (1 + 2e-6) ends up to
    1.4e-2 (relative, per tensor) away from the unperturbed one (docs/training-equivalence-drbn-n2ldiff.md); the
    official run ends 7.4e-3 away. Each tensor's difference must also be small against how far it moved."""
    for k, v in golden["final"].items():
        ours, off, init = (x.double() for x in (replay["final"][k].reshape(-1)[replay["idx"][k]], v, golden["init"][k]))
        assert _rel(ours, off) < 2e-2, k
        if k in golden["trained"]:
            assert (ours - off).norm() < 0.2 * (off - init).norm(), k


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_a_shifted_milestone_is_caught(golden):
    """The lr comparison fails if the milestones sit where the YAML of 'lr_decay epochs' would naively put them."""
    model = _model(golden, "[10,20]")
    lrs = []
    for _ in range(golden["meta"]["steps"]):
        lrs.append(model.optimizers["G"].param_groups[0]["lr"])
        model.schedulers["G"].step()
    assert lrs != golden["lr"].tolist()


def test_a_changed_adam_beta2_is_caught(golden):
    """Adam's beta2 0.99 instead of the official 0.999 leaves the first steps within rounding but moves the -SSIM
    terms past the 1e-4 tolerance of test_losses_per_scale by step 4 (measured 1.5e-4)."""
    m = golden["meta"]
    opt = load_options(ROOT / m["config"], [f"train.lr_G={m['lr']}", f"train.lr_steps={MILESTONES}",
                                            "train.beta2=0.99"], is_train=True)
    torch.manual_seed(m["seed"])
    model = DRBNModel(opt, torch.device("cpu"))
    worst = 0.0
    for i in range(4):
        logs = model.optimize({"LQ": golden["low"][i].float() / 255.0, "GT": golden["high"][i].float() / 255.0})
        ours = torch.tensor([-logs["ssim_s1"], -logs["ssim_s2"], -logs["ssim_s4"]], dtype=torch.float64)
        worst = max(worst, ((ours - golden["terms"][i]).abs() / golden["terms"][i].abs()).max().item())
    assert worst > 1e-4, worst
