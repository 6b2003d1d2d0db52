"""Restormer building blocks shared by the GLTG, ZMAR and MSFormer encoders (official parameter names).

MDTA = multi-Dconv-head transposed (channel) attention; GDFN = gated-Dconv feed-forward network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...inplace import add_to, mul_into
from ...tiling.core import IN_TILED, LOCAL, POINTWISE, TILED, TilePlan, conv_reach, empty_map, local_residual


class LayerNorm(nn.Module):
    """Layer norm over channels at every pixel of an NCHW map (`body.weight`, `body.bias` as in checkpoints)."""

    tiling = POINTWISE

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.body = _LNBody(dim, bias)

    def forward(self, x):
        return self.body(x)


class _LNBody(nn.Module):
    tiling = POINTWISE

    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.dim = dim  # a Python int: an ONNX trace must not read the normalised size off a tensor's shape
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        y = x.permute(0, 2, 3, 1)
        if self.bias is not None:
            y = F.layer_norm(y, (self.dim,), self.weight, self.bias, 1e-5)
        else:  # Restormer's BiasFree norm scales by the std but does not centre.
            y = mul_into(y * torch.rsqrt(y.var(-1, keepdim=True, unbiased=False) + 1e-5), self.weight)
        return y.permute(0, 3, 1, 2)


def channel_attention_stats(q, k):
    """The sums over pixels that channel attention needs, for (B, heads, d, HW) q, k: the Gram matrix q k^T
    (B, heads, d, d) and the squared norms |q|^2, |k|^2 (B, heads, d). Sums of these over disjoint pixel sets are
    the statistics of their union (layer-wise tiling, models/tiling)."""
    gram = torch.stack([q[:, i] @ k[:, i].transpose(1, 2) for i in range(q.shape[1])], 1)
    # pow + sum: linalg.vector_norm over a strided channels-last dim is 5x slower.
    return gram, q.pow(2).sum(-1), k.pow(2).sum(-1)


def attention_from_stats(gram, q_sq, k_sq, temperature, eps: float = 1e-12):
    """softmax(norm(q) norm(k)^T * t) from :func:`channel_attention_stats`: (q/|q|)(k/|k|)^T = (q k^T) / (|q| |k|^T)
    with |.| clamped at eps as F.normalize does."""
    nq, nk = q_sq.sqrt().clamp_min(eps), k_sq.sqrt().clamp_min(eps)
    return torch.softmax(gram / (nq.unsqueeze(-1) * nk.unsqueeze(-2)) * temperature, dim=-1)


def channel_attention_weights(q, k, temperature, eps: float = 1e-12):
    """softmax(norm(q) norm(k)^T * t) for (B, heads, d, HW) q, k (any strides): (B, heads, d, d), in float32
    for half-precision inputs or under autocast.

    The L2 normalisation over HW is applied to the d x d Gram matrix instead of to q and k (see
    :func:`attention_from_stats`): the same maths without writing two normalised full-resolution copies.
    """
    if q.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(q.device.type):
        # Unnormalised q k^T sums over every pixel: far beyond float16's range (65504) on real images.
        with torch.autocast(q.device.type, enabled=False):
            return channel_attention_weights(q.float(), k.float(), temperature.float(), eps)
    return attention_from_stats(*channel_attention_stats(q, k), temperature, eps)


class Attention(nn.Module):
    """MDTA: global channel self-attention.

    out = W_out · blockdiag(A_1..A_heads) · v (+ b_out) with A_h the d x d attention of head h. The attention is a
    linear map across channels, so it is folded into the 1x1 output projection: one (C x C) matmul over the
    full-resolution map replaces attention-times-v followed by the projection. (scaled_dot_product_attention
    would compute the same d x d softmax but cannot fold the projection.)
    """

    tiling = IN_TILED   # its holders' tiled_forward runs tiled_residual

    def __init__(self, dim: int, num_heads: int, bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def qkv_maps(self, x):
        """q, k, v maps (views of one tensor, NCHW or channels-last memory)."""
        return self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)

    def mixing(self, attn):
        """W_out · blockdiag(A_1..A_heads): the (B, C, C) map from v to the output, for attention weights attn."""
        c = self.project_out.weight.shape[0]
        w_out = self.project_out.weight.view(c, self.num_heads, c // self.num_heads)
        return torch.einsum("ohi,bhij->bohj", w_out, attn.to(w_out.dtype)).reshape(attn.shape[0], c, c)

    def project(self, v, mix):
        """The output: mix · v (+ b_out) at every pixel of v (B, C, H, W)."""
        b, c, h, w = v.shape
        mix = mix.to(v.dtype)
        v = v.reshape(b, c, h * w)
        bias = self.project_out.bias
        if v.stride(1) == 1:    # channels-last: rows are pixels, keep the output channels-last too
            out = torch.bmm(v.transpose(1, 2), mix.transpose(1, 2)) if bias is None else \
                torch.baddbmm(bias.to(v.dtype), v.transpose(1, 2), mix.transpose(1, 2))
            return out.transpose(1, 2).view(b, c, h, w)
        out = torch.bmm(mix, v) if bias is None else torch.baddbmm(bias.to(v.dtype)[:, None], mix, v)
        return out.view(b, c, h, w)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv_maps(x)
        shape = (b, self.num_heads, c // self.num_heads, h * w)
        attn = channel_attention_weights(q.reshape(shape), k.reshape(shape), self.temperature)
        return self.project(v, self.mixing(attn))

    def tiled_residual(self, norm: nn.Module, x: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """x + self(norm(x)) in two passes over the tiles: the local step (qkv_maps, halo 1) per tile with the
        statistics of each tile's core added up (channel_attention_stats, float32 whatever the compute dtype: bf16
        would drop the small terms) and v kept; then the apply step (mixing, project) per tile."""
        b, c, h, w = x.shape
        shape = (b, self.num_heads, c // self.num_heads, -1)
        gram = q_sq = k_sq = v_map = None
        for win in plan.windows(h, w, conv_reach(self.qkv_dwconv)):
            q, k, v = (t[win.core_in_crop] for t in self.qkv_maps(norm(x[win.crop])))
            stats = channel_attention_stats(q.reshape(shape).float(), k.reshape(shape).float())
            gram, q_sq, k_sq = stats if gram is None else (gram + stats[0], q_sq + stats[1], k_sq + stats[2])
            if v_map is None:
                v_map = empty_map(x, c, h, w, dtype=v.dtype)
            v_map[win.core] = v
            del q, k, v
        mix = self.mixing(attention_from_stats(gram, q_sq, k_sq, self.temperature.float()))
        for win in plan.windows(h, w):   # v becomes the output in place: each tile reads and writes its own pixels
            v = v_map[win.core].contiguous(memory_format=torch.channels_last)
            v_map[win.core] = x[win.core] + self.project(v, mix)
        return v_map


class FeedForward(nn.Module):
    """GDFN: 1x1 expand, depthwise 3x3, GELU gate, 1x1 project."""

    tiling = LOCAL

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool = False):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(mul_into(F.gelu(x1), x2))


class TransformerBlock(nn.Module):
    """x + MDTA(LN(x)), then + GDFN(LN(.))."""

    activation_checkpoint = True  # unit of train.activation_checkpointing
    tiling = TILED

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 layernorm_bias: bool = True):
        super().__init__()
        self.norm1 = LayerNorm(dim, layernorm_bias)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layernorm_bias)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = add_to(self.attn(self.norm1(x)), x)
        return add_to(self.ffn(self.norm2(x)), x)

    def tiled_forward(self, plan: TilePlan, x):
        """forward, the MDTA in two passes over the tiles, the GDFN tile by tile."""
        if plan.fits(*x.shape[-2:]):
            return TransformerBlock.forward(self, x)   # self.forward is this method inside tiled_execution
        x = self.attn.tiled_residual(self.norm1, x, plan)
        return local_residual(lambda t: self.ffn(self.norm2(t)), x, conv_reach(self.ffn.dwconv), plan)


class OverlapPatchEmbed(nn.Module):
    """3x3 conv stem (`proj`)."""

    tiling = LOCAL

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    """Conv3x3 n -> n/2 then PixelUnshuffle(2): n -> 2n channels at half resolution."""

    tiling = LOCAL

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """Conv3x3 n -> 2n then PixelShuffle(2): n -> n/2 channels at double resolution."""

    tiling = LOCAL

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
