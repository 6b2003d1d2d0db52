"""Learning-rate schedules: linear warm-up, step decay at milestones, optional restarts.

Two forms (docs/training-equivalence.md):
- :class:`OfficialMultiStep` (the flows' default, ``train.official_loop: true``): the learning rate of every training
  step as the official LLFlow trainer sets it, bit for bit: its ``MultiStepLR_Restart`` (milestones, inverse
  milestones, restarts with weights, ``clear_state``) stepped before each step, then the warm-up lr ``lr0 / W * step``
  written over it while ``step < W``. Because that scheduler multiplies the lr it finds, the lr after the warm-up stays
  at ``lr0 (W - 1) / W`` (not lr0) until the first milestone.
- :class:`WarmupMultiStep` through ``LambdaLR`` (DRBN, N2LDiff and the flows with ``train.official_loop: false``):
  ``lr0 * it / W`` while it < W, then ``lr0 * gamma ** (milestones passed)``; no restarts.
"""
from __future__ import annotations

import bisect
from collections import Counter

import torch

from utils.errors import OptionError


class WarmupMultiStep:
    """Multiplier for LambdaLR: it/warmup while it < warmup, then gamma ** (milestones passed). Picklable."""

    def __init__(self, warmup_iter: int, milestones, gamma: float):
        self.warmup_iter = int(warmup_iter or -1)
        self.milestones = sorted(int(m) for m in (milestones or []))
        self.gamma = float(gamma)

    def __call__(self, it: int) -> float:
        if self.warmup_iter > 0 and it < self.warmup_iter:
            return max(it, 1) / self.warmup_iter
        return self.gamma ** bisect.bisect_right(self.milestones, it)


def official_lr(base: float, step: int, warmup_iter: int = -1, milestones=(), gamma: float = 0.5, restarts=None,
                restart_weights=None, inverse_milestones=()) -> float:
    """The lr of (1-based) training step `step` in the official LLFlow loop, for a group whose initial lr is `base`.

    The official chain changes the lr only at events (restarts, milestones, inverse milestones) and overwrites it
    during the warm-up; replaying the events in order, with the official float operations, gives its exact values
    in O(events) instead of O(step).
    """
    warmup_iter = int(warmup_iter if warmup_iter is not None else -1)
    if 1 <= step < warmup_iter:
        return base / warmup_iter * step
    restarts = list(restarts) if restarts else [0]
    weights = list(restart_weights) if restart_weights else [1]
    m, inv = Counter(int(s) for s in milestones or ()), Counter(int(s) for s in inverse_milestones or ())

    def event(v, e):
        if e in restarts:
            return base * weights[restarts.index(e)]
        if e not in m and e not in inv:
            return v
        return v * (gamma ** m[e]) * (gamma ** (-inv[e]))

    v = event(base, 0)                                  # the scheduler's construction (last_epoch 0)
    start = 0
    if warmup_iter > 1:                                 # the last warm-up value is where the chain goes on from
        v, start = base / warmup_iter * (warmup_iter - 1), warmup_iter - 1
    for e in sorted({e for e in (*restarts, *m, *inv) if start < e <= step}):
        v = event(v, e)
    return v


class OfficialMultiStep:
    """The official loop's lr per step (module docstring). After k calls of :meth:`step`, the optimiser holds the lr
    of training step k + 1; the state is the step count, so resuming recomputes the same values."""

    def __init__(self, optimizer, warmup_iter=-1, milestones=(), gamma=0.5, restarts=None, restart_weights=None,
                 clear_state=False, inverse_milestones=()):
        restarts, weights = list(restarts or []), list(restart_weights or [])
        if restarts and len(restarts) != len(weights or [1] * len(restarts)):
            raise OptionError(f"train.restarts ({len(restarts)}) and train.restart_weights ({len(weights)}) differ "
                              f"in length")
        self.optimizer = optimizer
        self.kw = dict(warmup_iter=int(warmup_iter if warmup_iter is not None else -1),
                       milestones=[int(s) for s in milestones or ()], gamma=float(gamma),
                       restarts=[int(s) for s in restarts] or None,
                       restart_weights=[float(w) for w in weights] or ([1.0] * len(restarts) or None),
                       inverse_milestones=[int(s) for s in inverse_milestones or ()])
        self.clear_state = bool(clear_state)
        k = self.kw
        # the steps after the warm-up where the lr can change: between them it stays (official_lr at the last one)
        self._events = sorted({max(k["warmup_iter"] - 1, 1), *(k["restarts"] or ()), *k["milestones"],
                               *k["inverse_milestones"]})
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def lr_at(self, step: int) -> list[float]:
        i = bisect.bisect_right(self._events, step) - 1
        if step < self.kw["warmup_iter"] or i < 0:
            return [official_lr(b, step, **self.kw) for b in self.base_lrs]
        return [self._at_event(b, self._events[i]) for b in self.base_lrs]

    def _at_event(self, base: float, e: int) -> float:
        cache = self.__dict__.setdefault("_cache", {})
        if (base, e) not in cache:
            cache[(base, e)] = official_lr(base, e, **self.kw)
        return cache[(base, e)]

    def _apply(self):
        for g, lr in zip(self.optimizer.param_groups, self.lr_at(self.last_epoch + 1)):
            g["lr"] = lr

    def step(self):
        self.last_epoch += 1
        self._apply()
        if self.clear_state and self.last_epoch + 1 in (self.kw["restarts"] or ()):
            self.optimizer.state.clear()                # the official restart with clear_state: Adam starts anew

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}   # the rest comes from the config

    def load_state_dict(self, state: dict):
        self.last_epoch, self.base_lrs = int(state["last_epoch"]), [float(b) for b in state["base_lrs"]]
        self._apply()


def make_scheduler(optimizer, train_opt: dict, official: bool = False):
    """The scheduler of `train_opt`; `official`: :class:`OfficialMultiStep` (the official LLFlow loop's lrs)."""
    scheme = train_opt.get("lr_scheme") or "MultiStepLR"
    if scheme != "MultiStepLR":
        raise OptionError(f"train.lr_scheme '{scheme}' is not supported; use MultiStepLR")
    if official:
        return OfficialMultiStep(optimizer, train_opt.get("warmup_iter", -1), train_opt.get("lr_steps"),
                                 train_opt.get("lr_gamma", 0.5), train_opt.get("restarts"),
                                 train_opt.get("restart_weights"), train_opt.get("clear_state"),
                                 train_opt.get("lr_steps_inverse"))
    if train_opt.get("restarts"):
        raise OptionError("train.restarts is supported with the official schedule only (flows, train.official_loop: "
                          "true)")
    fn = WarmupMultiStep(train_opt.get("warmup_iter", -1), train_opt.get("lr_steps"), train_opt.get("lr_gamma", 0.5))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
