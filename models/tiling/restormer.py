"""Tiled forwards of the Restormer-family blocks (GLTG, ZMAR, and MSFormer's global branch).

Three kinds of operation occur in these blocks:

- local ones (LayerNorm, 1x1 and 3x3 convolutions, GELU gates): tiles with a halo of their reach;
- MDTA, the channel attention: its d x d attention matrix is a softmax of the Gram matrix q k^T and the norms of
  q and k, all sums over every pixel. Pass 1 runs the tiles (halo 1, the depthwise conv) and adds up those sums
  over each tile's core only, keeping v; pass 2 applies the attention, folded into the output projection, per tile;
- the 4x4 patch-grid attentions (ZMAR's zero-element mask attention, GLTG's Attention_intra): the image is cut
  into a 4x4 grid of large patches and pixel (i, j) of one patch is mixed with pixel (i, j) of the other 15. They
  are tiled over the in-patch coordinates: a tile is the same (i, j) rectangle in all 16 patches, whose 16 crops
  (each with a halo) form a small image with the same 4x4 structure. GLTG's per-channel 16x16 attention is again
  a softmax of sums over every in-patch position: pass 1 adds them up tile by tile, pass 2 mixes.

Every block is therefore exact, one block after another: its input and output are full maps, its intermediates
exist one tile at a time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..encoders import gltg_restormer, zmar_restormer
from ..encoders.restormer_blocks import TransformerBlock, attention_from_stats, channel_attention_stats
from ..encoders.restormer_unet import PATCH_GRID, pad_to_multiple
from .core import TilePlan, conv_reach, crop_span, empty_map, map_tiles_inplace, spans, tiled_forward


# ------------------------------------------------------------------------------------------------ shared passes

def mdta_residual(attn, norm, x: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """x + attn(norm(x)) for an MDTA ``attn`` (restormer_blocks.Attention), in two passes over the tiles."""
    b, c, h, w = x.shape
    heads = attn.num_heads
    shape = (b, heads, c // heads, -1)
    gram = q_sq = k_sq = v_map = None
    for win in plan.windows(h, w, conv_reach(attn.qkv_dwconv)):
        q, k, v = (t[win.core_in_crop] for t in attn.qkv_maps(norm(x[win.crop])))
        # The sums over pixels in float32 whatever the compute dtype (bf16 would drop the small terms).
        stats = channel_attention_stats(q.reshape(shape).float(), k.reshape(shape).float())
        gram, q_sq, k_sq = stats if gram is None else (gram + stats[0], q_sq + stats[1], k_sq + stats[2])
        if v_map is None:
            v_map = empty_map(x, c, h, w, dtype=v.dtype)
        v_map[win.core] = v
        del q, k, v
    mix = attn.mixing(attention_from_stats(gram, q_sq, k_sq, attn.temperature.float()))
    for win in plan.windows(h, w):   # v becomes the output in place: each tile reads and writes its own pixels
        v = v_map[win.core].contiguous(memory_format=torch.channels_last)
        v_map[win.core] = x[win.core] + attn.project(v, mix)
    return v_map


def local_residual(fn, x: torch.Tensor, halo: int, plan: TilePlan) -> torch.Tensor:
    """x + fn(x) tile by tile, for a local fn reaching ``halo`` pixels, in x's memory (x is a map made by the
    block's previous pass, never the block's input)."""
    return map_tiles_inplace(lambda t: t + fn(t), x, plan, halo)


# ------------------------------------------------------------------------------------------------ patch grid

def _cells(hp: int, wp: int, plan: TilePlan, halo: int):
    """In-patch rectangles (i0, i1, j0, j1): each tile holds 16 of them (one per patch), about tile^2 pixels; and
    the crop size of their rectangles."""
    side = max(1, plan.tile // PATCH_GRID)
    rows, cols = spans(hp // PATCH_GRID, side), spans(wp // PATCH_GRID, side)
    size = (max(b - a for a, b in rows) + 2 * halo, max(b - a for a, b in cols) + 2 * halo)
    return [(i0, i1, j0, j1) for i0, i1 in rows for j0, j1 in cols], size


def _rects(hp: int, wp: int, cell):
    """The 16 rectangles of a cell: (patch row P, patch column Q, rows slice, cols slice) in the padded map."""
    i0, i1, j0, j1 = cell
    hb, wb = hp // PATCH_GRID, wp // PATCH_GRID     # the map is padded to a multiple of the grid
    for p in range(PATCH_GRID):
        for q in range(PATCH_GRID):
            yield p, q, slice(p * hb + i0, p * hb + i1), slice(q * wb + j0, q * wb + j1)


def gather_cell(fn, xp: torch.Tensor, cell, halo: int, size: tuple[int, int]) -> torch.Tensor:
    """fn evaluated on the 16 rectangles of ``cell`` (each cropped with ``halo`` from the padded map xp, crops of
    one ``size`` as in core.crop_span), their cores assembled into one (B, C', 4 n_i, 4 n_j) image with the 4x4
    patch structure."""
    hp, wp = xp.shape[-2:]
    i0, i1, j0, j1 = cell
    ni, nj = i1 - i0, j1 - j0
    out = None
    for p, q, rows, cols in _rects(hp, wp, cell):
        r0, r1 = crop_span(rows.start, rows.stop, halo, size[0], hp)
        c0, c1 = crop_span(cols.start, cols.stop, halo, size[1], wp)
        res = fn(xp[..., r0:r1, c0:c1])[..., rows.start - r0:rows.start - r0 + ni, cols.start - c0:cols.start - c0 + nj]
        if out is None:
            out = empty_map(res, res.shape[1], PATCH_GRID * ni, PATCH_GRID * nj)
        out[..., p * ni:(p + 1) * ni, q * nj:(q + 1) * nj] = res
    return out


def scatter_cell_residual(out: torch.Tensor, x: torch.Tensor, sub: torch.Tensor, hp: int, wp: int, cell):
    """out[rect] = x[rect] + sub's part of each of the 16 rectangles, clipped to the unpadded map."""
    h, w = x.shape[-2:]
    i0, i1, j0, j1 = cell
    ni, nj = i1 - i0, j1 - j0
    for p, q, rows, cols in _rects(hp, wp, cell):
        r1, c1 = min(rows.stop, h), min(cols.stop, w)
        if r1 <= rows.start or c1 <= cols.start:
            continue
        part = sub[..., p * ni:p * ni + r1 - rows.start, q * nj:q * nj + c1 - cols.start]
        idx = (..., slice(rows.start, r1), slice(cols.start, c1))
        out[idx] = x[idx] + part


def zmar_mask_residual(mask, norm, x: torch.Tensor, attn_map: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """x + mask(norm(x), attn_map) for ZMAR's zero-element mask attention (zmar_restormer.Mask), tiled over the
    patch grid: v = conv3x3(norm(pad4(x))) per rectangle, mixed across the 16 patches by the 16x16 map."""
    b, c, h, w = x.shape
    xp = pad_to_multiple(x)       # reflect padding commutes with the per-pixel LayerNorm
    hp, wp = xp.shape[-2:]
    weight = mask.value_weight()
    out = torch.empty_like(x)
    cells, size = _cells(hp, wp, plan, 1)
    for cell in cells:
        v = gather_cell(lambda t: F.conv2d(norm(t), weight, padding=1), xp, cell, 1, size)
        ph, pw = v.shape[-2:]
        mixed = zmar_restormer.from_patches(torch.bmm(attn_map.to(v.dtype), zmar_restormer.to_patches(v)),
                                            c, ph, pw)
        scatter_cell_residual(out, x, mask.project_out(mixed), hp, wp, cell)
    return out


def _split_conv(conv, x, part: slice, dw: bool):
    """The output channels ``part`` of ``conv`` (a 1x1 conv, or a depthwise conv when dw) evaluated alone."""
    weight = conv.weight[part]
    bias = conv.bias[part] if conv.bias is not None else None
    return F.conv2d(x, weight, bias, padding=conv.padding, groups=weight.shape[0] if dw else 1)


def gltg_intra_residual(ai, norm, x: torch.Tensor, mask_gram: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """x + ai(norm(x), mask_gram) for GLTG's Attention_intra (gltg_restormer.AttentionIntra), tiled over the patch
    grid: pass 1 sums q k^T and |q|^2, |k|^2 over the in-patch positions (q, k only), pass 2 mixes v."""
    b, c, h, w = x.shape
    n = ai.num_heads
    xp = pad_to_multiple(x)
    hp, wp = xp.shape[-2:]
    halo = conv_reach(ai.qkv_dwconv)
    qk, vv = slice(0, 2 * c), slice(2 * c, 3 * c)

    def qk_maps(t):
        return _split_conv(ai.qkv_dwconv, _split_conv(ai.qkv, norm(t), qk, False), qk, True)

    def v_map(t):
        return _split_conv(ai.qkv_dwconv, _split_conv(ai.qkv, norm(t), vv, False), vv, True)

    gram = q_sq = k_sq = None
    cells, size = _cells(hp, wp, plan, halo)
    for cell in cells:
        q, k = gather_cell(qk_maps, xp, cell, halo, size).chunk(2, dim=1)
        q = gltg_restormer.to_patches(q, n).float()   # (B, heads, d, 16, pixels); sums in float32
        k = gltg_restormer.to_patches(k, n).float()
        g = q @ k.transpose(-2, -1)
        qs, ks = q.pow(2).sum(-1), k.pow(2).sum(-1)
        gram, q_sq, k_sq = (g, qs, ks) if gram is None else (gram + g, q_sq + qs, k_sq + ks)
        del q, k
    temperature = ai.temperature.float()   # (heads, 1, 1, 1): broadcasts over (B, heads, d, 16, 16)
    nq, nk = q_sq.sqrt().clamp_min(1e-12), k_sq.sqrt().clamp_min(1e-12)
    attn = torch.softmax(gram / (nq.unsqueeze(-1) * nk.unsqueeze(-2)) * temperature, dim=-1)
    attn = torch.softmax(attn + ai.get_attn_m(mask_gram).float(), dim=-1)
    out = torch.empty_like(x)
    for cell in cells:
        v = gather_cell(v_map, xp, cell, halo, size)
        ph, pw = v.shape[-2:]
        mixed = gltg_restormer.from_patches(attn.to(v.dtype) @ gltg_restormer.to_patches(v, n), ph, pw)
        scatter_cell_residual(out, x, ai.project_out(mixed), hp, wp, cell)
    return out


# ------------------------------------------------------------------------------------------------ blocks

@tiled_forward(TransformerBlock)
def transformer_block(blk: TransformerBlock, plan: TilePlan, x):
    """x + MDTA(LN(x)), then + GDFN(LN(.))."""
    if plan.fits(*x.shape[-2:]):
        return TransformerBlock.forward(blk, x)
    x = mdta_residual(blk.attn, blk.norm1, x, plan)
    return local_residual(lambda t: blk.ffn(blk.norm2(t)), x, conv_reach(blk.ffn.dwconv), plan)


@tiled_forward(zmar_restormer.TransformerBlockWithMask)
def zmar_block(blk, plan: TilePlan, x, attn_map):
    """x + ZMA(LN1(x)), + MDTA(LN1(.)), + GDFN(LN2(.))."""
    if plan.fits(*x.shape[-2:]):
        return zmar_restormer.TransformerBlockWithMask.forward(blk, x, attn_map)
    x = zmar_mask_residual(blk.mask, blk.norm1, x, attn_map, plan)
    x = mdta_residual(blk.attn, blk.norm1, x, plan)
    return local_residual(lambda t: blk.ffn(blk.norm2(t)), x, conv_reach(blk.ffn.dwconv), plan)


@tiled_forward(gltg_restormer.TransformerBlockWithMask)
def gltg_block(blk, plan: TilePlan, x, mask_gram):
    """x + MDTA(LN1(x)), + Attention_intra(LN2(.)), + FeedForward_new(LN3(.))."""
    if plan.fits(*x.shape[-2:]):
        return gltg_restormer.TransformerBlockWithMask.forward(blk, x, mask_gram)
    x = mdta_residual(blk.attn, blk.norm1, x, plan)
    x = gltg_intra_residual(blk.attn_intra, blk.norm2, x, mask_gram, plan)
    ffn = blk.ffn_new
    halo = conv_reach(ffn.dwconv) + conv_reach(ffn.c31, ffn.c32, ffn.c33)
    return local_residual(lambda t: ffn(blk.norm3(t)), x, halo, plan)
