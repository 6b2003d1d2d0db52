"""UPT-Flow's conditional encoder MSFormer (spec §4.2): a Restormer U-Net whose every scale adds a parallel local
branch of LeWin window-attention blocks guided by the unbalanced-point map zc (1 = colour-balanced pixel).

Official attribute names are kept (the encoder is stored as `RRDB.*` in checkpoints). Structure, as released:

- the map zc (B, 1, H, W) is repeated to `dim` channels and passed through the *same* learned Downsample/Upsample
  convolutions as the features (shared weights), so below level 1 it is a learned embedding of the binary map;
- level 1 and 3 (and the bottleneck) feed the local branch with the level's input; **level 2 feeds it the global
  branch's output** (official quirk, kept for checkpoint equivalence);
- the decoder's skip connections take the *global-branch* encoder outputs, not the summed ones;
- the map going into decoder level 2 is repeated x2 along channels (2·dim -> 4·dim) and that repeated map is
  what `up2_1` upsamples for level 1.

Outputs: fea_up0 (H/8), fea_up1 (H/4), fea_up2 (H/2), each concatenated with the bilinear-resized full-resolution
refinement feature cat_f (4·dim + 2·dim = 288 channels at dim 48), plus 'cat_f' itself (2·dim, H).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import OptionError, UnknownNameError
from utils.registry import ENCODER_REGISTRY
from ...kwargs import kwarg_defaults
from ...tiling.core import FRAME
from .lewin import LeWinLayer, win_size_from_table_rows
from .restormer_blocks import Downsample, OverlapPatchEmbed, TransformerBlock, Upsample, with_cat_f

# Listed by the option schema (shared with the Restormer section) but meaningless here: must be absent or null.
_UNSUPPORTED = ("out_channels",)


def msformer_options(opt: dict) -> dict:
    """Every MSFormer keyword argument: `network_G.msformer` merged over the constructor defaults (null = default);
    an unknown key or a malformed value is an error naming it."""
    given = dict(((opt.get("network_G") or {}).get("msformer")) or {})
    known = kwarg_defaults(MSFormer)
    unknown = sorted(k for k in given if k not in known and k not in _UNSUPPORTED)
    if unknown:
        raise UnknownNameError(f"network_G.msformer: unknown key(s) {', '.join(map(repr, unknown))}; "
                               f"allowed: {', '.join(sorted(known))}")
    for k in _UNSUPPORTED:
        if given.pop(k, None) is not None:
            raise OptionError(f"network_G.msformer.{k} is not used by MSFormer (it has no output projection); "
                              f"remove it")
    cfg = {**known, **{k: v for k, v in given.items() if v is not None}}
    for key, n in (("heads", 4), ("depths", 7), ("num_heads", 7)):
        if not isinstance(cfg[key], (list, tuple)) or len(cfg[key]) != n:
            raise OptionError(f"network_G.msformer.{key} must be a list of {n} integers, got {cfg[key]!r}")
    if int(cfg["win_size"]) < 1:
        raise OptionError(f"network_G.msformer.win_size must be a positive integer, got {cfg['win_size']!r}")
    if cfg["token_mlp"] != "leff":
        # The official LeWin block always builds LeFF whatever token_mlp says; only that network exists.
        raise OptionError(f"network_G.msformer.token_mlp: only 'leff' is implemented, got {cfg['token_mlp']!r}")
    if cfg["token_projection"] not in ("conv", "linear"):
        raise OptionError(f"network_G.msformer.token_projection must be 'conv' or 'linear', "
                          f"got {cfg['token_projection']!r}")
    if cfg["LayerNorm_type"] not in ("WithBias", "BiasFree"):
        raise OptionError(f"network_G.msformer.LayerNorm_type must be 'WithBias' or 'BiasFree', "
                          f"got {cfg['LayerNorm_type']!r}")
    d = cfg["depths"]
    if sum(d[4:7]) > sum(d[:3]):
        raise OptionError(f"network_G.msformer.depths {d}: the decoder's drop-path rates are the encoder's reversed, "
                          f"so sum(depths[4:7]) must not exceed sum(depths[:3])")
    return cfg


def window_multiple(win_size: int) -> int:
    """Input H, W multiple at which no LeWin block pads internally: lcm(8, win at H, 2win at H/2, ...) = 8·win."""
    m = 8
    for s in (1, 2, 4, 8):
        m = m * (s * win_size) // math.gcd(m, s * win_size)
    return m


def checkpoint_win_size(state_dict, prefix: str = "") -> int | None:
    """The window size an MSFormer checkpoint was trained with (from its relative_position_bias_table rows), or None.

    Only keys starting with `prefix` (e.g. 'RRDB.') are looked at.
    """
    for k, v in state_dict.items():
        if k.startswith(prefix) and k.endswith("relative_position_bias_table"):
            return win_size_from_table_rows(int(v.shape[0]))
    return None


def win_size_mismatch_message(state_dict, win_size: int, prefix: str = "") -> str | None:
    """One sentence when the checkpoint's window size differs from the configured one, else None.

    For checkpoint loaders: call it before `load_state_dict` (or on a size-mismatch error) and raise the sentence.
    """
    ckpt = checkpoint_win_size(state_dict, prefix)
    if ckpt is None or ckpt == int(win_size):
        return None
    return (f"checkpoint was trained with win_size {ckpt}, config says {int(win_size)}: "
            f"set network_G.msformer.win_size: {ckpt}")


def _drop_path_rates(depths, rate: float):
    """Official stochastic-depth schedule: linspace(0, rate) over the encoder blocks, `rate` in the bottleneck, the
    encoder schedule reversed in the decoder. Returns one list per local layer (enc1..3, bottleneck, dec1..3)."""
    n_enc = sum(depths[:3])
    enc = torch.linspace(0, rate, n_enc).tolist() if n_enc else []
    dec = enc[::-1]
    c = [0, depths[0], depths[0] + depths[1], n_enc]
    out = [enc[c[i]:c[i + 1]] for i in range(3)]
    out.append([float(rate)] * depths[3])
    e = [0, depths[4], depths[4] + depths[5], depths[4] + depths[5] + depths[6]]
    out += [dec[e[i]:e[i + 1]] for i in range(3)]
    return out


def _conv_of_copies(resample, u, copies: int):
    """resample(u repeated `copies` times along channels) without building the repeat.

    resample is a Downsample/Upsample (3x3 conv, then pixel (un)shuffle). A convolution over k stacked copies of u
    equals one convolution of u with the k weight slices summed: the zero map enters level 1 as one channel
    repeated dim times, and decoder level 2 repeats its map x2 (official), so this saves most of those FLOPs.
    """
    conv, shuffle = resample.body[0], resample.body[1]
    w = conv.weight
    c = u.shape[1]
    if w.shape[1] != c * copies:
        raise ValueError(f"{w.shape[1]}-channel conv cannot read {copies} copies of {c} channels")
    w = w.view(w.shape[0], copies, c, *w.shape[2:]).sum(1)
    return shuffle(F.conv2d(u, w, conv.bias, padding=conv.padding))


@ENCODER_REGISTRY.register("MSFormer")
class MSFormer(nn.Module):
    """MSFormer: the defaults are the official MSFormer() constructor's (the released model; win_size 5 for LOL, 8
    for the rest), plus `inp_channels` (patch-embed input) and `mlp_ratio` (LeFF hidden = mlp_ratio * width; the
    official BasicUformerLayer default, not exposed by the official MSFormer). `token_mlp`: only 'leff' exists.
    ``from_options(opt)`` reads them from `network_G.msformer` (validated).

    `aux_input = 'upt_zero_map'`: forward needs zc = 1[all chromaticity shares > 0.1] (1 = balanced pixel),
    shape (B, 1, H, W), from the same (padded) linear low image.

    `pad_multiple` = 8 (three 2x down-samplings), as the official test.py pads (reflect, bottom/right). Each LeWin
    block zero-pads its own input right/bottom to a window multiple when needed, exactly as the official block does,
    so padding the image to 8 reproduces the official outputs for every size. Reflect-padding the image further, to
    `window_multiple` = 8·win_size (40 for win 5, 64 for win 8; H, H/2, H/4, H/8 then all divide into windows),
    would avoid the internal zero padding but change the result wherever the size is not already such a multiple
    (the 64x96 golden crop: up to 36/255). LOL (400x600, win 5) and SDSD/SMID/SID (960x512-type sizes, win 8) are
    multiples of `window_multiple`, so there both choices coincide.
    """

    tiling = FRAME

    aux_input = "upt_zero_map"
    pad_multiple = 8

    def __init__(self, dim: int = 48, num_refinement_blocks: int = 2, heads=(2, 2, 4, 8),
                 ffn_expansion_factor: float = 2.66, bias: bool = False, LayerNorm_type: str = "WithBias",
                 depths=(2, 2, 2, 2, 2, 2, 2), num_heads=(1, 2, 4, 8, 8, 4, 2), win_size: int = 5,
                 drop_path_rate: float = 0.1, token_projection: str = "conv", token_mlp: str = "leff",
                 shift_flag: bool = True, inp_channels: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        # every size, as built (the network's own description)
        cfg = {"dim": dim, "num_refinement_blocks": num_refinement_blocks, "heads": list(heads),
               "ffn_expansion_factor": ffn_expansion_factor, "bias": bias, "LayerNorm_type": LayerNorm_type,
               "depths": list(depths), "num_heads": list(num_heads), "win_size": win_size,
               "drop_path_rate": drop_path_rate, "token_projection": token_projection, "token_mlp": token_mlp,
               "shift_flag": shift_flag, "inp_channels": inp_channels, "mlp_ratio": mlp_ratio}
        self.cfg = cfg
        dim = int(cfg["dim"])
        heads, depths, nh = [int(v) for v in cfg["heads"]], [int(v) for v in cfg["depths"]], cfg["num_heads"]
        ffn, bias = float(cfg["ffn_expansion_factor"]), bool(cfg["bias"])
        ln_bias = cfg["LayerNorm_type"] != "BiasFree"
        win = int(cfg["win_size"])
        self.dim, self.win_size = dim, win
        self.window_multiple = window_multiple(win)
        self.out_channels = 6 * dim      # width of fea_up0/1/2 after the cat_f concatenation (288 at dim 48)

        def tbs(ch, n_heads, n):
            return nn.Sequential(*[TransformerBlock(ch, n_heads, ffn, bias, ln_bias) for _ in range(n)])

        # Global branch (Restormer U-Net).
        self.patch_embed = OverlapPatchEmbed(int(cfg["inp_channels"]), dim)
        self.encoder_level1 = tbs(dim, heads[0], depths[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = tbs(dim * 2, heads[1], depths[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = tbs(dim * 4, heads[2], depths[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = tbs(dim * 8, heads[3], depths[3])
        self.reduce_chan_level0 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = tbs(dim * 4, heads[2], depths[4])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 4, 1, bias=bias)
        self.decoder_level2 = tbs(dim * 4, heads[1], depths[5])
        self.up2_1 = Upsample(dim * 4)
        self.reduce_chan_level1 = nn.Conv2d(dim * 3, dim * 2, 1, bias=bias)
        self.decoder_level1 = tbs(dim * 2, heads[0], depths[6])
        self.refinement = tbs(dim * 2, heads[0], int(cfg["num_refinement_blocks"]))

        # Local branch (LeWin window attention guided by the map).
        rates = _drop_path_rates(depths, float(cfg["drop_path_rate"]))
        widths = [dim, dim * 2, dim * 4, dim * 8, dim * 4, dim * 4, dim * 2]
        names = ["encoderlayer_1", "encoderlayer_2", "encoderlayer_3", "bottlen",
                 "decoderlayer_1", "decoderlayer_2", "decoderlayer_3"]
        for i, name in enumerate(names):
            setattr(self, name, LeWinLayer(widths[i], depths[i], int(nh[i]), win, rates[i],
                                           float(cfg["mlp_ratio"]), cfg["token_projection"],
                                           bool(cfg["shift_flag"])))
        self.apply(self._init_weights)

    @classmethod
    def kwargs_from_options(cls, opt: dict) -> dict:
        """Every keyword argument from `network_G.msformer` (validated; null/missing keys: the defaults)."""
        return msformer_options(opt)

    @classmethod
    def from_options(cls, opt: dict) -> "MSFormer":
        """The encoder sized by `network_G.msformer`."""
        return cls(**cls.kwargs_from_options(opt))

    @staticmethod
    def _init_weights(m):
        # Official init: trunc-normal(0.02) Linear weights, zero Linear biases, unit/zero nn.LayerNorm.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def explain_checkpoint_mismatch(self, state_dict, prefix: str = "") -> str | None:
        """Hook of models.checkpoint.load_weights: the window-size sentence, or None (see
        :func:`win_size_mismatch_message`)."""
        return win_size_mismatch_message(state_dict, self.win_size, prefix)

    def forward(self, lq: torch.Tensor, aux: torch.Tensor | None = None) -> dict:
        if aux is None:
            raise ValueError("MSFormer needs the unbalanced-point map (aux): "
                             "data.preprocess.aux_input(low01, 'upt_zero_map'), shape (B, 1, H, W)")
        b, _, h, w = lq.shape
        if aux.dim() != 4 or aux.shape[0] != b or aux.shape[1] != 1 or aux.shape[2:] != lq.shape[2:]:
            raise ValueError(f"MSFormer: zero map must be ({b}, 1, {h}, {w}), got {tuple(aux.shape)}")
        if h % 8 or w % 8:
            raise ValueError(f"MSFormer: input {h}x{w} must be a multiple of {self.pad_multiple} (pad it first)")
        zm1 = aux.to(lq.dtype).expand(-1, self.dim, -1, -1)
        # Each map is released (del) once consumed: on large images the live full-size maps set the peak memory.

        x0 = self.patch_embed(lq)
        enc1 = self.encoder_level1(x0)
        x1 = enc1 + self.encoderlayer_1(x0, zm1)
        del x0, zm1

        zm2 = _conv_of_copies(self.down1_2, aux.to(lq.dtype), self.dim)
        enc2 = self.encoder_level2(self.down1_2(x1))
        del x1
        x2 = enc2 + self.encoderlayer_2(enc2, zm2)                 # local branch on the global output (official)

        zm3 = self.down2_3(zm2)
        inp3 = self.down2_3(x2)
        del zm2, x2
        enc3 = self.encoder_level3(inp3)
        x3 = enc3 + self.encoderlayer_3(inp3, zm3)
        del inp3

        zm4 = self.down3_4(zm3)
        inp4 = self.down3_4(x3)
        del zm3, x3
        latent = self.latent(inp4) + self.bottlen(inp4, zm4)
        del inp4
        fea_up0 = self.reduce_chan_level0(latent)

        zm_d3 = self.up4_3(zm4)
        inp_d3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
        del zm4, latent, enc3
        dec3 = self.decoder_level3(inp_d3) + self.decoderlayer_1(inp_d3, zm_d3)
        del inp_d3

        zm_u = self.up3_2(zm_d3)
        zm_d2 = zm_u.repeat(1, 2, 1, 1)
        inp_d2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1))
        del zm_d3, enc2
        dec2 = self.decoder_level2(inp_d2) + self.decoderlayer_2(inp_d2, zm_d2)
        del inp_d2, zm_d2

        zm_d1 = _conv_of_copies(self.up2_1, zm_u, 2)
        inp_d1 = self.reduce_chan_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        del zm_u, enc1
        dec1 = self.decoder_level1(inp_d1) + self.decoderlayer_3(inp_d1, zm_d1)
        del inp_d1, zm_d1
        cat_f = self.refinement(dec1)
        del dec1

        out = with_cat_f({"fea_up0": fea_up0, "fea_up1": dec3, "fea_up2": dec2}, cat_f)
        out["cat_f"] = cat_f
        return out
