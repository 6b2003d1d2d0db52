"""Tiled forwards of the flow's couplings and attention maps.

- LLFlow's and ZMAR's couplings and GLTG's SAN are local: crops with a halo of the largest subnet reach.
- UPT's CBAM subnets pool the hidden map (mean and max over all pixels) for the channel gate: pass 1 keeps the
  hidden map and its pools, pass 2 (halo 3, the 7x7 spatial gate) finishes the subnet; the four affine stages then
  act on the full (small) latent.
- GLTG's CSN averages its head features over rows and over columns: pass 1 sums them, the map follows.
- GLTG's coupling subnet ends with SCAN: gate 1 is local; gate 2 pools over H (mean) and W (max) and gate 3 over
  H (max) and W (mean), each pooling the previous gate's output: pass 1 keeps gate 1's output and pools it,
  pass 2 applies gate 2 in place and pools again, pass 3 applies gate 3 and the output conv.

The latent z is exact. The coupling log-determinants are sums over pixels that the enhancement never reads; under
tiled execution the couplings return NaN for them (SAN/CSN, which apply a full map, keep theirs exact).
"""
from __future__ import annotations

import torch

from ..flow.couplings.aflow import CSN, SAN, AFlowCoupling
from ..flow.couplings.cross import CrossCoupling, _affine
from ..flow.couplings.llflow import CondAffineSeparatedAndCond, affine_params
from ..flow.couplings.snflow import SNFlowCoupling
from ..flow.ops import split_half
from .core import TilePlan, conv_reach, empty_map, map_tiles, tiled_forward


def _nan(logdet):
    return None if logdet is None else torch.full_like(logdet, float("nan"))


def _sum_into(acc, value):
    return value if acc is None else acc + value


def _max_into(acc, value):
    return value if acc is None else torch.maximum(acc, value)


# ------------------------------------------------------------------------------------------------ local

def coupling_reach(cpl, reverse: bool) -> int:
    """Halo of an LLFlow/ZMAR coupling. Forward, the affine subnets read z1 after the injector (whose shift and
    scale come from ft through fFeatures): the reaches add up. Reverse, they read z1 as given and the injector is
    undone afterwards, pixel by pixel: the largest reach."""
    affine = max(conv_reach(cpl.fAffine), conv_reach(getattr(cpl, "fAffine2", cpl.fAffine)))
    injector = conv_reach(cpl.fFeatures)
    return max(affine, injector) if reverse else affine + injector


@tiled_forward(CondAffineSeparatedAndCond, SNFlowCoupling, SAN)
def local_coupling(cpl, plan: TilePlan, z, logdet, ft, reverse: bool = False):
    forward = type(cpl).forward
    if plan.fits(*z.shape[-2:]):
        return forward(cpl, z, logdet, ft, reverse)
    halo = conv_reach(cpl) if isinstance(cpl, SAN) else coupling_reach(cpl, reverse)
    zero = z.new_zeros(z.shape[0]) if logdet is None else logdet.new_zeros(logdet.shape)
    out = map_tiles(lambda zc, fc: forward(cpl, zc, zero, fc, reverse)[0], [z, ft], plan, halo)
    return out, _nan(logdet)


# ------------------------------------------------------------------------------------------------ UPT: CBAM

def cbam_subnet(model, inputs, plan: TilePlan):
    """UPT's CBAMSubnet ``model`` (ActNormConv 1x1 -> ReLU -> ActNormConv 3x3 -> ReLU -> CBAM -> Conv2dZeros 1x1)
    on the channel concatenation of ``inputs`` (same-size maps), tiled around the CBAM channel gate's pools."""
    h, w = inputs[0].shape[-2:]
    cbam, last = model[4], model[5]

    def head(*ts):
        t = ts[0] if len(ts) == 1 else torch.cat(ts, 1)
        for layer in list(model)[:4]:
            t = layer(t)
        return t

    hidden = total = peak = None
    for win in plan.windows(h, w, conv_reach(model[0], model[2])):
        t = head(*[x[win.crop] for x in inputs])[win.core_in_crop]
        if hidden is None:
            hidden = empty_map(t, t.shape[1], h, w)
        hidden[win.core] = t
        total = _sum_into(total, t.float().sum((2, 3)))
        peak = _max_into(peak, t.amax((2, 3)))
        del t
    gate = cbam.ChannelGate.gate((total / (h * w)).to(hidden.dtype), peak)

    def tail(t):
        return last(cbam.SpatialGate(t * gate) + t)
    return map_tiles(tail, [hidden], plan, conv_reach(cbam.SpatialGate))


@tiled_forward(CrossCoupling)
def cross_coupling(cpl: CrossCoupling, plan: TilePlan, z, logdet, ft, reverse: bool = False):
    """The four stages of CrossCoupling (see its docstring) with each subnet tiled by :func:`cbam_subnet`."""
    if plan.fits(*z.shape[-2:]):
        return CrossCoupling.forward(cpl, z, logdet, ft, reverse)
    injectors = {0: cpl.fFeatures_1, 2: cpl.fFeatures_2}
    for i in ((3, 2, 1, 0) if reverse else (0, 1, 2, 3)):
        if i in injectors:
            t, s = affine_params(cbam_subnet(injectors[i].model, [ft], plan), cpl.eps)
            z = _affine(z, t, s, reverse)
            continue
        net, target = (cpl.fAffine_1, 1) if i == 1 else (cpl.fAffine_2, 0)
        halves = list(split_half(z))
        t, s = affine_params(cbam_subnet(net.model, [halves[1 - target], ft], plan), cpl.eps)
        halves[target] = _affine(halves[target], t, s, reverse)
        z = torch.cat(halves, 1)
    return z, _nan(logdet)


