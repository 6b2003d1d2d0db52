"""The two U-Nets of N2LDiff: the time-conditioned denoiser (official ``model.Unet``) and the condition encoder
(official ``cond2.Unet_cond2``). Shapes, module names and the official quirks (spec 8.1) are kept:

- down level i: ResnetBlock -> [cat encoder feature i] -> ResnetBlock -> skip -> Downsample (not on the last);
- the up path has len(dim_mults) - 1 levels over reversed(in_out[1:]) and upsamples on **every** level, so the
  level-0 skip is computed but never used; H and W must be divisible by 2^(len(dim_mults) - 1);
- the encoder builds a time embedding and per-block time MLPs it never uses (kept so checkpoints load strictly).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .condition import condition_tensor
from .layers import Block, Downsample, ResnetBlock, SinusoidalPosEmb, Upsample, conv, init_official, time_mlp


def level_dims(in_dim: int, dim: int, dim_mults) -> list[tuple[int, int]]:
    dims = [in_dim] + [dim * m for m in dim_mults]
    return list(zip(dims[:-1], dims[1:]))


class _UNetBody(nn.Module):
    """The shared skeleton; ``use_time`` selects the denoiser's ResnetBlock or the encoder's ResnetBlockCond."""

    def __init__(self, in_dim: int, dim: int, dim_mults, out_dim: int, use_in: bool, wn: bool, use_time: bool,
                 first_block_extra: int = 0):
        super().__init__()
        in_out = level_dims(in_dim, dim, dim_mults)
        self.time_pos_emb = SinusoidalPosEmb(dim)
        self.mlp = time_mlp(dim)
        blk = dict(time_dim=dim, use_in=use_in, wn=wn, use_time=use_time)
        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(d_in, d_out, **blk),
                ResnetBlock(d_out * (1 + first_block_extra), d_out, **blk),
                nn.Identity() if last else Downsample(d_out, wn)]))
        mid = in_out[-1][1]
        self.mid_block1 = ResnetBlock(mid, mid, **blk)
        self.mid_attn = nn.Identity()  # use_attn is rejected by the options (no official config enables it)
        self.mid_block2 = ResnetBlock(mid, mid, **blk)
        self.ups = nn.ModuleList()
        for d_in, d_out in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResnetBlock(d_out * 2, d_in, **blk),
                ResnetBlock(d_in, d_in, **blk),
                Upsample(d_in)]))
        self.final_conv = nn.Sequential(Block(dim, dim, wn), conv(dim, out_dim, 1, wn=wn))
        self.multiple = 2 ** (len(in_out) - 1)


class Denoiser(_UNetBody):
    """eps_theta(x_t, t | img_lr, encoder features): input cat[x_t, cond] (in_dim = 6 officially).

    With ``stronger_cond`` the encoder's down-level feature i is concatenated after the first ResnetBlock of
    down level i (only the first len(dim_mults) features are used).
    """

    def __init__(self, dim: int = 64, dim_mults=(1, 2, 2, 4, 4, 8), in_dim: int = 6, out_dim: int = 3,
                 use_in: bool = True, wn: bool = True, stronger_cond: bool = True, weight_init: bool = True):
        super().__init__(in_dim, dim, dim_mults, out_dim, use_in, wn, True, 1 if stronger_cond else 0)
        self.stronger_cond = stronger_cond
        if weight_init:
            init_official(self)

    def forward(self, x, t, cond, feats_cond):
        t = self.mlp(self.time_pos_emb(t))
        x = torch.cat((x, cond), dim=1)
        skips = []
        for i, (res1, res2, down) in enumerate(self.downs):
            x = res1(x, t)
            if self.stronger_cond:
                x = torch.cat((x, feats_cond[i]), dim=1)
            x = res2(x, t)
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t)), t)
        for res1, res2, up in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = up(res2(res1(x, t), t))
        return self.final_conv(x)


class ConditionEncoder(_UNetBody):
    """img (Bx3xHxW, [0, 1]) -> (centre Bx3xHxW, features): the 12-channel condition through a time-free U-Net.

    Features: each down level's output (before Downsample), then each up level's (before Upsample). The centre
    has no output activation and is not clamped. ``on_res`` (official ``cond_on_res``) adds the histeq image.
    """

    def __init__(self, dim: int = 64, dim_mults=(1, 2, 2, 4, 4, 8), in_dim: int = 12, out_dim: int = 3,
                 use_in: bool = True, wn: bool = True, on_res: bool = False, weight_init: bool = True):
        super().__init__(in_dim, dim, dim_mults, out_dim, use_in, wn, False)
        self.on_res = on_res
        if weight_init:
            init_official(self)

    def forward(self, img):
        cond = condition_tensor(img)
        x = cond
        feats, skips = [], []
        for res1, res2, down in self.downs:
            x = res2(res1(x))
            skips.append(x)
            feats.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_block1(x))
        for res1, res2, up in self.ups:
            x = res2(res1(torch.cat((x, skips.pop()), dim=1)))
            feats.append(x)
            x = up(x)
        x = self.final_conv(x)
        if self.on_res:
            x = x + cond[:, 3:6]
        return x, feats
