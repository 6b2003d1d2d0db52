"""Residual dense blocks shared by the DRBN band unit and the band-recomposition net.

Attribute names (`convs.<i>.conv.0`, `LFF`) are the ones the official checkpoints use.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ...tiling.core import LOCAL


class DenseLayer(nn.Module):
    """3x3 conv + ReLU whose `growth` output channels are appended to its input."""

    tiling = LOCAL

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    """`n_layers` dense layers, a 1x1 local fusion back to `width` channels, and a residual connection."""

    tiling = LOCAL

    def __init__(self, width: int, growth: int, n_layers: int = 4):
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(width + i * growth, growth) for i in range(n_layers)])
        self.LFF = nn.Conv2d(width + n_layers * growth, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.LFF(self.convs(x)) + x
        # Inference: every layer writes its growth channels into one preallocated buffer and reads the prefix,
        # instead of concatenating (which copies all earlier channels again at every layer).
        width = x.shape[1]
        buf = torch.empty((x.shape[0], width + len(self.convs) * self.convs[0].conv[0].out_channels) + x.shape[2:],
                          dtype=x.dtype, device=x.device, memory_format=_layout(x))
        buf[:, :width] = x
        c = width
        for layer in self.convs:
            conv = layer.conv[0]
            buf[:, c:c + conv.out_channels] = torch.relu_(conv(buf[:, :c]))
            c += conv.out_channels
        return self.LFF(buf).add_(x)


def _layout(x: torch.Tensor):
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
