"""UPT-Flow's cross coupling (spec §4.4): injector, affine z2 <- z1, injector, affine z1 <- z2, with CBAM subnets.

Official state-dict names: `fAffine_1`, `fAffine_2`, `fFeatures_1`, `fFeatures_2`, each `.model.<i>` with
0 = ActNormConv 1x1, 2 = ActNormConv 3x3, 4 = CBAM (`ChannelGate.mlp.{1,3}`, `SpatialGate.spatial.conv`),
5 = Conv2dZeros 1x1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.errors import OptionError
from utils.registry import COUPLING_REGISTRY
from ..ops import affine_subnet, split_half, sum_chw
from .llflow import after_first_conv, affine_params, cond_first_convs, z_part_first_conv

UPT_DEFAULT_EPS = 3e-4


def _affine(z, shift, scale, reverse: bool):
    """(z + shift) * scale, or its inverse z / scale - shift."""
    return z / scale - shift if reverse else (z + shift) * scale


def _acc(logdet, scale, sign: int):
    """logdet + sign * sum log(scale) per sample; None (log-det not wanted) stays None."""
    return None if logdet is None else logdet + sign * sum_chw(torch.log(scale))


class ChannelGate(nn.Module):
    """x * sigmoid(MLP(avgpool x) + MLP(maxpool x)); MLP = C -> C/r -> C with ReLU (`mlp.1`, `mlp.3`)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = channels // reduction
        if mid < 1:
            raise OptionError(f"CBAM channel gate: {channels} channels with reduction {reduction} leaves no hidden "
                              f"unit; use flow.CondAffineSeparatedAndCond.hidden_channels >= {reduction}")
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, mid), nn.ReLU(), nn.Linear(mid, channels))

    def gate(self, mean, amax):
        """(B, C, 1, 1) channel weights from the spatial mean and max (B, C)."""
        b = mean.shape[0]
        att = self.mlp(torch.cat([mean, amax], 0))   # both pools through the MLP at once
        return torch.sigmoid(att[:b] + att[b:])[:, :, None, None]

    def forward(self, x):
        return x * self.gate(x.mean(dim=(2, 3)), x.amax(dim=(2, 3)))


class SpatialGate(nn.Module):
    """x * sigmoid(conv7x7([max_c x, mean_c x])) (`spatial.conv`, no bias)."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.spatial = nn.ModuleDict({"conv": nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2,
                                                        bias=False)})

    def forward(self, x):
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial["conv"](pooled))


class CBAM(nn.Module):
    """Channel gate then spatial gate, with a residual: out = gated(x) + x."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x)) + x


class CBAMSubnet(nn.Module):
    """UPT's NN_F: ActNormConv 1x1 -> ReLU -> ActNormConv 3x3 -> ReLU -> CBAM -> Conv2dZeros 1x1 (as `model`)."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int):
        super().__init__()
        self.model = affine_subnet(in_ch, out_ch, hidden, k_first=1, k_hidden=3, k_last=1, act=nn.ReLU,
                                   extra=CBAM(hidden))

    def forward(self, x):
        return self.model(x)


@COUPLING_REGISTRY.register("CrossCoupling")
class CrossCoupling(nn.Module):
    """Four affine stages, all scales sigmoid(. + 2) + eps (eps from `flow.CondAffineSeparatedAndCond.eps`,
    default 3e-4):

    1. z  <- (z  + t_f1) * s_f1,  [t_f1, s_f1] = fFeatures_1(ft)
    2. z2 <- (z2 + t_1)  * s_1,   [t_1, s_1]   = fAffine_1([z1, ft])
    3. z  <- (z  + t_f2) * s_f2,  [t_f2, s_f2] = fFeatures_2(ft)
    4. z1 <- (z1 + t_2)  * s_2,   [t_2, s_2]   = fAffine_2([z2, ft])   (the cross step)

    log-det = sum of log of all four scales; reverse applies the exact inverses in reverse order.
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = UPT_DEFAULT_EPS):
        super().__init__()
        hidden, self.eps = int(hidden_channels), float(eps)
        c1 = in_channels // 2
        c2 = in_channels - c1
        self.in_channels = in_channels
        self.fAffine_1 = CBAMSubnet(c1 + cond_channels, 2 * c2, hidden)
        self.fAffine_2 = CBAMSubnet(c2 + cond_channels, 2 * c1, hidden)
        self.fFeatures_1 = CBAMSubnet(cond_channels, 2 * in_channels, hidden)
        self.fFeatures_2 = CBAMSubnet(cond_channels, 2 * in_channels, hidden)

    def conditional(self, ft):
        """(t_f1, s_f1), (t_f2, s_f2) of the injectors and the ft parts of the fAffine first convolutions, from one
        convolution over ft (see cond_first_convs)."""
        c1 = self.in_channels // 2
        h1, h2, ha1, ha2 = cond_first_convs(ft, [(self.fFeatures_1.model, 0), (self.fFeatures_2.model, 0),
                                                 (self.fAffine_1.model, c1),
                                                 (self.fAffine_2.model, self.in_channels - c1)])
        f1 = affine_params(after_first_conv(self.fFeatures_1.model, h1), self.eps)
        f2 = affine_params(after_first_conv(self.fFeatures_2.model, h2), self.eps)
        return f1, f2, ha1, ha2

    def _stage(self, i, z, cond, reverse: bool):
        """Stage i (0-3, docstring order) or its inverse; returns (z, scale)."""
        (t_f1, s_f1), (t_f2, s_f2), ha1, ha2 = cond
        if i in (0, 2):                                   # injector on all channels
            t, s = (t_f1, s_f1) if i == 0 else (t_f2, s_f2)
            return _affine(z, t, s, reverse), s
        net, h, target = (self.fAffine_1, ha1, 1) if i == 1 else (self.fAffine_2, ha2, 0)
        halves = list(split_half(z))                      # stage 1: z2 from z1; stage 3: z1 from z2
        net = net.model
        t, s = affine_params(after_first_conv(net, z_part_first_conv(net, halves[1 - target], h)), self.eps)
        halves[target] = _affine(halves[target], t, s, reverse)
        return torch.cat(halves, 1), s

    def forward(self, z, logdet, ft, reverse: bool = False, cond=None):
        """`cond`: :meth:`conditional`'s result for this ft when the caller already has it."""
        if z.shape[1] != self.in_channels:
            raise ValueError(f"CrossCoupling built for {self.in_channels} channels, got {z.shape[1]}")
        cond = self.conditional(ft) if cond is None else cond
        # Each inverse stage removes the log of its own scale. The official reverse subtracts sum(log s_2) when
        # undoing stage 2 (a copy-paste slip; it should be s_1): only its reported log-det is wrong, z is the same.
        for i in ((3, 2, 1, 0) if reverse else (0, 1, 2, 3)):
            z, s = self._stage(i, z, cond, reverse)
            logdet = _acc(logdet, s, -1 if reverse else 1)
        return z, logdet
