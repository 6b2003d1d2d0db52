"""LLFlow's coupling: a conditional affine injector on all channels, then a self-conditional affine coupling."""
from __future__ import annotations

from itertools import islice

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.registry import COUPLING_REGISTRY
from ....precision import at_least_fp32
from ....tiling.core import TILED, TilePlan, conv_reach, map_tiles, nan_logdet
from ..ops import affine_subnet, split_cross, split_half, sum_chw


def affine_params(h: torch.Tensor, eps: float):
    """(shift, scale) from a subnet output: shift = even channels, scale = sigmoid(odd + 2) + eps.

    Both in float32 even when the subnet ran in bf16/fp16: z is divided by the scale on the reverse pass and log(scale)
    is the log-det (models/precision.py).
    """
    shift, raw = split_cross(at_least_fp32(h))
    return shift, torch.sigmoid(raw + 2.0) + eps


@COUPLING_REGISTRY.register("CondAffineSeparatedAndCond")
class CondAffineSeparatedAndCond(nn.Module):
    """z <- (z + t_f) * s_f from the conditioning; then z2 <- (z2 + t) * s from [z1, ft]."""

    tiling = TILED   # local: tiled_forward runs forward on haloed crops

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4):
        super().__init__()
        hidden, self.eps = int(hidden_channels), float(eps)
        self.c1 = in_channels // 2
        c2 = in_channels - self.c1
        self.fAffine = affine_subnet(self.c1 + cond_channels, 2 * c2, hidden)
        self.fFeatures = affine_subnet(cond_channels, 2 * in_channels, hidden)

    def tiled_forward(self, plan: TilePlan, z, logdet, ft, reverse: bool = False):
        return tiled_local_coupling(self, plan, z, logdet, ft, reverse)

    def conditional(self, ft):
        """(shift_f, scale_f) of the injector, and the ft part of fAffine's first conv (see :func:`cond_first_convs`)."""
        hf, ha = cond_first_convs(ft, [(self.fFeatures, 0), (self.fAffine, self.c1)])
        shift_f, scale_f = affine_params(after_first_conv(self.fFeatures, hf), self.eps)
        return shift_f, scale_f, ha

    def self_conditional(self, z1, ha):
        """(shift, scale) of the coupling from z1 and the precomputed ft part of fAffine's first conv."""
        return affine_params(after_first_conv(self.fAffine, z_part_first_conv(self.fAffine, z1, ha)), self.eps)

    def forward(self, z, logdet, ft, reverse: bool = False, cond=None):
        """`cond`: :meth:`conditional`'s result for this ft when the caller already has it."""
        shift_f, scale_f, ha = self.conditional(ft) if cond is None else cond
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


def cond_first_convs(ft, parts):
    """The conditioning part of several subnets' first convolutions, run as one wider convolution over ft.

    parts: (subnet, offset) pairs; the subnet's first conv reads [z part (offset channels), ft], so its weight
    columns from `offset` on apply to ft (offset 0: it reads ft only). Same maths on the same parameters; one
    bigger GEMM is faster than several small ones (and no [z, ft] concatenation is written). Returns one tensor
    per part (without ActNorm).
    """
    ws = [sub[0].weight[:, off:] for sub, off in parts]
    h = F.conv2d(ft, torch.cat(ws, 0), padding=ws[0].shape[-1] // 2)
    return h.split([w.shape[0] for w in ws], 1)


def z_part_first_conv(subnet: nn.Sequential, z_part, h_cond):
    """First conv of a subnet reading [z_part, ft], given h_cond = its ft part from :func:`cond_first_convs`."""
    w = subnet[0].weight
    return F.conv2d(z_part, w[:, :z_part.shape[1]], padding=w.shape[-1] // 2) + h_cond


def after_first_conv(subnet: nn.Sequential, h):
    """Run a coupling subnet from the output of its first convolution (its ActNorm, then the remaining layers)."""
    h, _ = subnet[0].actnorm(h)
    for layer in islice(subnet, 1, None):
        h = layer(h)
    return h


def coupling_reach(cpl, reverse: bool) -> int:
    """Halo of an LLFlow/ZMAR coupling. Forward, the affine subnets read z1 after the injector (whose shift and
    scale come from ft through fFeatures): the reaches add up. Reverse, they read z1 as given and the injector is
    undone afterwards, pixel by pixel: the largest reach."""
    affine = max(conv_reach(cpl.fAffine), conv_reach(getattr(cpl, "fAffine2", cpl.fAffine)))
    injector = conv_reach(cpl.fFeatures)
    return max(affine, injector) if reverse else affine + injector


def tiled_local_coupling(cpl: nn.Module, plan: TilePlan, z, logdet, ft, reverse: bool = False, halo: int = None):
    """The tiled forward of a local coupling: its forward on haloed crops of z and ft (halo: coupling_reach
    unless given); the log-det comes back NaN (models/tiling/core.nan_logdet)."""
    forward = type(cpl).forward
    if plan.fits(*z.shape[-2:]):
        return forward(cpl, z, logdet, ft, reverse)
    halo = coupling_reach(cpl, reverse) if halo is None else halo
    zero = z.new_zeros(z.shape[0]) if logdet is None else logdet.new_zeros(logdet.shape)
    out = map_tiles(lambda zc, fc: forward(cpl, zc, zero, fc, reverse)[0], [z, ft], plan, halo)
    return out, nan_logdet(logdet)

