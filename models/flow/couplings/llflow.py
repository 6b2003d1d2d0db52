"""LLFlow's coupling: a conditional affine injector on all channels, then a self-conditional affine coupling."""
from __future__ import annotations

from itertools import islice

import torch
import torch.nn as nn
import torch.nn.functional as F

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
        self.c1 = in_channels // 2
        c2 = in_channels - self.c1
        self.fAffine = affine_subnet(self.c1 + cond_channels, 2 * c2, hidden)
        self.fFeatures = affine_subnet(cond_channels, 2 * in_channels, hidden)

    def conditional(self, ft):
        """(shift_f, scale_f) of the injector, and the ft part of fAffine's first conv.

        Both first convolutions read ft, so they run as one wider convolution (the same maths on the same
        parameters; oneDNN is faster on the bigger GEMM, in training too).
        """
        wf, wa = self.fFeatures[0].weight, self.fAffine[0].weight
        h = F.conv2d(ft, torch.cat([wf, wa[:, self.c1:]], 0), padding=wf.shape[-1] // 2)
        hf, ha = h.split([wf.shape[0], wa.shape[0]], 1)
        shift_f, scale_f = affine_params(_after_first_conv(self.fFeatures, hf), self.eps)
        return shift_f, scale_f, ha

    def self_conditional(self, z1, ha):
        """(shift, scale) of the coupling from z1 and the precomputed ft part of fAffine's first conv."""
        wa = self.fAffine[0].weight
        h = F.conv2d(z1, wa[:, :self.c1], padding=wa.shape[-1] // 2) + ha
        return affine_params(_after_first_conv(self.fAffine, h), self.eps)

    def forward(self, z, logdet, ft, reverse: bool = False):
        shift_f, scale_f, ha = self.conditional(ft)
        if not reverse:
            z = (z + shift_f) * scale_f
            logdet = logdet + sum_chw(torch.log(scale_f))
            z1, z2 = split_half(z)
            shift, scale = self.self_conditional(z1, ha)
            z2 = (z2 + shift) * scale
            logdet = logdet + sum_chw(torch.log(scale))
            return torch.cat([z1, z2], 1), logdet
        z1, z2 = split_half(z)
        shift, scale = self.self_conditional(z1, ha)
        z2 = z2 / scale - shift
        logdet = logdet - sum_chw(torch.log(scale))
        z = torch.cat([z1, z2], 1)
        z = z / scale_f - shift_f
        logdet = logdet - sum_chw(torch.log(scale_f))
        return z, logdet


def _after_first_conv(subnet: nn.Sequential, h):
    """Run a coupling subnet from the output of its first convolution (its ActNorm, then the remaining layers)."""
    h, _ = subnet[0].actnorm(h)
    for layer in islice(subnet, 1, None):
        h = layer(h)
    return h
