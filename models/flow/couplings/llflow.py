"""LLFlow's coupling: a conditional affine injector on all channels, then a self-conditional affine coupling."""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.registry import COUPLING_REGISTRY
from ..ops import affine_subnet, split_cross, split_half, sum_chw


def coupling_opts(opt: dict, default_hidden: int = 64, default_eps: float = 1e-4):
    """Hidden width and scale epsilon from `network_G.flow.CondAffineSeparatedAndCond`."""
    sub = ((opt.get("flow") or {}).get("CondAffineSeparatedAndCond") or {})
    return int(sub.get("hidden_channels") or default_hidden), float(sub.get("eps") or default_eps)


def affine_params(h: torch.Tensor, eps: float):
    """(shift, scale) from a subnet output: shift = even channels, scale = sigmoid(odd + 2) + eps."""
    shift, raw = split_cross(h)
    return shift, torch.sigmoid(raw + 2.0) + eps


@COUPLING_REGISTRY.register("CondAffineSeparatedAndCond")
class CondAffineSeparatedAndCond(nn.Module):
    """z <- (z + t_f) * s_f from the conditioning; then z2 <- (z2 + t) * s from [z1, ft]."""

    def __init__(self, in_channels: int, cond_channels: int, opt: dict):
        super().__init__()
        hidden, self.eps = coupling_opts(opt)
        c1 = in_channels // 2
        c2 = in_channels - c1
        self.fAffine = affine_subnet(c1 + cond_channels, 2 * c2, hidden)
        self.fFeatures = affine_subnet(cond_channels, 2 * in_channels, hidden)

    def forward(self, z, logdet, ft, reverse: bool = False):
        shift_f, scale_f = affine_params(self.fFeatures(ft), self.eps)
        if not reverse:
            z = (z + shift_f) * scale_f
            logdet = logdet + sum_chw(torch.log(scale_f))
            z1, z2 = split_half(z)
            shift, scale = affine_params(self.fAffine(torch.cat([z1, ft], 1)), self.eps)
            z2 = (z2 + shift) * scale
            logdet = logdet + sum_chw(torch.log(scale))
            return torch.cat([z1, z2], 1), logdet
        z1, z2 = split_half(z)
        shift, scale = affine_params(self.fAffine(torch.cat([z1, ft], 1)), self.eps)
        z2 = z2 / scale - shift
        logdet = logdet - sum_chw(torch.log(scale))
        z = torch.cat([z1, z2], 1)
        z = z / scale_f - shift_f
        logdet = logdet - sum_chw(torch.log(scale_f))
        return z, logdet
