"""Tiles of the grid x grid patch-grid attentions (ZMAR's mask attention, GLTG's Attention_intra).

The map is cut into a grid x grid array of large patches and pixel (i, j) of one patch is mixed with pixel (i, j)
of every other patch. A tile is therefore a *cell*: the same in-patch rectangle in all grid^2 patches, whose crops
(each with a halo) form a small image with the same patch structure; the blocks' own steps run on it.
"""
from __future__ import annotations

from typing import Callable

import torch

from .core import TilePlan, crop_span, empty_map, spans


def cells(hp: int, wp: int, plan: TilePlan, halo: int, grid: int):
    """In-patch rectangles (i0, i1, j0, j1) of a padded hp x wp map, each cell about tile^2 pixels over its grid^2
    rectangles; and the crop size of one rectangle."""
    side = max(1, plan.tile // grid)
    rows, cols = spans(hp // grid, side), spans(wp // grid, side)
    size = (max(b - a for a, b in rows) + 2 * halo, max(b - a for a, b in cols) + 2 * halo)
    return [(i0, i1, j0, j1) for i0, i1 in rows for j0, j1 in cols], size


def _rects(hp: int, wp: int, cell, grid: int):
    """The grid^2 rectangles of a cell: (patch row P, patch column Q, rows slice, cols slice) in the padded map."""
    i0, i1, j0, j1 = cell
    hb, wb = hp // grid, wp // grid
    for p in range(grid):
        for q in range(grid):
            yield p, q, slice(p * hb + i0, p * hb + i1), slice(q * wb + j0, q * wb + j1)


def gather_cell(fn: Callable, xp: torch.Tensor, cell, halo: int, size: tuple[int, int], grid: int) -> torch.Tensor:
    """fn evaluated on the rectangles of ``cell`` (each cropped with ``halo`` from the padded map xp, crops of one
    ``size`` as in core.crop_span), their cores assembled into one (B, C', grid n_i, grid n_j) image."""
    hp, wp = xp.shape[-2:]
    i0, i1, j0, j1 = cell
    ni, nj = i1 - i0, j1 - j0
    out = None
    for p, q, rows, cols in _rects(hp, wp, cell, grid):
        r0, r1 = crop_span(rows.start, rows.stop, halo, size[0], hp)
        c0, c1 = crop_span(cols.start, cols.stop, halo, size[1], wp)
        res = fn(xp[..., r0:r1, c0:c1])[..., rows.start - r0:rows.start - r0 + ni, cols.start - c0:cols.start - c0 + nj]
        if out is None:
            out = empty_map(res, res.shape[1], grid * ni, grid * nj)
        out[..., p * ni:(p + 1) * ni, q * nj:(q + 1) * nj] = res
    return out


def scatter_cell_residual(out: torch.Tensor, x: torch.Tensor, sub: torch.Tensor, hp: int, wp: int, cell, grid: int):
    """out[rect] = x[rect] + sub's part of each rectangle of ``cell``, clipped to the unpadded map."""
    h, w = x.shape[-2:]
    i0, i1, j0, j1 = cell
    ni, nj = i1 - i0, j1 - j0
    for p, q, rows, cols in _rects(hp, wp, cell, grid):
        r1, c1 = min(rows.stop, h), min(cols.stop, w)
        if r1 <= rows.start or c1 <= cols.start:
            continue
        part = sub[..., p * ni:p * ni + r1 - rows.start, q * nj:q * nj + c1 - cols.start]
        idx = (..., slice(rows.start, r1), slice(cols.start, c1))
        out[idx] = x[idx] + part
