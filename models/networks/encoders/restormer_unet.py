"""The masked Restormer U-Net shared by GLTG-AFlow (``gltg_restormer``) and ZMAR-SNFlow (``zmar_restormer``).

Both encoders are the official ``restormer_arch.Restormer`` skeleton whose three encoder levels are stacks of a
model-specific masked block (official ``TransformerBlock_1`` with ``layer_stack``); they differ only in that block,
in how the per-level mask prior is computed, in their defaults and in what ``fea_up1`` is. This module holds what is
the same: config validation, the mask padding/resizing helpers, the level container and
:class:`MaskedRestormerUNet` (module registration in the official order, so checkpoints load strictly, and the
encoder/decoder pass). It registers nothing.

Data flow (dim = 48 at the official size):

    lq -> patch_embed -> encoder_level1 (prior 1) -> down1_2 -> encoder_level2 (prior 2) -> down2_3
    -> encoder_level3 (prior 3) -> down3_4 -> latent -> reduce_chan0 = fea_up0 (H/8, 4*dim)
    -> up4_3 + skip -> decoder_level3 [-> reduce_chan1] = fea_up1 (H/4, 4*dim) -> up3_2 + skip -> decoder_level2
    -> reduce_chan2 = fea_up2 (H/2, 4*dim) -> up2_1 + skip -> decoder_level1 -> refinement = cat_f (H, 2*dim)

Every ``fea_up*`` is returned with bilinear(cat_f) concatenated: 6*dim channels (288 at the official size).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import OptionError
from ...kwargs import kwarg_defaults, section_kwargs
from ...never_run import declare_never_run
from .restormer_blocks import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample, with_cat_f

PATCH_GRID = 4          # official N: a 4x4 grid of large patches (16 tokens)
MASK_THRESHOLD = 0.2    # official downmask binarisation: > 0.2 -> 1


# ------------------------------------------------------------------------------------------------ config

def parse_restormer_config(opt: dict, encoder: type) -> dict:
    """Every keyword argument of ``encoder`` (a MaskedRestormerUNet subclass) from ``network_G.restormer``, validated;
    missing/None keys take the constructor's default.

    An unknown key (with a value other than None) is a KeyError naming it. Keys whose default is a bool must be
    true/false.
    """
    section = ((opt.get("network_G") or {}).get("restormer")) or {}
    if not isinstance(section, dict):
        raise OptionError(f"network_G.restormer must be a mapping, got {type(section).__name__}")
    defaults = kwarg_defaults(encoder)
    cfg = {**defaults, **section_kwargs(section, encoder, "network_G.restormer")}
    for key in ("num_blocks", "heads"):
        val = cfg[key]
        if not isinstance(val, (list, tuple)) or len(val) != 4 or not all(isinstance(v, int) and v > 0 for v in val):
            raise OptionError(f"network_G.restormer.{key} must be a list of 4 positive integers, got {val!r}")
        cfg[key] = list(val)
    for key in ("dim", "num_refinement_blocks", "inp_channels", "out_channels"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] <= 0:
            raise OptionError(f"network_G.restormer.{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["LayerNorm_type"] not in ("WithBias", "BiasFree"):
        raise OptionError(f"network_G.restormer.LayerNorm_type must be 'WithBias' or 'BiasFree', "
                          f"got {cfg['LayerNorm_type']!r}")
    for key, default in defaults.items():
        if isinstance(default, bool) and not isinstance(cfg[key], bool):
            raise OptionError(f"network_G.restormer.{key} must be true or false, got {cfg[key]!r}")
    if float(cfg["ffn_expansion_factor"]) <= 0:
        raise OptionError(f"network_G.restormer.ffn_expansion_factor must be > 0, got {cfg['ffn_expansion_factor']!r}")
    for i, h in enumerate(cfg["heads"]):   # heads[0] also serves the decoder's 2*dim width: implied by dim % heads[0]
        width = cfg["dim"] * 2 ** i
        if width % h:
            raise OptionError(f"network_G.restormer: heads[{i}]={h} does not divide the level width {width}")
    return cfg


# ------------------------------------------------------------------------------------------------ mask helpers

def pad_to_multiple(x: torch.Tensor, n: int = PATCH_GRID) -> torch.Tensor:
    """Reflect-pad bottom/right so H and W are multiples of n (official Attention_intra / Mask / downmask)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % n, (-w) % n
    if ph or pw or torch.jit.is_tracing():  # an ONNX trace keeps the pad so the graph serves every size
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    return x


def resize_binarise(m: torch.Tensor, size) -> torch.Tensor:
    """Bilinear (half-pixel centres, no antialias = cv2.INTER_LINEAR) resize, then > 0.2 -> 1 else 0."""
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
    return (m > MASK_THRESHOLD).to(m.dtype)


# ------------------------------------------------------------------------------------------------ levels

def transformer_stack(n: int, dim: int, heads: int, ffn: float, bias: bool, ln_bias: bool) -> nn.Sequential:
    """n plain Restormer blocks (latent, decoder levels, refinement)."""
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn, bias, ln_bias) for _ in range(n)])


class MaskedLevel(nn.Module):
    """One encoder level (official ``TransformerBlock_1``): ``layer_stack`` of ``block``, each given the same prior.

    Subclasses set ``block`` (constructed as ``block(dim, num_heads, ffn_expansion_factor, bias, layernorm_bias)``
    and called as ``block(x, prior)``).
    """

    block: type[nn.Module]

    def __init__(self, n_layers: int, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 layernorm_bias: bool):
        super().__init__()
        self.layer_stack = nn.ModuleList([self.block(dim, num_heads, ffn_expansion_factor, bias, layernorm_bias)
                                          for _ in range(n_layers)])

    def forward(self, x: torch.Tensor, prior) -> torch.Tensor:
        for blk in self.layer_stack:
            x = blk(x, prior)
        return x


