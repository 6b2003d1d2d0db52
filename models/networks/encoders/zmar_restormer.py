"""ZMAR-SNFlow's conditional encoder: a Restormer U-Net whose encoder blocks add zero-element mask attention (ZMA).

Data flow (dim = 48 at the official size; spec 3.2):

    lq (log low, 3 ch) -> patch_embed -> encoder_level1 (mask m1) -> down -> encoder_level2 (m2) -> down
    -> encoder_level3 (m3) -> down -> latent -> reduce_chan0 = fea_up0 (H/8, 4*dim)
    -> up + skip -> decoder_level3 = fea_up1 (H/4, 4*dim) -> up + skip -> decoder_level2 -> reduce_chan2 = fea_up2
    (H/2, 4*dim) -> up + skip -> decoder_level1 -> refinement = cat_f (H, 2*dim)

Every ``fea_up*`` is returned with bilinear(cat_f) concatenated: 6*dim channels (288 at the official size).
The U-Net skeleton, config parsing and mask padding/resizing are shared with GLTG-AFlow
(``restormer_unet.MaskedRestormerUNet``); this module holds the ZMA block, its per-level mask maps and its defaults.

Zero-element mask attention (`Mask`): the image (padded to a multiple of 4) is cut into a 4x4 grid of 16 large patches.
The 16x16 patch-mixing matrix is softmax(cos-sim(mask patch i, mask patch j) * T); image features supply only V. It
is the same matrix for every channel and head. Because it depends on the mask alone, it is computed once per encoder
level and shared by all blocks of that level (the official code recomputes the identical matrix in every block).

Deliberate differences from the official code (none changes a result on valid inputs):
- The temperature T is the constant ``MASK_TEMPERATURE = 1``. The official `Mask.forward` builds a fresh
  ``nn.Parameter(torch.ones(b, 1, 1, 1)).cuda()`` on every call: never registered, never trained, always 1.
- `Mask` only needs the V third of its dense 3x3 "dwconv" (no ``groups``). As both convs are bias-free, 1x1 then
  3x3 (zero padding) equals one 3x3 conv with the folded weight ``W3[2C:] o W1``; that is what runs (about 9x fewer
  FLOPs than the official qkv path). Gradients reach the same parameter entries as in the official model.
- SDPA is not used in ZMA: queries and keys are the mask itself, so the attention matrix is shared across blocks and
  channels and is applied with one batched matmul; SDPA would recompute it per block, and its head size (H*W/16)
  is far beyond the fused kernels anyway.

Official modules that never run, declared and not built (models/never_run.py; official checkpoints load, those
tensors are dropped): `attn_share` (Attentionshare) in every masked block, `Mask.norm1`, `output`,
`fine_tune_color_map`, `reduce_chan1`.

Input size: H and W must be multiples of ``pad_multiple = 8``. Three PixelUnshuffle(2) downsamplings and the flow's
three squeezes need 8; the 4x4 patch grid needs H/k divisible by 4 at levels k = 1, 2, 4. That holds at levels 1 and 2
for multiples of 8, and level 3 (H/4) would need multiples of 16. The official model does not require 16: like
`Mask.forward` and `downmask`, this encoder reflect-pads the level-3 features and mask (bottom/right) to a multiple of 4
and crops afterwards. Official LOL inputs (400x600: W/4 = 150) rely on that padding, so padding the image to 16 instead
would change the output. (Images must be at least 16 px high and wide: reflect padding needs pad < size.)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.registry import ENCODER_REGISTRY
from ...never_run import declare_never_run
from ...precision import at_least_fp32, fp32_region
from ...tiling.core import FRAME, IN_TILED, TILED, TilePlan, conv_reach, local_residual
from ...tiling.patch_grid import cells, gather_cell, scatter_cell_residual
from .restormer_blocks import Attention, FeedForward, LayerNorm
from .restormer_unet import (PATCH_GRID, MaskedLevel, MaskedRestormerUNet, pad_to_multiple, parse_restormer_config,
                             resize_binarise)

MASK_TEMPERATURE = 1.0   # official: a fresh, untrained nn.Parameter(ones) created inside every Mask.forward


def restormer_config(opt: dict) -> dict:
    """Every ZMARRestormer keyword argument from ``network_G.restormer`` (constructor defaults for missing or None
    keys), validated. An unknown key (with a value other than None) is a KeyError naming it.
    """
    return parse_restormer_config(opt, ZMARRestormer)


# ------------------------------------------------------------------------------------------------ mask helpers

def downmask(mask: torch.Tensor, k: int) -> torch.Tensor:
    """The mask at 1/k resolution: bilinear resize to (H/k, W/k), binarise (> 0.2 -> 1); per batch element."""
    h, w = mask.shape[-2:]
    return resize_binarise(mask, (h // k, w // k))  # floor division, also on traced sizes (ONNX export)


def to_patches(x: torch.Tensor, grid: int = PATCH_GRID) -> torch.Tensor:
    """(B, C, H, W) with H, W divisible by grid -> (B, grid*grid, C*(H/grid)*(W/grid)): one row per patch."""
    b, c, h, w = x.shape
    x = x.view(b, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, grid * grid, -1)


def from_patches(p: torch.Tensor, c: int, h: int, w: int, grid: int = PATCH_GRID) -> torch.Tensor:
    """Inverse of :func:`to_patches`."""
    b = p.shape[0]
    p = p.view(b, grid, grid, c, h // grid, w // grid).permute(0, 3, 1, 4, 2, 5)
    return p.reshape(b, c, h, w)


def mask_attention_map(mask: torch.Tensor, temperature: float = MASK_TEMPERATURE) -> torch.Tensor:
    """softmax(cos-sim of the 16 mask patches * T): (B, 16, 16). All-zero patches get zero similarity to all."""
    if mask.shape[1] != 1:
        raise ValueError(f"the ZMAR mask must have 1 channel, got {mask.shape[1]}")
    # Sums over every pixel of a patch: float32 under bf16/fp16 too (models/precision.py).
    with fp32_region(mask):
        q = F.normalize(to_patches(at_least_fp32(mask)), dim=-1)
        return torch.softmax(q @ q.transpose(-2, -1) * temperature, dim=-1)


# ------------------------------------------------------------------------------------------------ blocks

class Mask(nn.Module):
    """Zero-element mask attention: out = proj(A @ V) with A from the mask only (official name `Mask`).

    Always bias-free with a WithBias `norm1` (the official constructor ignores the block's bias/LayerNorm_type);
    `norm1` never runs (declared, not built). `qkv_dwconv` is a dense 3x3 conv of which only the V third is used.
    """

    tiling = IN_TILED   # its block's tiled_forward runs tiled_residual

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads  # heads do not change the maths: A is shared by every channel
        declare_never_run(self, "norm1", lambda: LayerNorm(dim, True))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def value_weight(self) -> torch.Tensor:
        """The 3x3 weight of x -> V: qkv_dwconv's V rows composed with the 1x1 qkv conv."""
        c = self.project_out.in_channels
        w3 = self.qkv_dwconv.weight[2 * c:]                       # (C, 3C, 3, 3)
        w1 = self.qkv.weight[:, :, 0, 0]                          # (3C, C)
        return torch.einsum("omhw,mi->oihw", w3, w1)

    def values(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The local step: V of (a crop of) the padded normalised map, for weight = :meth:`value_weight`."""
        return F.conv2d(x, weight, padding=1)

    @staticmethod
    def mix(v: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The apply step: the 16 patches of v mixed by the (B, 16, 16) map (v: a map with the 4x4 patch grid)."""
        hp, wp = v.shape[-2:]
        return from_patches(torch.bmm(attn.to(v.dtype), to_patches(v)), v.shape[1], hp, wp)

    def forward(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) normalised features; attn: (B, 16, 16) from :func:`mask_attention_map` at padded size."""
        h, w = x.shape[-2:]
        out = self.mix(self.values(pad_to_multiple(x), self.value_weight()), attn)
        return self.project_out(out[:, :, :h, :w])

    def tiled_residual(self, norm: nn.Module, x: torch.Tensor, attn: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """x + self(norm(x), attn) over cells of the patch grid (models/tiling/patch_grid.py): each cell's values
        from its 16 haloed rectangles, mixed across the patches (the map needs no statistics of x)."""
        xp = pad_to_multiple(x)       # reflect padding commutes with the per-pixel LayerNorm
        hp, wp = xp.shape[-2:]
        weight = self.value_weight()
        out = torch.empty_like(x)
        grid_cells, size = cells(hp, wp, plan, 1, PATCH_GRID)
        for cell in grid_cells:
            v = gather_cell(lambda t: self.values(norm(t), weight), xp, cell, 1, size, PATCH_GRID)
            scatter_cell_residual(out, x, self.project_out(self.mix(v, attn)), hp, wp, cell, PATCH_GRID)
        return out


class Attentionshare(nn.Module):
    """The official shared-V attention, which never runs: the layout that models/conversion/flows.py drops on load
    and writes back for the export."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False):
        super().__init__()
        self.temperature_5 = nn.Parameter(torch.ones(num_heads, 1, 1, 1))
        self.temperature_4 = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self.share_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, *args, **kwargs):
        raise RuntimeError("Attentionshare is unused in ZMAR-SNFlow; it exists only for checkpoint compatibility")


class TransformerBlockWithMask(nn.Module):
    """x + ZMA(LN1(x)), then + MDTA(LN1(.)) with the same LN1, then + GDFN(LN2(.))."""

    activation_checkpoint = True  # unit of train.activation_checkpointing
    tiling = TILED

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, layernorm_bias: bool):
        super().__init__()
        self.mask = Mask(dim, num_heads)
        declare_never_run(self, "attn_share", lambda: Attentionshare(dim, num_heads, bias))
        self.norm1 = LayerNorm(dim, layernorm_bias)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layernorm_bias)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        x = x + self.mask(self.norm1(x), attn)
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))

    def tiled_forward(self, plan: TilePlan, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """forward with the ZMA over patch-grid cells, the MDTA in two passes, the GDFN tile by tile."""
        if plan.fits(*x.shape[-2:]):
            return TransformerBlockWithMask.forward(self, x, attn)
        x = self.mask.tiled_residual(self.norm1, x, attn, plan)
        x = self.attn.tiled_residual(self.norm1, x, plan)
        return local_residual(lambda t: self.ffn(self.norm2(t)), x, conv_reach(self.ffn.dwconv), plan)


class ZMARMaskedLevel(MaskedLevel):
    """A stack of masked blocks sharing one mask-attention map (official `TransformerBlock_1`, `layer_stack`)."""

    block = TransformerBlockWithMask
    tiling = FRAME

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask: (B, 1, h, w) at this level's resolution (not yet padded)."""
        if mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"mask size {tuple(mask.shape[-2:])} does not match the features {tuple(x.shape[-2:])}")
        return super().forward(x, mask_attention_map(pad_to_multiple(mask.to(x.dtype))))


