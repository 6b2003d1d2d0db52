"""Tiled forward of UPT-Flow's LeWin block (MSFormer's local branch).

The window attention is local to each window (the cyclic shift included: windows are gathered by index), so it
runs on chunks of windows; the LeFF is local (halo: its depthwise conv) except for the ECA gate, a mean over the
whole map: pass 1 keeps the ungated LeFF output and sums it, then the gate is applied in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..encoders.lewin import LeWinLayer, LeWinTransformerBlock, shift_region_mask, window_order
from .core import TilePlan, conv_reach, empty_map, tiled_forward


@tiled_forward(LeWinTransformerBlock)
def lewin_block(blk: LeWinTransformerBlock, plan: TilePlan, x, zmap):
    """x, zmap: (B, H, W, C) as LeWinTransformerBlock.forward; returns (B, H, W, C) contiguous."""
    b, h, w, c = x.shape
    if plan.fits(h, w):
        return LeWinTransformerBlock.forward(blk, x, zmap)
    ws = blk.win_size
    pad_b, pad_r = (-h) % ws, (-w) % ws
    if pad_b or pad_r:     # zero padding before the LayerNorm, as the block does
        x_p, zmap = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)), F.pad(zmap, (0, 0, 0, pad_r, 0, pad_b))
    else:
        x_p = x
    hp, wp = h + pad_b, w + pad_r
    n, shift = ws * ws, blk.shift_size
    xf, zf = x_p.reshape(b, hp * wp, c), zmap.reshape(b, hp * wp, c)
    per = max(1, plan.tile * plan.tile // n)      # windows per chunk: about one tile of pixels
    n_win = hp * wp // n
    out = None
    for w0 in range(0, n_win, per):
        # the chunk's gather index and shift mask, built per chunk (the full-size ones would cost 8 + 100 bytes per
        # pixel and block for win 5; the full-frame forward caches them)
        w1 = min(n_win, w0 + per)
        idx = window_order(hp, wp, ws, shift, x.device, w0, w1)
        mask = shift_region_mask(hp, wp, ws, shift, x.device, w0, w1) if shift else None
        att = blk.attn(blk.norm1(xf.index_select(1, idx)).view(-1, n, c), zf.index_select(1, idx).view(-1, n, c),
                       b, mask)
        if out is None:
            out = att.new_empty(b, hp * wp, c)
        out.index_copy_(1, idx, att.view(b, -1, c))     # back to the tokens' own positions
        del att
    del xf, zf, x_p
    out = blk.drop_path(out.view(b, hp, wp, c))
    if hp == h and wp == w:
        y = out.add_(x)           # the residual in the attention output's own memory
    else:
        y = (out[:, :h, :w] + x).contiguous()
    del out
    # LeFF: y + ECA(ungated(LN(y))); the ECA gate needs the mean of the ungated output over the whole map.
    y_map = y.permute(0, 3, 1, 2)        # NCHW view of channels-last memory
    mlp = blk.mlp
    m = total = None
    for win in plan.windows(h, w, conv_reach(mlp.dwconv)):
        t = mlp.ungated(blk.norm2(y_map[win.crop].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))[win.core_in_crop]
        if m is None:
            m = empty_map(y_map, t.shape[1], h, w, dtype=t.dtype)
        m[win.core] = t
        s = t.float().sum((2, 3))
        total = s if total is None else total + s
        del t
    m.mul_(mlp.eca.gate((total / (h * w)).to(m.dtype)))
    return y.add_(blk.drop_path(m.permute(0, 2, 3, 1)))


@tiled_forward(LeWinLayer)
def lewin_layer(layer: LeWinLayer, plan: TilePlan, x, zmap):
    """LeWinLayer.forward without making the map contiguous: the tiled blocks gather windows from any layout, and
    MSFormer's level-1 map is one channel expanded to dim channels (a copy would cost dim floats per pixel)."""
    if plan.fits(*x.shape[-2:]):
        return LeWinLayer.forward(layer, x, zmap)
    x, zmap = x.permute(0, 2, 3, 1), zmap.permute(0, 2, 3, 1)
    for blk in layer.blocks:
        x = blk(x, zmap)
    return x.permute(0, 3, 1, 2)