# ------------------------------------------------------------------------------------------------ U-Net

class MaskedRestormerUNet(nn.Module):
    """The official Restormer U-Net with masked encoder levels (official parameter names and registration order).

    Subclasses set ``masked_level`` (a :class:`MaskedLevel` subclass), ``reduce_fea_up1`` (whether fea_up1 goes
    through ``reduce_chan1``) and ``color_head_in`` (input channels of ``fine_tune_color_map``; None: out_channels),
    and forward their sizes to ``super().__init__``. Defaults: the official ``Restormer()`` constructor's (subclasses
    override the block counts). ``from_options(opt)`` builds a subclass from ``network_G.restormer``. The official
    colour head (``output``, ``fine_tune_color_map``; both priors are N(0, I)) and, when fea_up1 does not use it,
    ``reduce_chan1`` never run: declared, not built (models/never_run.py).
    """

    masked_level: type[MaskedLevel]
    reduce_fea_up1: bool = True
    color_head_in: int | None = None

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48, num_blocks=(4, 6, 6, 8),
                 num_refinement_blocks: int = 4, heads=(1, 2, 4, 8), ffn_expansion_factor: float = 2.66,
                 bias: bool = False, LayerNorm_type: str = "WithBias"):
        super().__init__()
        nb, heads = list(num_blocks), list(heads)
        # every size, as built (the network's own description; ZMAR's forward checks inp_channels against it)
        self.config = {"inp_channels": inp_channels, "out_channels": out_channels, "dim": dim, "num_blocks": nb,
                       "num_refinement_blocks": num_refinement_blocks, "heads": heads,
                       "ffn_expansion_factor": ffn_expansion_factor, "bias": bias, "LayerNorm_type": LayerNorm_type}
        cfg = self.config
        ffn = float(ffn_expansion_factor)
        ln = LayerNorm_type != "BiasFree"
        self.dim = dim
        level = self.masked_level

        self.patch_embed = OverlapPatchEmbed(cfg["inp_channels"], dim)
        self.encoder_level1 = level(nb[0], dim, heads[0], ffn, bias, ln)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = level(nb[1], dim * 2, heads[1], ffn, bias, ln)
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = level(nb[2], dim * 4, heads[2], ffn, bias, ln)
        self.down3_4 = Downsample(dim * 4)
        self.latent = transformer_stack(nb[3], dim * 8, heads[3], ffn, bias, ln)

        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = transformer_stack(nb[2], dim * 4, heads[2], ffn, bias, ln)
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = transformer_stack(nb[1], dim * 2, heads[1], ffn, bias, ln)
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = transformer_stack(nb[0], dim * 2, heads[0], ffn, bias, ln)
        self.refinement = transformer_stack(cfg["num_refinement_blocks"], dim * 2, heads[0], ffn, bias, ln)

        color_in = cfg["out_channels"] if self.color_head_in is None else self.color_head_in
        out_ch = cfg["out_channels"]
        declare_never_run(self, "output", lambda: nn.Conv2d(dim * 2, out_ch, 3, padding=1, bias=bias))
        declare_never_run(self, "fine_tune_color_map", lambda: nn.Sequential(
            nn.Conv2d(color_in, 64, 3, 2, 1), nn.Conv2d(64, 128, 3, 2, 1), nn.Conv2d(128, 192, 3, 2, 1), nn.Sigmoid()))
        self.reduce_chan0 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        if self.reduce_fea_up1:
            self.reduce_chan1 = nn.Conv2d(dim * 4, dim * 4, 1, bias=bias)
        else:
            declare_never_run(self, "reduce_chan1", lambda: nn.Conv2d(dim * 4, dim * 4, 1, bias=bias))
        self.reduce_chan2 = nn.Conv2d(dim * 2, dim * 4, 1, bias=bias)

    @classmethod
    def kwargs_from_options(cls, opt: dict) -> dict:
        """Every keyword argument from ``network_G.restormer`` (validated; null/missing keys: the defaults)."""
        return parse_restormer_config(opt, cls)

    @classmethod
    def from_options(cls, opt: dict):
        """The encoder sized by ``network_G.restormer``."""
        return cls(**cls.kwargs_from_options(opt))

    @property
    def out_channels(self) -> int:
        """Conditioning width per flow level: 4*dim + 2*dim (288 at dim 48)."""
        return 6 * self.dim

    def unet(self, lq: torch.Tensor, p1, p2, p3) -> dict:
        """The encoder/decoder pass with the level priors p1..p3: fea_up0/1/2 (cat_f concatenated) and cat_f."""
        # Each map is released (del) once consumed: on large images the live full-size maps set the peak memory.
        enc1 = self.encoder_level1(self.patch_embed(lq), p1)
        enc2 = self.encoder_level2(self.down1_2(enc1), p2)
        enc3 = self.encoder_level3(self.down2_3(enc2), p3)
        latent = self.latent(self.down3_4(enc3))
        feats = {"fea_up0": self.reduce_chan0(latent)}

        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        del latent, enc3
        feats["fea_up1"] = self.reduce_chan1(dec3) if self.reduce_fea_up1 else dec3
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        del dec3, enc2
        feats["fea_up2"] = self.reduce_chan2(dec2)
        dec1 = torch.cat([self.up2_1(dec2), enc1], 1)
        del dec2, enc1
        dec1 = self.decoder_level1(dec1)
        cat_f = self.refinement(dec1)
        del dec1

        out = with_cat_f(feats, cat_f)
        out["cat_f"] = cat_f
        return out