# ------------------------------------------------------------------------------------------------ GLTG

@tiled_forward(CSN)
def csn(m: CSN, plan: TilePlan, z, logdet, ft, reverse: bool = False):
    """CSN with its row and column means gathered from the tiles (the head is per pixel: no halo)."""
    b, _, h, w = z.shape
    if plan.fits(h, w):
        return CSN.forward(m, z, logdet, ft, reverse)
    z1 = split_half(z)[0]
    rows = cols = None
    for win in plan.windows(h, w):
        f = m.features(z1[win.core], ft[win.core]).float()
        if rows is None:
            rows = f.new_zeros(b, f.shape[1], h, 1)
            cols = f.new_zeros(b, f.shape[1], 1, w)
        rows[:, :, win.y0:win.y1] += f.sum(3, keepdim=True)
        cols[..., win.x0:win.x1] += f.sum(2, keepdim=True)
        del f
    dtype = m.head[0].weight.dtype
    return CSN.apply_map(z, logdet, m.map_from_means((rows / w).to(dtype), (cols / h).to(dtype)), reverse)


def nn_f_scan(model, inputs, plan: TilePlan):
    """GLTG's NN_F ``model`` (ActNormConv 1x1 -> GELU -> ActNormConv 1x1 -> GELU -> SCAN -> Conv2dZeros 1x1) on the
    concatenation of ``inputs``, with SCAN's row and column pools gathered from the tiles (see the module doc)."""
    b = inputs[0].shape[0]
    h, w = inputs[0].shape[-2:]
    scan, last = model[4], model[5]
    g1, g2, g3 = scan.ChannelGate_wh0, scan.ChannelGate_wh, scan.ChannelGate_wh1

    def head(*ts):
        t = torch.cat(ts, 1)
        for layer in list(model)[:4]:
            t = layer(t)
        return t

    # pass 1: x1 = gate1(head(.)); its mean over H (per column) and max over W (per row)
    x1 = col_sum = row_max = None
    for win in plan.windows(h, w, conv_reach(model[0], model[2], g1)):
        t = g1(head(*[x[win.crop] for x in inputs]))[win.core_in_crop]
        if x1 is None:
            x1 = empty_map(t, t.shape[1], h, w)
            col_sum = t.new_zeros(b, t.shape[1], 1, w, dtype=torch.float32)
            row_max = t.new_full((b, t.shape[1], h, 1), float("-inf"))
        x1[win.core] = t
        col_sum[..., win.x0:win.x1] += t.float().sum(2, keepdim=True)
        rm = row_max[:, :, win.y0:win.y1]
        rm.copy_(torch.maximum(rm, t.amax(3, keepdim=True)))
        del t
    ga, gb = g2.pooled_gates((col_sum / h).to(x1.dtype), row_max)
    # pass 2: x2 = x1 * (ga + gb) in place; its max over H (per column) and mean over W (per row)
    c = x1.shape[1]
    col_max = x1.new_full((b, c, 1, w), float("-inf"))
    row_sum = x1.new_zeros(b, c, h, 1, dtype=torch.float32)
    for win in plan.windows(h, w):
        t = x1[win.core] * (ga[..., win.x0:win.x1] + gb[:, :, win.y0:win.y1])
        x1[win.core] = t
        cm = col_max[..., win.x0:win.x1]
        cm.copy_(torch.maximum(cm, t.amax(2, keepdim=True)))
        row_sum[:, :, win.y0:win.y1] += t.float().sum(3, keepdim=True)
        del t
    ga, gb = g3.pooled_gates(col_max, (row_sum / w).to(x1.dtype))
    # pass 3: SCAN output = x2 * (ga + gb) + head(.), then the output conv (all per pixel: no halo)
    out = None
    for win in plan.windows(h, w):
        gate = ga[..., win.x0:win.x1] + gb[:, :, win.y0:win.y1]
        t = last(x1[win.core] * gate + head(*[x[win.core] for x in inputs]))
        if out is None:
            out = empty_map(t, t.shape[1], h, w)
        out[win.core] = t
        del t
    return out


@tiled_forward(AFlowCoupling)
def aflow_coupling(cpl: AFlowCoupling, plan: TilePlan, z, logdet, ft, reverse: bool = False):
    if plan.fits(*z.shape[-2:]):
        return AFlowCoupling.forward(cpl, z, logdet, ft, reverse)
    z1, z2 = split_half(z)
    shift, scale = affine_params(nn_f_scan(cpl.fAffine.model, [z1, ft], plan), cpl.eps)
    return torch.cat([z1, z2 / scale - shift if reverse else (z2 + shift) * scale], 1), _nan(logdet)
