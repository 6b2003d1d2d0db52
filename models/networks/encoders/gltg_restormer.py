"""GLTG-AFlow's conditional encoder: the "Global-and-Local-channel self-attention Transformer Generator" (spec 2.2).

A Restormer U-Net whose three encoder levels use ``TransformerBlockWithMask``:

    x1 = x  + Attention_inter(LN1(x))            global channel attention (Restormer MDTA)
    x2 = x1 + Attention_intra(LN2(x1), mask)     "local channel" attention over a 4x4 grid of large patches
    out = x2 + FeedForward_new(LN3(x2))          spatially gated FFN (dense 3x3 "dwconv", as the checkpoints hold)

Data flow (dim = 48 at the official size):

    lq (log low, 3 ch) -> patch_embed -> encoder_level1 (mask level 1) -> down -> encoder_level2 (level 2) -> down
    -> encoder_level3 (level 3) -> down -> latent -> reduce_chan0 = fea_up0 (H/8, 4*dim)
    -> up + skip -> decoder_level3 -> reduce_chan1 = fea_up1 (H/4, 4*dim) -> up + skip -> decoder_level2
    -> reduce_chan2 = fea_up2 (H/2, 4*dim) -> up + skip -> decoder_level1 -> refinement = cat_f (H, 2*dim)

Every ``fea_up*`` is returned with bilinear(cat_f) concatenated: 6*dim channels (288 at the official size).
The U-Net skeleton, config parsing and mask padding/resizing are shared with ZMAR-SNFlow
(``restormer_unet.MaskedRestormerUNet``); this module holds the GLTG masked block, its mask priors and the colour head.

Attention_intra: the (reflect-padded to x4) feature map is cut into a 4x4 grid of 16 large patches. Per head and per
channel, the 16 patches are the tokens and the patch's pixels are the token vector:
A_x = softmax(cos(q_i, k_j) * T). The mask prior (official ``MaskMap``, module name ``get_attn_m``) is
A_m = softmax(L2-normalise_rows(G * T_m)) where G is the raw 16x16 Gram matrix of the mask patches; it is the same for
every channel, so G is computed once per encoder level and shared by its blocks. Output: softmax(A_x + A_m) V.

Masks (``aux``, 1 or 3 channels; channel 0 is used). Two behaviours, chosen by ONE switch,
``network_G.restormer.official_compat`` (default false):

- default (correct): per-sample masks; the mask must have the input's H x W (pad it like the image). Every level
  uses ``mask > 0.2`` at that level's size (levels 2/3: bilinear resize to (H/k, W/k), then threshold), reflect-
  padded to x4 exactly like the features. Pure torch, any device.
- ``official_compat: true`` reproduces the official code bit-for-bit in behaviour (golden features): level 1 uses the
  raw mask (not binarised, not padded; it may be smaller than the padded input, as in the official test.py where it
  comes from the unpadded image); levels 2/3 take batch element 0's mask only, resize it to (W/k rows, H/k columns)
  (cv2's (width, height) argument order was swapped in the official ``downmask``), threshold at 0.2, reflect-pad to
  x4 and share it across the batch. Still pure torch (the official cv2 CPU round trip is replaced by bilinear
  interpolation, which equals cv2.INTER_LINEAR on float input). With the official test mask (divided by 255) the
  level-2/3 masks are all zero.

Official modules that never run, declared and not built (models/never_run.py; official checkpoints load, those
tensors are dropped): per masked block ``mask`` (the official ``Mask``, 22 M parameters at full size),
``conv_cat1``/``conv_cat2``, ``ffn_new.fc``, ``attn_intra.norm1``; and the colour head ``output`` +
``fine_tune_color_map`` (the GLTG prior is N(0, I) and never reads it).

Input size: H and W must be multiples of ``pad_multiple = 16`` (three 2x downsamplings, and the 4x4 patch grid at
H/4). The official test script pads with :func:`official_auto_padding` (symmetric cv2.BORDER_REFLECT, always adding
16 - H % 16 rows, i.e. 16 when H is already divisible).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.registry import ENCODER_REGISTRY
from ...never_run import declare_never_run
from ...precision import at_least_fp32, fp32_region
from ...tiling.core import FRAME, IN_TILED, LOCAL, TILED, TilePlan, conv_reach, local_residual
from ...tiling.patch_grid import cells, gather_cell, scatter_cell_residual
from .restormer_blocks import Attention, LayerNorm, attention_from_stats
from .restormer_unet import PATCH_GRID, MaskedLevel, MaskedRestormerUNet, parse_restormer_config, resize_binarise
from .restormer_unet import pad_to_multiple as pad4  # reflect-pad bottom/right to multiples of 4 (PATCH_GRID)


def gltg_config(opt: dict) -> dict:
    """Every GLTGRestormer keyword argument from ``network_G.restormer`` (constructor defaults for missing/None
    keys), validated. An unknown key is a KeyError naming it.
    """
    return parse_restormer_config(opt, GLTGRestormer)


# ------------------------------------------------------------------------------------------------ padding

def auto_padding_amounts(h: int, w: int, times: int = 16):
    """The official test.py ``auto_padding`` amounts (top, bottom, left, right).

    It always adds ``times - h % times`` rows (so 16 when h is already a multiple), split top = pad // 2,
    bottom = the rest; likewise for the columns.
    """
    ph, pw = times - h % times, times - w % times
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


def _symmetric_index(n: int, before: int, after: int, device) -> torch.Tensor:
    idx = torch.arange(-before, n + after, device=device)
    idx = torch.where(idx < 0, -idx - 1, idx)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def official_auto_padding(x: torch.Tensor, times: int = 16):
    """Pad (..., H, W) like the official test.py: cv2.BORDER_REFLECT ('fedcba|abcdef', the edge pixel repeated),
    symmetric top/bottom and left/right, amounts from :func:`auto_padding_amounts`.

    Returns ``(padded, (top, bottom, left, right))``; undo with :func:`crop_padding`. Works on any device/dtype.
    """
    h, w = x.shape[-2:]
    top, bottom, left, right = auto_padding_amounts(h, w, times)
    if max(top, bottom) > h or max(left, right) > w:
        raise ValueError(f"official_auto_padding: image {h}x{w} is too small to reflect-pad by {times}")
    x = x.index_select(-2, _symmetric_index(h, top, bottom, x.device))
    x = x.index_select(-1, _symmetric_index(w, left, right, x.device))
    return x, (top, bottom, left, right)


def crop_padding(x: torch.Tensor, pads) -> torch.Tensor:
    """Remove the (top, bottom, left, right) padding added by :func:`official_auto_padding`."""
    top, bottom, left, right = pads
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


# ------------------------------------------------------------------------------------------------ mask helpers

def to_patches(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, C/heads, 16, H*W/16): token = one cell of the 4x4 grid, pixels row-major."""
    b, c, h, w = x.shape
    g = PATCH_GRID
    x = x.view(b, heads, c // heads, g, h // g, g, w // g).permute(0, 1, 2, 3, 5, 4, 6)
    return x.reshape(b, heads, c // heads, g * g, (h // g) * (w // g))


def from_patches(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_patches`."""
    b, heads, cph = p.shape[:3]
    g = PATCH_GRID
    p = p.view(b, heads, cph, g, g, h // g, w // g).permute(0, 1, 2, 3, 5, 4, 6)
    return p.reshape(b, heads * cph, h, w)


def mask_gram(mask: torch.Tensor) -> torch.Tensor:
    """Raw Gram matrix of the 16 mask patches: (B, 1, H, W) -> (B, 1, 16, 16) (official MaskMap's q k^T)."""
    h, w = mask.shape[-2:]
    if h % PATCH_GRID or w % PATCH_GRID:
        raise ValueError(f"GLTG mask of size {h}x{w} cannot be cut into a {PATCH_GRID}x{PATCH_GRID} grid "
                         f"(the official code fails the same way); pad the mask like the image")
    # A sum over every pixel of a patch: float32 under bf16/fp16 too (models/precision.py).
    with fp32_region(mask):
        p = to_patches(at_least_fp32(mask), 1)[:, 0]   # (B, 1, 16, n)
        return p @ p.transpose(-2, -1)


# ------------------------------------------------------------------------------------------------ blocks

class UnusedMask(nn.Module):
    """The official ``Mask`` module of every masked block, which never runs (spec 2.2): the layout that
    models/conversion/flows.py drops on load and writes back for the export."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1, 1))
        self.norm1 = LayerNorm(dim, True)
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_conv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, *args, **kwargs):
        raise RuntimeError("the official GLTG `Mask` module is unused; it exists only so checkpoints load")


class MaskMap(nn.Module):
    """Mask prior of Attention_intra: A_m = softmax(L2-normalise_rows(G * T_m)), one 16x16 map per head."""

    tiling = FRAME   # on the 16x16 mask Gram matrix, never on a feature map

    def __init__(self, num_heads: int):
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1, 1))

    def forward(self, gram: torch.Tensor) -> torch.Tensor:
        """gram (B, 1, 16, 16) -> (B, heads, 1, 16, 16), broadcast over the channels of each head."""
        a = gram * self.temperature.view(1, -1, 1, 1)
        return torch.softmax(F.normalize(a, dim=-1), dim=-1).unsqueeze(2)


class AttentionIntra(nn.Module):
    """"Local channel" attention among the 16 cells of a 4x4 grid, per head and channel, with the mask prior."""

    tiling = IN_TILED   # its block's tiled_forward runs tiled_residual

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1, 1))
        declare_never_run(self, "norm1", lambda: LayerNorm(dim, True))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)
        self.get_attn_m = MaskMap(num_heads)

    def forward(self, x: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = pad4(x)
        hp, wp = xp.shape[-2:]
        q, k, v = self.qkv_dwconv(self.qkv(xp)).chunk(3, dim=1)
        n = self.num_heads
        # The cosine similarities sum over every pixel of a patch (a quarter of the image's rows and columns):
        # float32 under bf16/fp16 too (models/precision.py); only the 16x16 result is cast back for the V product.
        with fp32_region(q):
            # temperature (heads, 1, 1, 1) broadcasts over (B, heads, C/heads, 16, pixels); folded into q.
            q = F.normalize(to_patches(at_least_fp32(q), n), dim=-1) * self.temperature.float()
            k = F.normalize(to_patches(at_least_fp32(k), n), dim=-1)
            attn = self.with_mask_prior(torch.softmax(q @ k.transpose(-2, -1), dim=-1), gram)
        out = self.mix(attn, v)[..., :h, :w]
        return self.project_out(out)    # a 1x1 conv commutes with the crop

    def with_mask_prior(self, attn: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """The cell-to-cell attention (B, heads, C/heads, 16, 16) from the similarity softmax and the mask prior."""
        return torch.softmax(attn + self.get_attn_m(gram).float(), dim=-1)

    def mix(self, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The apply step: the 16 cells of v (a map with the 4x4 patch grid) mixed by attn, per channel."""
        return from_patches(attn.to(v.dtype) @ to_patches(v, self.num_heads), *v.shape[-2:])

    def _maps(self, x: torch.Tensor, part: slice) -> torch.Tensor:
        """The channels ``part`` of qkv_dwconv(qkv(x)), computed alone (the tiles need q, k and v at different
        times)."""
        def conv(m, t, dw):
            weight = m.weight[part]
            bias = m.bias[part] if m.bias is not None else None
            return F.conv2d(t, weight, bias, padding=m.padding, groups=weight.shape[0] if dw else 1)
        return conv(self.qkv_dwconv, conv(self.qkv, x, False), True)

    def tiled_residual(self, norm: nn.Module, x: torch.Tensor, gram: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """x + self(norm(x), gram) over cells of the patch grid (models/tiling/patch_grid.py): pass 1 adds up the
        cosine similarities' sums q k^T, |q|^2, |k|^2 over the cells (float32; as MDTA's attention_from_stats),
        pass 2 mixes each cell's v."""
        c = x.shape[1]
        n = self.num_heads
        xp = pad4(x)
        hp, wp = xp.shape[-2:]
        halo = conv_reach(self.qkv_dwconv)
        qk, vv = slice(0, 2 * c), slice(2 * c, 3 * c)
        sums = None
        grid_cells, size = cells(hp, wp, plan, halo, PATCH_GRID)
        for cell in grid_cells:
            q, k = gather_cell(lambda t: self._maps(norm(t), qk), xp, cell, halo, size, PATCH_GRID).chunk(2, dim=1)
            q, k = to_patches(q, n).float(), to_patches(k, n).float()   # (B, heads, d, 16, pixels)
            part = (q @ k.transpose(-2, -1), q.pow(2).sum(-1), k.pow(2).sum(-1))
            sums = part if sums is None else tuple(a + b for a, b in zip(sums, part))
            del q, k
        # temperature (heads, 1, 1, 1) broadcasts over (B, heads, d, 16, 16)
        attn = self.with_mask_prior(attention_from_stats(*sums, self.temperature.float()), gram)
        out = torch.empty_like(x)
        for cell in grid_cells:
            v = gather_cell(lambda t: self._maps(norm(t), vv), xp, cell, halo, size, PATCH_GRID)
            scatter_cell_residual(out, x, self.project_out(self.mix(attn, v)), hp, wp, cell, PATCH_GRID)
        return out


class FeedForwardNew(nn.Module):
    """Spatially gated FFN: g = sigmoid(c33(c32(c31([mean_c x1, max_c x1])))); out = proj(g * GELU(x2))."""

    tiling = LOCAL   # the mean and max are over channels, per pixel

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, bias=bias)  # dense in the official model
        self.c31 = nn.Conv2d(2, 2, 3, padding=1, bias=bias)
        self.c32 = nn.Conv2d(2, 2, 3, padding=1, bias=bias)
        self.c33 = nn.Conv2d(2, 1, 3, padding=1, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)
        declare_never_run(self, "fc", lambda: nn.Sequential(nn.Conv2d(hidden, hidden // 16, 1, bias=False), nn.ReLU(),
                                                            nn.Conv2d(hidden // 16, hidden, 1, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        pooled = torch.cat([x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)], dim=1)
        gate = torch.sigmoid(self.c33(self.c32(self.c31(pooled))))
        return self.project_out(gate * F.gelu(x2))


class TransformerBlockWithMask(nn.Module):
    """x + MDTA(LN1 x); + Attention_intra(LN2 ., mask); + FeedForward_new(LN3 .)."""

    activation_checkpoint = True  # unit of train.activation_checkpointing
    tiling = TILED

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layernorm_bias: bool):
        super().__init__()
        declare_never_run(self, "mask", lambda: UnusedMask(dim, num_heads))
        self.norm1 = LayerNorm(dim, layernorm_bias)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layernorm_bias)
        self.norm3 = LayerNorm(dim, layernorm_bias)
        self.ffn_new = FeedForwardNew(dim, ffn_expansion_factor, bias)
        self.attn_intra = AttentionIntra(dim, num_heads)
        declare_never_run(self, "conv_cat1", lambda: nn.Conv2d(2 * dim, dim, 3, padding=1, bias=True))
        declare_never_run(self, "conv_cat2", lambda: nn.Conv2d(2 * dim, dim, 3, padding=1, bias=True))

    def forward(self, x: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.attn_intra(self.norm2(x), gram)
        return x + self.ffn_new(self.norm3(x))

    def tiled_forward(self, plan: TilePlan, x: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """forward with the MDTA in two passes, Attention_intra over patch-grid cells, the FFN tile by tile."""
        if plan.fits(*x.shape[-2:]):
            return TransformerBlockWithMask.forward(self, x, gram)
        x = self.attn.tiled_residual(self.norm1, x, plan)
        x = self.attn_intra.tiled_residual(self.norm2, x, gram, plan)
        ffn = self.ffn_new
        halo = conv_reach(ffn.dwconv) + conv_reach(ffn.c31, ffn.c32, ffn.c33)
        return local_residual(lambda t: ffn(self.norm3(t)), x, halo, plan)


class GLTGMaskedLevel(MaskedLevel):
    """One encoder level (official ``TransformerBlock_1``; ``layer_stack.<i>``), every block given the level's Gram."""

    block = TransformerBlockWithMask
    tiling = FRAME


# ------------------------------------------------------------------------------------------------ encoder

@ENCODER_REGISTRY.register("GLTGRestormer")
class GLTGRestormer(MaskedRestormerUNet):
    """GLTG-AFlow's Restormer encoder (official `restormer_arch.Restormer` names). Sizes: the keyword arguments of
    :class:`MaskedRestormerUNet`, with GLTG's block counts as defaults; ``official_compat``: the mask mode (module
    docstring). ``from_options(opt)`` reads them from network_G.restormer.

    ``forward(lq, aux)``: lq (B, 3, H, W) log low image, aux (B, 1 or 3, H, W) zero-element mask in {0, 1}
    (``data.preprocess.aux_input(low01, 'gltg_mask')``, required). Returns fea_up0/1/2 (with cat_f concatenated)
    and cat_f. (The official colour head is never run and not built: the N(0, I) prior never uses it.)
    """

    aux_input = "gltg_mask"
    pad_multiple = 16
    tiling = FRAME
    masked_level = GLTGMaskedLevel
    reduce_fea_up1 = True       # fea_up1 = reduce_chan1(decoder_level3)
    color_head_in = None        # the (never-run) fine_tune_color_map reads out_channels channels

    def __init__(self, num_blocks=(2, 4, 6, 8), num_refinement_blocks: int = 2, official_compat: bool = False,
                 **sizes):
        super().__init__(num_blocks=num_blocks, num_refinement_blocks=num_refinement_blocks, **sizes)
        self.official_compat = official_compat
        self.config["official_compat"] = official_compat

    # -- masks ---------------------------------------------------------------------------------------------------
    def mask_grams(self, aux: torch.Tensor | None, lq: torch.Tensor):
        """The three per-level 16x16 mask Gram matrices (B or 1, 1, 16, 16), per the mask mode (module docstring)."""
        b, _, h, w = lq.shape
        sizes = [(h, w), (h // 2, w // 2), (h // 4, w // 4)]
        if aux is None:
            raise ValueError("GLTGRestormer needs the zero-element mask (aux_input 'gltg_mask'): "
                             "data.preprocess.aux_input(low01, 'gltg_mask')")
        if aux.dim() != 4 or aux.shape[0] != b:
            raise ValueError(f"GLTGRestormer: mask must be (B, 1 or 3, H, W) with B={b}, got {tuple(aux.shape)}")
        m = aux[:, :1].to(lq.dtype)
        if self.official_compat:
            grams = [mask_gram(m)]                              # level 1: raw values, unpadded, per sample
            m0 = m[:1]                                          # official downmask: batch element 0 only
            mh, mw = m0.shape[-2:]
            for k in (2, 4):
                mk = resize_binarise(m0, (int(mw / k), int(mh / k)))   # swapped (width, height)
                grams.append(mask_gram(pad4(mk)))
            return grams
        if tuple(m.shape[-2:]) != (h, w):
            raise ValueError(f"GLTGRestormer: mask is {m.shape[-2]}x{m.shape[-1]} but the input is {h}x{w}; pad the "
                             f"mask like the image (or set network_G.restormer.official_compat for the official, "
                             f"unpadded test-time mask)")
        return [mask_gram(pad4(resize_binarise(m, s))) for s in sizes]

    # -- forward -------------------------------------------------------------------------------------------------
    def forward(self, lq: torch.Tensor, aux: torch.Tensor | None = None) -> dict:
        h, w = lq.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"GLTGRestormer: input {h}x{w} must be a multiple of 8 (pad_multiple is "
                             f"{self.pad_multiple}; pad with official_auto_padding or the inference pipeline)")
        return self.unet(lq, *self.mask_grams(aux, lq))
