"""ZMAR-SNFlow's "strengthened" coupling: LLFlow's injector + conditional affine, then an unconditional affine.

Forward (z has C channels, z1 = first C//2, z2 = the rest; all scales are sigmoid(raw + 2) + eps):
    1. injector:            [t_f, s_f] = fFeatures(ft);      z  <- (z + t_f) * s_f
    2. conditional affine:  [t1, s1]   = fAffine([z1, ft]);  z2 <- (z2 + t1) * s1
    3. extra affine:        [t2, s2]   = fAffine2(z1);       z2 <- (z2 + t2) * s2
log-det = sum log s_f + sum log s1 + sum log s2; the reverse runs 3, 2, 1 with the inverse maps.
Step 3 conditions on the same unchanged z1 as step 2, so 2+3 is one (richer) affine map of z2 (spec 3.3).
Hidden width and eps as LLFlow's coupling (`hidden_channels`, `eps`; defaults 64 and 1e-4).
"""
from __future__ import annotations

import torch

from utils.registry import COUPLING_REGISTRY
from ..ops import affine_subnet, split_half, sum_chw
from ....tiling.core import TILED
from .llflow import CondAffineSeparatedAndCond, affine_params


@COUPLING_REGISTRY.register("SNFlowCoupling")
class SNFlowCoupling(CondAffineSeparatedAndCond):
    """LLFlow's coupling (`fFeatures`, `fAffine`) plus `fAffine2`, an affine coupling of z2 on z1 alone."""

    tiling = TILED   # local: the inherited tiled_forward runs forward on haloed crops

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4):
        super().__init__(in_channels, cond_channels, hidden_channels, eps)
        c1 = in_channels // 2
        self.fAffine2 = affine_subnet(c1, 2 * (in_channels - c1), int(hidden_channels))

    def forward(self, z, logdet, ft, reverse: bool = False, cond=None):
        shift_f, scale_f, ha = self.conditional(ft) if cond is None else cond
        if not reverse:
            z = (z + shift_f) * scale_f
            z1, z2 = split_half(z)
            shift1, scale1 = self.self_conditional(z1, ha)
            shift2, scale2 = affine_params(self.fAffine2(z1), self.eps)
            z2 = ((z2 + shift1) * scale1 + shift2) * scale2
            logdet = logdet + sum_chw(torch.log(scale_f)) + sum_chw(torch.log(scale1) + torch.log(scale2))
            return torch.cat([z1, z2], 1), logdet
        z1, z2 = split_half(z)
        shift1, scale1 = self.self_conditional(z1, ha)
        shift2, scale2 = affine_params(self.fAffine2(z1), self.eps)
        z2 = (z2 / scale2 - shift2) / scale1 - shift1
        z = torch.cat([z1, z2], 1) / scale_f - shift_f
        logdet = logdet - sum_chw(torch.log(scale_f)) - sum_chw(torch.log(scale1) + torch.log(scale2))
        return z, logdet
