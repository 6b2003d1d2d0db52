"""Training follows the official LLFlow trainer step by step (goldens: bench/official_training_golden.py).

Official and ours start from the same weights and see the same batches (the official LoL_Dataset's crops of real
LOL-v1 pairs) for 40 steps with warm-up, all four milestones and the (official, inert) encoder delay inside them.
Checked: the gradient of every tensor at the first update (1e-4 relative per tensor), the loss (1e-4 relative for
the first 10 updates, 1e-3 up to step 40), the lr / weight decay / betas every parameter is updated with at every
step and the set of parameters that receive a gradient (exactly equal). The negative tests change one thing on our
side and check that the same comparison fails.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.training_replay import GOLDEN, replay

STEPS = 40


@pytest.fixture(scope="module")
def official():
    meta = json.loads((GOLDEN / "steps.json").read_text())
    meta["grads"] = torch.load(GOLDEN / "grads.pt", weights_only=True)
    return meta


def differences(official: dict, ours: dict) -> list[str]:
    """Every way `ours` (tests.training_replay.replay) departs from the official golden, one line each."""
    out = []
    group_of = {n: i for i, g in enumerate(official["groups"]) for n in g["names"]}
    for i, (rec, loss, hyper, grad) in enumerate(zip(official["steps"], ours["loss"], ours["hyper"], ours["grad"])):
        step = rec["step"]
        for name, (lr, wd, betas) in hyper.items():
            g = official["groups"][group_of[name]]
            want = (rec["lr"][group_of[name]], g["weight_decay"], tuple(g["betas"]))
            if (lr, wd, betas) != want:
                out.append(f"step {step}: {name} updated with (lr, weight decay, betas) {(lr, wd, betas)}, "
                           f"official {want}")
                break
        if grad != set(official["grad_sets"][rec["grad"]]):
            out.append(f"step {step}: parameters with a gradient differ "
                       f"({len(grad)} here, {len(official['grad_sets'][rec['grad']])} official)")
        want = rec["loss"]
        if (want is None) != (loss is None):
            out.append(f"step {step}: loss {loss}, official {want} (update made on one side only)")
        elif want is not None:
            tol = 1e-4 if step <= 11 else 1e-3        # the first 10 updates are steps 2..11
            if abs(loss - want) > tol * abs(want):
                out.append(f"step {step}: loss {loss:.7g}, official {want:.7g}")
    first = ours["first_grads"] or {}
    for name, g in official["grads"].items():
        if name not in first:
            out.append(f"first update: {name} has no gradient here")
        elif (first[name] - g).norm() > 1e-4 * g.norm():
            out.append(f"first update: gradient of {name} differs by {((first[name] - g).norm() / g.norm()):.2e} "
                       f"(relative)")
    return out


def test_llflow_training_steps_match_official(official):
    ours = replay(steps=STEPS)
    assert differences(official, ours) == []
    assert sum(loss is not None for loss in ours["loss"]) == STEPS - 1      # step 1 makes no update


@pytest.mark.parametrize("mode", ["train.invertible_backprop=true", "train.activation_checkpointing=selective"])
def test_memory_saving_backward_passes_train_like_official(official, mode):
    # ActNorm initialises inside the first update's forward here too; 6 steps cover the warm-up
    assert differences(official, replay([mode], steps=6)) == []


@pytest.mark.parametrize("change, steps, expected", [
    # the encoder frozen until step 20 (what train_RRDB_delay was meant to do; officially it never acts)
    (["train.encoder_delay=0.5"], 3, "parameters with a gradient differ"),
    # a milestone moved by one step
    (["train.lr_steps=[21,30,36,38]"], 21, "step 20: "),
    # Adam's betas from the YAML (beta2 0.99) instead of the official (0.9, 0.999)
    (["train.use_config_betas=true"], 2, "betas"),
    # every batch trains and the warm-up reaches lr_G (our corrected loop)
    (["train.official_loop=false"], 2, "update made on one side only"),
])
def test_a_changed_trainer_fails_the_comparison(official, change, steps, expected):
    found = differences(official, replay(change, steps=steps))
    assert any(expected in line for line in found), found


# -- learning-rate schedules at full length ------------------------------------------------------------------------
SCHEDULES = json.loads((GOLDEN.parent / "schedules.json").read_text())["schedules"]


def our_lrs(train: dict) -> list[list[float]]:
    """The lr of both param groups (lr_G; lr_RRDB or lr_G) at every step 1..niter, from our scheduler as FlowModel
    makes it."""
    from models.lr_schedule import make_scheduler
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [p], "lr": train["lr_G"]},
                            {"params": [q], "lr": train["lr_RRDB"] if train["lr_RRDB"] is not None else train["lr_G"]}])
    sched = make_scheduler(opt, train, official=True)
    lrs = []
    for _ in range(train["niter"]):
        lrs.append([g["lr"] for g in opt.param_groups])
        sched.step()
    return lrs


def schedule_differences(golden: dict, lrs) -> list[str]:
    from tests.training_replay import lr_digest
    if lr_digest(lrs) == golden["sha256"]:
        return []
    for step, want in golden["changes"]:      # where it changes after the warm-up: a readable first difference
        if lrs[step - 1] != want:
            return [f"step {step}: lr {lrs[step - 1]}, official {want}"]
    return ["the lr sequence differs from the official one (sha256 of every step's lrs)"]


@pytest.mark.parametrize("golden", SCHEDULES, ids=[s["configs"][0].split("/", 1)[1] + (" +restarts" if "restarts"
                                                                                        in s["configs"][0] else "")
                                                   for s in SCHEDULES])
def test_learning_rate_schedule_matches_official_at_every_step(golden):
    from bench.official_training_golden import ROOT, schedule_cases  # noqa: F401  (our configs, resolved)
    cases = schedule_cases()
    for label in golden["configs"]:
        assert cases.get(label) == golden["train"], f"{label} changed: regenerate (bench/official_training_golden.py)"
    assert schedule_differences(golden, our_lrs(golden["train"])) == []


def test_a_moved_milestone_fails_the_schedule_comparison():
    golden = next(s for s in SCHEDULES if s["train"]["niter"] == 300)
    train = dict(golden["train"], lr_steps=[m + 1 for m in golden["train"]["lr_steps"]])
    assert schedule_differences(golden, our_lrs(train))


# -- the training data pipeline ------------------------------------------------------------------------------------
class ReplayedDraws:
    """A numpy Generator stand-in that answers our dataset's draws with the official LoL_Dataset's recorded ones,
    translated to our calls, in order; a draw of another kind than the next official one is an error."""

    def __init__(self, official_draws, noise_level: float):
        self.queue = []
        for name, v in official_draws:
            if name == "randint":                           # crop offsets: rows, then columns, on both sides
                self.queue.append(("integers", v))
            elif name == "choice" and isinstance(v, bool):  # official flip when np.random.choice([True, False])
                self.queue.append(("random", 0.25 if not v else 0.75))      # is False; ours when random() < 0.5
            elif name == "choice":                          # rot90 k of [0, 1, 3]
                self.queue.append(("choice", v))
            elif name == "random":                          # noise with probability noise_prob
                self.queue.append(("random", v))
            elif name == "randn":                           # official: torch.randn(shape) * (level / 255)
                self.queue.append(("normal", (v * (noise_level / 255)).numpy()))
            else:
                raise AssertionError(f"unknown official draw {name}")

    def _next(self, kind):
        assert self.queue, f"our dataset draws more than the official one ({kind})"
        got, v = self.queue.pop(0)
        assert got == kind, f"our dataset draws {kind} where the official one drew {got}"
        return v

    def integers(self, low, high):
        return self._next("integers")

    def random(self):
        return self._next("random")

    def choice(self, a):
        return self._next("choice")

    def normal(self, loc, scale, size):
        return self._next("normal")


def test_lol_training_batches_equal_official_given_the_same_draws(shared_dir):
    from data.loader import create_dataset
    golden = torch.load(GOLDEN.parent / "lol_dataset.pt", weights_only=True)
    opts = dict(golden["options"], dataset="LoL", root=str(shared_dir / "data" / "LOL-v1-mini"),
                concat_histeq=True, histeq_as_input=False)
    ds = create_dataset(opts, "train")
    index = {s.name: i for i, s in enumerate(ds.samples)}
    for item in golden["items"]:
        replayed = ReplayedDraws(item["draws"], golden["options"]["noise_level"])
        ds._call_rng = lambda i, r=replayed: r
        ours = ds[index[item["name"]]]
        assert not replayed.queue, f"{item['name']}: official draws left unused: {replayed.queue}"
        assert torch.equal(ours["GT"], item["GT"]), item["name"]
        assert torch.equal(ours["LQ"], item["LQ"]), item["name"]
    draws = [d for item in golden["items"] for d in item["draws"]]
    assert any(name == "randn" for name, _ in draws)                                      # noise was compared
    assert {v for name, v in draws if name == "choice" and not isinstance(v, bool)} == {0, 1, 3}   # every rotation


def test_a_changed_augmentation_fails_the_batch_comparison(shared_dir):
    from data.loader import create_dataset
    golden = torch.load(GOLDEN.parent / "lol_dataset.pt", weights_only=True)
    opts = dict(golden["options"], dataset="LoL", root=str(shared_dir / "data" / "LOL-v1-mini"),
                concat_histeq=True, histeq_as_input=False, log_low=False)
    ds = create_dataset(opts, "train")
    item = golden["items"][0]
    ds._call_rng = lambda i: ReplayedDraws(item["draws"], golden["options"]["noise_level"])
    ours = ds[[s.name for s in ds.samples].index(item["name"])]
    assert not torch.equal(ours["LQ"], item["LQ"])


@pytest.mark.parametrize("sets, message", [
    (["train.restarts=[10,20]", "train.restart_weights=[1]"], "differ in length"),
    (["train.restarts=[10]", "train.official_loop=false"], "official schedule only"),
])
def test_restart_options_that_cannot_work_are_one_line_errors(sets, message):
    from models.build import model_class
    from options.options import load_options
    from utils.errors import OptionError
    opt = load_options(GOLDEN / "config.yml", sets, is_train=True)
    with pytest.raises(OptionError, match=message):
        model_class(opt["model"])(opt, torch.device("cpu"))
