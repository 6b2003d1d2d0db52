"""Building blocks of the N2LDiff U-Nets (denoiser and condition encoder).

Module nesting and indices follow the official code, so parameter names (``block1.block.1.weight_g``,
``downs.0.2.conv.1.weight_v``, ``ups.0.2.conv.0.weight`` ...) match the official Lightning checkpoints. Every
``Conv2d`` of the official nets is weight-normed; the transposed convs and the Linear layers are not.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class WNConv2d(nn.Module):
    """A weight-normed Conv2d: weight = g * v / ||v|| (norm over all but the output dim), parameters named
    ``weight_g``, ``weight_v``, ``bias`` as ``torch.nn.utils.weight_norm`` stores them.

    Our own module rather than the deprecated hook (FutureWarning on every build) or
    ``parametrizations.weight_norm`` (renames the tensors to ``parametrizations.weight.original0/1``, so our
    checkpoints would no longer have the official layout). Initialised like ``weight_norm(nn.Conv2d(...))``.
    """

    official_numerics = False   # set by set_official_numerics()

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        conv = nn.Conv2d(cin, cout, k, stride)  # PyTorch's default init, then g = ||v|| as weight_norm does
        self.stride = stride
        self.weight_v = nn.Parameter(conv.weight.detach().clone())
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(self.weight_v.detach(), dim=(1, 2, 3), keepdim=True))
        self.bias = nn.Parameter(conv.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        v = self.weight_v
        if self.official_numerics:   # the fused op torch.nn.utils.weight_norm computes
            return torch._weight_norm(v, self.weight_g, 0)
        return v * (self.weight_g / torch.linalg.vector_norm(v, dim=(1, 2, 3), keepdim=True))

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride)


class Mish(nn.Mish):
    """nn.Mish (the fused F.mish); with ``official_numerics`` the official formula x * tanh(softplus(x))."""

    official_numerics = False   # set by set_official_numerics()

    def forward(self, x):
        if self.official_numerics:
            return x * torch.tanh(F.softplus(x))
        return super().forward(x)


def set_official_numerics(net: nn.Module, on: bool = True) -> None:
    """Compute weight norm and Mish with the official code's operations (torch._weight_norm; x tanh(softplus x))
    instead of ours. The same functions, rounded differently: nothing changes beyond float32 rounding (about 1e-7
    relative), but Lion's sign update turns gradient rounding differences into whole-step differences, so step by
    step equality with the official training (train.n2ldiff.official_compat) needs the same operations
    (docs/training-equivalence-drbn-n2ldiff.md)."""
    for m in net.modules():
        if isinstance(m, (WNConv2d, Mish)):
            m.official_numerics = bool(on)


def conv(cin: int, cout: int, k: int, stride: int = 1, wn: bool = True) -> nn.Module:
    return WNConv2d(cin, cout, k, stride) if wn else nn.Conv2d(cin, cout, k, stride)


class SinusoidalPosEmb(nn.Module):
    """[sin(t f_k), cos(t f_k)], f_k = exp(-k ln(10000) / (dim/2 - 1)), k < dim/2 (frequencies precomputed)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t):
        emb = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


def time_mlp(dim: int) -> nn.Sequential:
    """Linear(dim, 4 dim) -> Mish -> Linear(4 dim, dim) (official names mlp.0 / mlp.2)."""
    return nn.Sequential(nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))


class Block(nn.Module):
    """ReflectionPad(1) -> Conv3x3 -> Mish (the official ``groups=0`` block: no GroupNorm)."""

    def __init__(self, cin: int, cout: int, wn: bool = True):
        super().__init__()
        self.block = nn.Sequential(nn.ReflectionPad2d(1), conv(cin, cout, 3, wn=wn), Mish())

    def forward(self, x):
        return self.block(x)


class ResnetBlock(nn.Module):
    """h = IN(block1(x)) [+ Linear(Mish(t_emb)) per channel]; h = IN(block2(h)); return h + res_conv(x).

    ``use_time=False`` is the encoder's ResnetBlockCond: the official one still builds the time ``mlp`` (its
    weights are in the checkpoints) but never calls it; it is kept, unused, so those checkpoints load strictly.
    The one InstanceNorm (affine False, no running stats) is applied twice, as in the official code.
    """

    def __init__(self, cin: int, cout: int, time_dim: int, use_in: bool = True, wn: bool = True,
                 use_time: bool = True):
        super().__init__()
        self.use_time = use_time
        self.mlp = nn.Sequential(Mish(), nn.Linear(time_dim, cout))
        self.block1 = Block(cin, cout, wn)
        self.block2 = Block(cout, cout, wn)
        self.res_conv = conv(cin, cout, 1, wn=wn) if cin != cout else nn.Identity()
        self.m = nn.InstanceNorm2d(cout) if use_in else nn.Identity()

    def forward(self, x, t_emb=None):
        h = self.m(self.block1(x))
        if self.use_time:
            h = h + self.mlp(t_emb)[:, :, None, None]
        h = self.m(self.block2(h))
        return h + self.res_conv(x)


class Downsample(nn.Module):
    """ReflectionPad(1) -> Conv3x3 stride 2."""

    def __init__(self, dim: int, wn: bool = True):
        super().__init__()
        self.conv = nn.Sequential(nn.ReflectionPad2d(1), conv(dim, dim, 3, stride=2, wn=wn))

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """ConvTranspose2d(dim, dim, 4, 2, 1) (never weight-normed)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Sequential(nn.ConvTranspose2d(dim, dim, 4, 2, 1))

    def forward(self, x):
        return self.conv(x)


def init_official(net: nn.Module) -> None:
    """The official ``initialize_weights`` as it really acts after weight norm (spec 8.1): Linear weights
    kaiming-normal(fan_in) x 0.1 and zero bias; conv biases zeroed; weight-normed conv weights keep their default
    init (the official call wrote into the derived ``.weight``, which weight norm recomputes from g and v);
    transposed convs untouched."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            with torch.no_grad():
                m.weight.mul_(0.1)
                m.bias.zero_()
        elif isinstance(m, WNConv2d):
            with torch.no_grad():
                m.bias.zero_()
        elif isinstance(m, nn.Conv2d):  # use_wn false: the official init does reach the weight
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            with torch.no_grad():
                m.weight.mul_(0.1)
                if m.bias is not None:
                    m.bias.zero_()
