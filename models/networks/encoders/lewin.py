"""UPT-Flow's local branch: Uformer-style LeWin blocks whose window attention takes Q and K from the unbalanced-point
map and V from the image features (spec §4.2).

Parameter/buffer names follow the official checkpoints (`blocks.<i>.{norm1,attn,norm2,mlp}`,
`attn.{relative_position_bias_table,relative_position_index,temperature,qkv.to_q,qkv.to_k,qkv.to_v,proj}`,
`mlp.{conv1,dwconv.0,conv2,eca.conv}`).

Attention runs through ``F.scaled_dot_product_attention``: the per-head temperature and d_h^-1/2 are folded into q,
and the relative-position bias plus the shifted-window region mask (-100 between regions) form ``attn_mask``.
The relative-position index is a registered buffer (as in checkpoints); the shift masks and the window gather
indices are cached per padded size and device, outside the state dict.

Layout: a LeWin layer takes NCHW maps but works channels-last inside. The cyclic shift plus window partition is
one ``index_select`` over the flattened map, and the per-window depthwise q/k/v convolutions see each window as a
channels-last image (a view, no copy), which oneDNN runs several times faster than (B·nW, C, w, w) copies.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...tiling.core import IN_TILED, LOCAL, TILED, TilePlan, conv_reach, empty_map

SHIFT_MASK_VALUE = -100.0


def relative_position_index(win: int) -> torch.Tensor:
    """(win², win²) index into the ((2·win − 1)², heads) bias table for every (query, key) pair of a window.

    Tokens are numbered row-major inside the window; the index of (i, j) is (dy + win − 1)·(2·win − 1) + (dx + win − 1)
    with (dy, dx) = position(i) − position(j).
    """
    ys, xs = torch.meshgrid(torch.arange(win), torch.arange(win), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + (win - 1)
    dx = xs[:, None] - xs[None, :] + (win - 1)
    return dy * (2 * win - 1) + dx


def win_size_from_table_rows(rows: int) -> int | None:
    """Window size w with (2w − 1)² == rows, or None when rows is not such a square."""
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0:
        return None
    return (side + 1) // 2


def _window_positions(hp: int, wp: int, win: int, first: int, last: int | None, device):
    """Row and column, in the shifted map, of every token of windows [first, last) (windows row-major, tokens
    row-major inside a window): two (n, win, win) tensors."""
    last = (hp // win) * (wp // win) if last is None else last
    k = torch.arange(first, last, device=device)
    i = torch.arange(win, device=device)
    rows = (k // (wp // win))[:, None] * win + i
    cols = (k % (wp // win))[:, None] * win + i
    return rows[:, :, None].expand(-1, -1, win), cols[:, None, :].expand(-1, win, -1)


def shift_region_mask(hp: int, wp: int, win: int, shift: int, device=None, first: int = 0,
                      last: int | None = None) -> torch.Tensor:
    """(nW, 1, win², win²) additive mask of a cyclically shifted (hp x wp) map: 0 inside a region, -100 across.

    Regions are the 3x3 bands [0, hp − win), [hp − win, hp − shift), [hp − shift, hp) (same for the width); the
    windows are numbered row-major over the shifted map, as the window partition below. ``first``/``last`` select
    the windows [first, last) (default: all).
    """
    rows, cols = _window_positions(hp, wp, win, first, last, device)

    def band(pos, n):
        return (pos >= n - win).long() + (pos >= n - shift).long()

    region = (band(rows, hp) * 3 + band(cols, wp)).reshape(rows.shape[0], win * win)
    diff = region[:, None, :] != region[:, :, None]                           # (nW, N, N): [i, j] key j vs query i
    mask = torch.zeros(diff.shape, device=device)
    mask.masked_fill_(diff, SHIFT_MASK_VALUE)
    return mask.unsqueeze(1)


def window_order(hp: int, wp: int, win: int, shift: int = 0, device=None, first: int = 0,
                 last: int | None = None) -> torch.Tensor:
    """Flat (row-major) source index of every token of the map cyclically shifted by −shift, listed window by window
    (windows row-major, tokens row-major inside a window); ``first``/``last`` select the windows [first, last).

    ``x.reshape(B, hp·wp, C).index_select(1, order)`` therefore does the cyclic shift and the window partition in
    one gather; ``index_select(1, argsort(order))`` undoes both.
    """
    rows, cols = _window_positions(hp, wp, win, first, last, device)
    return (((rows + shift) % hp) * wp + (cols + shift) % wp).reshape(-1)


class ECA(nn.Module):
    """Efficient channel attention: x * sigmoid(conv1d_k(global average of x over H, W)) (`conv`, no bias)."""

    tiling = IN_TILED   # LeWinTransformerBlock.tiled_forward gathers the mean and applies gate()

    def __init__(self, channels: int, k_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k_size, padding=(k_size - 1) // 2, bias=False)

    def gate(self, mean):
        """(B, C, 1, 1) channel weights from the (B, C) spatial mean."""
        return torch.sigmoid(self.conv(mean.unsqueeze(1))).transpose(1, 2).unsqueeze(-1)

    def forward(self, x):
        return x * self.gate(x.mean(dim=(2, 3)))


class LeFF(nn.Module):
    """Locally-enhanced FFN on NCHW maps: 1x1 C->hidden, depthwise 3x3 + GELU, 1x1 hidden->C, ECA.

    (The official UPT variant has no activation after the first 1x1.)
    """

    tiling = IN_TILED   # LeWinTransformerBlock.tiled_forward runs ungated() per tile, then the ECA gate

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU())
        self.conv2 = nn.Conv2d(hidden, dim, 1)
        self.eca = ECA(dim)

    def ungated(self, x):
        """Everything but the ECA gate (which needs the mean over the whole map)."""
        return self.conv2(self.dwconv(self.conv1(x)))

    def forward(self, x):
        return self.eca(self.ungated(x))


class ConvProjection(nn.Module):
    """Depthwise 3x3 projections applied per window (zero padding at window borders): q, k from the map, v from x."""

    tiling = LOCAL   # within one window

    def __init__(self, dim: int):
        super().__init__()
        self.to_q = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.to_k = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.to_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x_tok, zmap_tok, win: int):
        """(B', w², C) window tokens -> q, k, v as (B', w², C).

        The windows are convolved as channels-last images (a permuted view, no copy): the depthwise kernels run
        several times faster on that layout than on (B', C, w, w) copies.
        """
        bw, n, c = x_tok.shape

        def conv(f, t):
            y = f(t.view(bw, win, win, c).permute(0, 3, 1, 2))
            return y.permute(0, 2, 3, 1).reshape(bw, n, c)

        return conv(self.to_q, zmap_tok), conv(self.to_k, zmap_tok), conv(self.to_v, x_tok)


class LinearProjection(nn.Module):
    """Per-token linear projections (official `token_projection: linear`): v from x, [q, k] from the map."""

    tiling = LOCAL   # within one window

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.to_v = nn.Linear(dim, dim, bias=bias)
        self.to_qk = nn.Linear(dim, 2 * dim, bias=False)

    def forward(self, x_tok, zmap_tok, win: int):
        q, k = self.to_qk(zmap_tok).chunk(2, dim=-1)
        return q, k, self.to_v(x_tok)


class WindowAttention(nn.Module):
    """softmax((q d_h^-1/2 · τ_h) kᵀ + B_rel [+ M_shift]) v, then a linear projection."""

    tiling = LOCAL   # within one window

    def __init__(self, dim: int, win_size: int, num_heads: int, token_projection: str = "conv"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"window attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.win_size, self.num_heads = dim, win_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * win_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(win_size))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        if token_projection == "conv":
            self.qkv = ConvProjection(dim)
        elif token_projection == "linear":
            self.qkv = LinearProjection(dim)
        else:
            raise ValueError(f"token_projection must be 'conv' or 'linear', got {token_projection!r}")
        self.proj = nn.Linear(dim, dim)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))

    def relative_bias(self) -> torch.Tensor:
        """(heads, N, N) bias gathered from the table."""
        n = self.win_size * self.win_size
        return self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def attn_mask(self, shift_mask: torch.Tensor | None, batch: int, dtype) -> torch.Tensor:
        """Relative-position bias (+ shift mask) as a 4-D (batch|1, heads, N, N) SDPA mask; a 4-D mask keeps the
        fused kernels eligible (3-D or 5-D ones do not)."""
        mask = self.relative_bias().unsqueeze(0)                              # (1, h, N, N)
        if shift_mask is not None:
            mask = mask + shift_mask                                          # (nW, h, N, N), per window
            if batch > 1:
                mask = mask.repeat(batch, 1, 1, 1)
        return mask.to(dtype)

    def forward(self, x_tok, zmap_tok, batch: int, shift_mask: torch.Tensor | None = None):
        """x_tok, zmap_tok: (B·nW, w², C) window tokens (B-major). Returns (B·nW, w², C)."""
        q, k, v = self.qkv(x_tok, zmap_tok, self.win_size)                    # (B·nW, N, C)
        bw, n, c = q.shape
        h = self.num_heads
        d = c // h
        q = q.view(bw, n, h, d).transpose(1, 2) * (self.temperature * self.scale).to(q.dtype)
        k = k.view(bw, n, h, d).transpose(1, 2)
        v = v.view(bw, n, h, d).transpose(1, 2)                               # (B·nW, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attn_mask(shift_mask, batch, q.dtype),
                                             scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))               # channel = head * d + j


def _drop_path(rate: float) -> nn.Module:
    """torchvision's StochasticDepth ("row") for a non-zero rate. Imported only then: torchvision's import costs
    about 170 MB of RSS and over a second, which inference (rate 0, where the layer is an identity) need not pay."""
    if rate == 0:
        return nn.Identity()
    from torchvision.ops import StochasticDepth
    return StochasticDepth(rate, mode="row")


class LeWinTransformerBlock(nn.Module):
    """x + Attn(LN(x), map) then + LeFF(LN(.)), on channels-last (B, H, W, C) maps; odd blocks in a layer use
    shifted windows.

    Like the official block: x and the map are zero-padded right/bottom to a multiple of the window *before* the
    LayerNorm (padded tokens take the LN bias and take part in attention), the map is not normalised, and the
    result is cropped back. The cyclic shift and window partition (and their inverse) are single gathers with an
    index cached per padded size, as is the shift mask.
    """

    activation_checkpoint = True  # unit of train.activation_checkpointing
    tiling = TILED

    def __init__(self, dim: int, num_heads: int, win_size: int, shift_size: int = 0, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, token_projection: str = "conv"):
        super().__init__()
        if not 0 <= shift_size < win_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, win_size={win_size})")
        self.win_size, self.shift_size = win_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, win_size, num_heads, token_projection)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))
        self._cache = {}

    def _windows(self, hp: int, wp: int, device):
        """(order, inverse order, shift mask or None) for a padded hp x wp map, built once per size and device."""
        key = (hp, wp, str(device))
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 8:
                self._cache.clear()
            order = window_order(hp, wp, self.win_size, self.shift_size, device)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=device)
            mask = shift_region_mask(hp, wp, self.win_size, self.shift_size, device) if self.shift_size else None
            hit = self._cache[key] = (order, inverse, mask)
        return hit

    def _pad(self, x, zmap):
        """x and the map zero-padded right/bottom to a multiple of the window (before the LayerNorm)."""
        h, w = x.shape[1:3]
        pad_b, pad_r = (-h) % self.win_size, (-w) % self.win_size
        if pad_b or pad_r:
            return F.pad(x, (0, 0, 0, pad_r, 0, pad_b)), F.pad(zmap, (0, 0, 0, pad_r, 0, pad_b))
        return x, zmap

    def forward(self, x, zmap):
        """x: (B, H, W, C) (any strides); zmap: (B, H, W, C) contiguous. Returns contiguous (B, H, W, C)."""
        b, h, w, c = x.shape
        ws = self.win_size
        xn, zmap = self._pad(x, zmap)
        hp, wp = xn.shape[1:3]
        order, inverse, mask = self._windows(hp, wp, x.device)
        xn = self.norm1(xn).reshape(b, hp * wp, c).index_select(1, order)
        zw = zmap.reshape(b, hp * wp, c).index_select(1, order)
        n = ws * ws
        out = self.attn(xn.view(-1, n, c), zw.view(-1, n, c), b, mask)
        out = out.view(b, hp * wp, c).index_select(1, inverse).view(b, hp, wp, c)
        if hp != h or wp != w:
            out = out[:, :h, :w]
        y = self.drop_path(out) + x                                           # contiguous like the first operand
        m = self.mlp(self.norm2(y).permute(0, 3, 1, 2))                       # channels-last NCHW view
        return y + self.drop_path(m.permute(0, 2, 3, 1))

    def tiled_forward(self, plan: TilePlan, x, zmap):
        """forward with the window attention on chunks of windows (about one tile of pixels each) and the LeFF
        tile by tile, the ECA mean gathered over the tiles before its gate is applied in place. Returns (B, H, W, C)
        contiguous."""
        b, h, w, c = x.shape
        if plan.fits(h, w):
            return LeWinTransformerBlock.forward(self, x, zmap)
        ws = self.win_size
        x_p, zmap = self._pad(x, zmap)
        hp, wp = x_p.shape[1:3]
        n, shift = ws * ws, self.shift_size
        xf, zf = x_p.reshape(b, hp * wp, c), zmap.reshape(b, hp * wp, c)
        per = max(1, plan.tile * plan.tile // n)      # windows per chunk: about one tile of pixels
        n_win = hp * wp // n
        out = None
        for w0 in range(0, n_win, per):
            # the chunk's gather index and shift mask, built per chunk (the full-size ones would cost 8 + 100 bytes
            # per pixel and block for win 5; forward caches them)
            w1 = min(n_win, w0 + per)
            idx = window_order(hp, wp, ws, shift, x.device, w0, w1)
            mask = shift_region_mask(hp, wp, ws, shift, x.device, w0, w1) if shift else None
            att = self.attn(self.norm1(xf.index_select(1, idx)).view(-1, n, c), zf.index_select(1, idx).view(-1, n, c),
                            b, mask)
            if out is None:
                out = att.new_empty(b, hp * wp, c)
            out.index_copy_(1, idx, att.view(b, -1, c))     # back to the tokens' own positions
            del att
        del xf, zf, x_p
        out = self.drop_path(out.view(b, hp, wp, c))
        if hp == h and wp == w:
            y = out.add_(x)           # the residual in the attention output's own memory
        else:
            y = (out[:, :h, :w] + x).contiguous()
        del out
        y_map = y.permute(0, 3, 1, 2)        # NCHW view of channels-last memory
        mlp = self.mlp
        m = total = None
        for win in plan.windows(h, w, conv_reach(mlp.dwconv)):
            t = mlp.ungated(self.norm2(y_map[win.crop].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))[win.core_in_crop]
            if m is None:
                m = empty_map(y_map, t.shape[1], h, w, dtype=t.dtype)
            m[win.core] = t
            s = t.float().sum((2, 3))
            total = s if total is None else total + s
            del t
        m.mul_(mlp.eca.gate((total / (h * w)).to(m.dtype)))
        return y.add_(self.drop_path(m.permute(0, 2, 3, 1)))


class LeWinLayer(nn.Module):
    """A stack of LeWin blocks (`blocks.<i>`, official `BasicUformerLayer`); shift win//2 on odd blocks.

    Takes and returns NCHW maps; inside, everything runs channels-last (the returned tensor is an NCHW view of
    channels-last memory).
    """

    tiling = TILED   # only to keep the map's layout; its blocks do the tiling

    def __init__(self, dim: int, depth: int, num_heads: int, win_size: int, drop_path, mlp_ratio: float = 4.0,
                 token_projection: str = "conv", shift_flag: bool = True):
        super().__init__()
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [float(drop_path)] * depth
        self.blocks = nn.ModuleList([
            LeWinTransformerBlock(dim, num_heads, win_size, (win_size // 2) if (shift_flag and i % 2) else 0,
                                  mlp_ratio, rates[i], token_projection)
            for i in range(depth)])

    def forward(self, x, zmap):
        x = x.permute(0, 2, 3, 1)
        zmap = zmap.permute(0, 2, 3, 1).contiguous()
        for blk in self.blocks:
            x = blk(x, zmap)
        return x.permute(0, 3, 1, 2)

    def tiled_forward(self, plan: TilePlan, x, zmap):
        """forward without making the map contiguous: the tiled blocks gather windows from any layout, and
        MSFormer's level-1 map is one channel expanded to dim channels (a copy would cost dim floats per pixel)."""
        if plan.fits(*x.shape[-2:]):
            return LeWinLayer.forward(self, x, zmap)
        x, zmap = x.permute(0, 2, 3, 1), zmap.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x, zmap)
        return x.permute(0, 3, 1, 2)
