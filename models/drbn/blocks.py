"""Residual dense blocks shared by the DRBN band unit and the band-recomposition net.

Attribute names (`convs.<i>.conv.0`, `LFF`) are the ones the official checkpoints use.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class DenseLayer(nn.Module):
    """3x3 conv + ReLU whose `growth` output channels are appended to its input."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    """`n_layers` dense layers, a 1x1 local fusion back to `width` channels, and a residual connection."""

    def __init__(self, width: int, growth: int, n_layers: int = 4):
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(width + i * growth, growth) for i in range(n_layers)])
        self.LFF = nn.Conv2d(width + n_layers * growth, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
