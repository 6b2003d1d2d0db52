"""Restormer building blocks shared by the GLTG, ZMAR and MSFormer encoders (official parameter names).

MDTA = multi-Dconv-head transposed (channel) attention; GDFN = gated-Dconv feed-forward network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """Layer norm over channels at every pixel of an NCHW map (`body.weight`, `body.bias` as in checkpoints)."""

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.body = _LNBody(dim, bias)

    def forward(self, x):
        return self.body(x)


class _LNBody(nn.Module):
    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        y = x.permute(0, 2, 3, 1)
        if self.bias is not None:
            y = F.layer_norm(y, (y.shape[-1],), self.weight, self.bias, 1e-5)
        else:  # Restormer's BiasFree norm scales by the std but does not centre.
            y = y * torch.rsqrt(y.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.weight
        return y.permute(0, 3, 1, 2)


def channel_attention(q, k, v, temperature):
    """softmax(norm(q) norm(k)^T * t) v over (B, heads, C/heads, HW) tensors: attention across channels."""
    q = F.normalize(q, dim=-1) * temperature
    k = F.normalize(k, dim=-1)
    return F.scaled_dot_product_attention(q, k, v, scale=1.0)


class Attention(nn.Module):
    """MDTA: global channel self-attention."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        shape = (b, self.num_heads, c // self.num_heads, h * w)
        out = channel_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), self.temperature)
        return self.project_out(out.reshape(b, c, h, w))


class FeedForward(nn.Module):
    """GDFN: 1x1 expand, depthwise 3x3, GELU gate, 1x1 project."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """x + MDTA(LN(x)), then + GDFN(LN(.))."""

    activation_checkpoint = True  # unit of train.activation_checkpointing

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 layernorm_bias: bool = True):
        super().__init__()
        self.norm1 = LayerNorm(dim, layernorm_bias)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layernorm_bias)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 conv stem (`proj`)."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    """Conv3x3 n -> n/2 then PixelUnshuffle(2): n -> 2n channels at half resolution."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """Conv3x3 n -> 2n then PixelShuffle(2): n -> n/2 channels at double resolution."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


def with_cat_f(feats: dict, cat_f: torch.Tensor) -> dict:
    """Concatenate the bilinear-resized full-resolution refinement feature onto every flow conditioning tensor."""
    out = {}
    for name in ("fea_up0", "fea_up1", "fea_up2"):
        f = feats[name]
        up = F.interpolate(cat_f, size=f.shape[2:], mode="bilinear", align_corners=False)
        out[name] = torch.cat([f, up], 1)
    return out
