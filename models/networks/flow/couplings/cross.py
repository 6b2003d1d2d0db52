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
from ....tiling.core import IN_TILED, LOCAL, TILED, TilePlan, conv_reach, empty_map, map_tiles, nan_logdet
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

    tiling = IN_TILED   # CBAMSubnet.tiled gathers the pools and applies gate()

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

    tiling = LOCAL   # max and mean over channels, per pixel

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.spatial = nn.ModuleDict({"conv": nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2,
                                                        bias=False)})

    def forward(self, x):
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial["conv"](pooled))


class CBAM(nn.Module):
    """Channel gate then spatial gate, with a residual: out = gated(x) + x."""

    tiling = IN_TILED

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def gated(self, x, gate):
        """The apply step: spatial gate and residual after the channel gate's (B, C, 1, 1) weights."""
        return self.SpatialGate(x * gate) + x

    def forward(self, x):
        return self.gated(x, self.ChannelGate.gate(x.mean(dim=(2, 3)), x.amax(dim=(2, 3))))


class CBAMSubnet(nn.Module):
    """UPT's NN_F: ActNormConv 1x1 -> ReLU -> ActNormConv 3x3 -> ReLU -> CBAM -> Conv2dZeros 1x1 (as `model`)."""

    tiling = IN_TILED   # CrossCoupling.tiled_forward runs tiled()

    def __init__(self, in_ch: int, out_ch: int, hidden: int):
        super().__init__()
        self.model = affine_subnet(in_ch, out_ch, hidden, k_first=1, k_hidden=3, k_last=1, act=nn.ReLU,
                                   extra=CBAM(hidden))

    def forward(self, x):
        return self.model(x)

    def tiled(self, inputs: list[torch.Tensor], plan: TilePlan) -> torch.Tensor:
        """self(cat(inputs)) for same-size maps, tiled around the CBAM channel gate: pass 1 runs the head (up to
        the CBAM, halo of its convs) per tile and gathers the mean and max of its output, pass 2 applies the gate,
        the spatial gate (halo 3) and the output conv per tile."""
        h, w = inputs[0].shape[-2:]
        layers = list(self.model)
        cbam, last = layers[4], layers[5]

        def head(*ts):
            t = ts[0] if len(ts) == 1 else torch.cat(ts, 1)
            for layer in layers[:4]:
                t = layer(t)
            return t

        hidden = total = peak = None
        for win in plan.windows(h, w, conv_reach(layers[0], layers[2])):
            t = head(*[x[win.crop] for x in inputs])[win.core_in_crop]
            if hidden is None:
                hidden = empty_map(t, t.shape[1], h, w)
            hidden[win.core] = t
            s, m = t.float().sum((2, 3)), t.amax((2, 3))
            total, peak = (s, m) if total is None else (total + s, torch.maximum(peak, m))
            del t
        gate = cbam.ChannelGate.gate((total / (h * w)).to(hidden.dtype), peak)
        return map_tiles(lambda t: last(cbam.gated(t, gate)), [hidden], plan, conv_reach(cbam.SpatialGate))


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

    tiling = TILED

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

    @staticmethod
    def _fused_subnet(net: CBAMSubnet, z_part, h):
        """An fAffine subnet on [z_part, ft], its ft part h of the first conv precomputed (:meth:`conditional`)."""
        return after_first_conv(net.model, z_part_first_conv(net.model, z_part, h))

    def _stage(self, i, z, cond, reverse: bool, subnet):
        """Stage i (0-3, docstring order) or its inverse, with ``subnet(net, z_part, h)`` giving an fAffine
        subnet's output; returns (z, scale)."""
        (t_f1, s_f1), (t_f2, s_f2), ha1, ha2 = cond
        if i in (0, 2):                                   # injector on all channels
            t, s = (t_f1, s_f1) if i == 0 else (t_f2, s_f2)
            return _affine(z, t, s, reverse), s
        net, h, target = (self.fAffine_1, ha1, 1) if i == 1 else (self.fAffine_2, ha2, 0)
        halves = list(split_half(z))                      # stage 1: z2 from z1; stage 3: z1 from z2
        t, s = affine_params(subnet(net, halves[1 - target], h), self.eps)
        halves[target] = _affine(halves[target], t, s, reverse)
        return torch.cat(halves, 1), s

    def _stages(self, z, logdet, cond, reverse: bool, subnet):
        if z.shape[1] != self.in_channels:
            raise ValueError(f"CrossCoupling built for {self.in_channels} channels, got {z.shape[1]}")
        # Each inverse stage removes the log of its own scale. The official reverse subtracts sum(log s_2) when
        # undoing stage 2 (a copy-paste slip; it should be s_1): only its reported log-det is wrong, z is the same.
        for i in ((3, 2, 1, 0) if reverse else (0, 1, 2, 3)):
            z, s = self._stage(i, z, cond, reverse, subnet)
            logdet = _acc(logdet, s, -1 if reverse else 1)
        return z, logdet

    def forward(self, z, logdet, ft, reverse: bool = False, cond=None):
        """`cond`: :meth:`conditional`'s result for this ft when the caller already has it."""
        cond = self.conditional(ft) if cond is None else cond
        return self._stages(z, logdet, cond, reverse, self._fused_subnet)

    def tiled_forward(self, plan: TilePlan, z, logdet, ft, reverse: bool = False):
        """The same stages with every subnet tiled (CBAMSubnet.tiled); the log-det comes back NaN."""
        if plan.fits(*z.shape[-2:]):
            return CrossCoupling.forward(self, z, logdet, ft, reverse)
        f1, f2 = (affine_params(net.tiled([ft], plan), self.eps) for net in (self.fFeatures_1, self.fFeatures_2))
        z, _ = self._stages(z, None, (f1, f2, None, None), reverse, lambda net, zp, _: net.tiled([zp, ft], plan))
        return z, nan_logdet(logdet)