@ENCODER_REGISTRY.register("ZMARRestormer")
class ZMARRestormer(MaskedRestormerUNet):
    """ZMAR-SNFlow's Restormer encoder (official `restormer_arch.Restormer` names). Sizes: the keyword arguments of
    :class:`MaskedRestormerUNet`, with ZMAR's block counts as defaults; ``from_options(opt)`` reads them from
    network_G.restormer.

    ``forward(lq, aux)``: lq (B, 3, H, W) log low image, aux (B, 1, H, W) chromaticity mask
    (``data.preprocess.chroma_mask(low01, 'unbalanced_is_one')``). Returns fea_up0/1/2 (with cat_f concatenated)
    and cat_f. The official ``output``, ``fine_tune_color_map`` and ``reduce_chan1`` never run (not built).
    """

    aux_input = "zmar_mask"
    pad_multiple = 8
    tiling = FRAME
    min_size = 16  # the mask attention reflect-pads the 1/8-scale features to a multiple of 4
    masked_level = ZMARMaskedLevel
    reduce_fea_up1 = False      # fea_up1 = decoder_level3 itself
    color_head_in = 3           # the official colour head reads 3 channels whatever out_channels is

    def __init__(self, num_blocks=(4, 4, 4, 4), num_refinement_blocks: int = 4, **sizes):
        super().__init__(num_blocks=num_blocks, num_refinement_blocks=num_refinement_blocks, **sizes)

    def forward(self, lq: torch.Tensor, aux: torch.Tensor | None = None) -> dict:
        if aux is None:
            raise ValueError("ZMARRestormer needs the chromaticity mask (aux_input 'zmar_mask'): "
                             "data.preprocess.aux_input(low01, 'zmar_mask')")
        b, _, h, w = lq.shape
        if h % self.pad_multiple or w % self.pad_multiple:
            raise ValueError(f"ZMARRestormer: input {h}x{w} must be a multiple of {self.pad_multiple} "
                             f"(pad it first, e.g. with the test pipeline's reflect padding)")
        if lq.shape[1] != self.config["inp_channels"]:
            raise ValueError(f"ZMARRestormer expects a {self.config['inp_channels']}-channel input (the log low image), "
                             f"got {lq.shape[1]} channels (concat_histeq must be false for this model)")
        if aux.dim() != 4 or aux.shape[0] != b or aux.shape[1] != 1 or aux.shape[-2:] != lq.shape[-2:]:
            raise ValueError(f"ZMARRestormer: mask must be (B, 1, H, W) = ({b}, 1, {h}, {w}), got {tuple(aux.shape)}")
        mask = aux.to(lq.dtype)                 # level-1 mask: raw values, full size
        return self.unet(lq, mask, downmask(mask, 2), downmask(mask, 4))
