"""Learning-rate schedule: linear warm-up, then step decay at milestones (official MultiStepLR_Restart without restarts)."""
from __future__ import annotations

import bisect

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


def make_scheduler(optimizer, train_opt: dict):
    scheme = train_opt.get("lr_scheme") or "MultiStepLR"
    if scheme != "MultiStepLR":
        raise OptionError(f"train.lr_scheme '{scheme}' is not supported; use MultiStepLR")
    if train_opt.get("restarts"):
        raise OptionError("train.restarts is not supported")
    fn = WarmupMultiStep(train_opt.get("warmup_iter", -1), train_opt.get("lr_steps"), train_opt.get("lr_gamma", 0.5))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
