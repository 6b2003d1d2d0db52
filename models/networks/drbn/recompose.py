"""DRBN stage 2: band recomposition. A small residual-dense net predicts per-pixel, per-channel weights that mix the
stage-1 bands into the output (official names `SFENet1/2`, `RDBs.0`, `GFF`, `UPNet`, `UPNet2`, 19,161 parameters).

Bands (formed from the last DRBN unit): b1 = bilinear x4 of res4, b2 = bilinear x2 of res2, b3 = res1. The net sees
cat(lq, s0, s1, s2) with s0 = b1, s1 = b2 - b1, s2 = b3 - b2, and outputs s0*w1 + s1*w2 + s2*w3, where
w = conv*0.8 - 0.4 + 1 (no sigmoid, no clamp: as the official code, weights may leave [0.5, 1.5]).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.registry import ARCH_REGISTRY
from ...tiling.core import FRAME, LOCAL
from .blocks import ResidualDenseBlock, conv3x3
from .drbn import DRBN


class Recomposition(NamedTuple):
    output: torch.Tensor
    bands: tuple            # (b1, b2, b3)
    weights: tuple          # (w1, w2, w3)


def bands_from_drbn(res1: torch.Tensor, res2: torch.Tensor, res4: torch.Tensor):
    """(b1, b2, b3) = (bilinear x4 of res4, bilinear x2 of res2, res1), all at full resolution."""
    b1 = F.interpolate(res4, scale_factor=4, mode="bilinear", align_corners=False)
    b2 = F.interpolate(res2, scale_factor=2, mode="bilinear", align_corners=False)
    return b1, b2, res1


class BandRecomposer(nn.Module):
    """Per-pixel band weights from cat(lq, band differences); the official RECOMPOSE net."""

    tiling = LOCAL

    checkpoint_advice = "The checkpoint should be a band-recomposition net (official model_R_*.pt)."

    def __init__(self, colors: int = 3, width: int = 16, growth: int = 8, n_layers: int = 4):
        super().__init__()
        self.colors = colors
        self.SFENet1 = conv3x3(4 * colors, width)
        self.SFENet2 = conv3x3(width, width)
        self.RDBs = nn.ModuleList([ResidualDenseBlock(width, growth, n_layers)])
        self.GFF = nn.Sequential(nn.Conv2d(width, width, 1), conv3x3(width, width))
        self.UPNet = conv3x3(width, width)
        self.UPNet2 = conv3x3(width, 3 * colors)

    def forward(self, lq: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor, b3: torch.Tensor) -> Recomposition:
        s0, s1, s2 = b1, b2 - b1, b3 - b2
        # no activation outside the dense layers, exactly as the official net
        f1 = self.SFENet1(torch.cat((lq, s0, s1, s2), 1))
        f = self.RDBs[0](self.SFENet2(f1))
        f = f1 + self.GFF(f)
        wt = self.UPNet2(self.UPNet(f)) * 0.8 - 0.4 + 1
        w1, w2, w3 = wt.split(self.colors, dim=1)
        return Recomposition(s0 * w1 + s1 * w2 + s2 * w3, (b1, b2, b3), (w1, w2, w3))


@ARCH_REGISTRY.register("DRBNRecompose")
class DRBNRecompose(nn.Module):
    """Stage-2 network: the stage-1 `drbn` and the `recompose` net (a checkpoint holds `drbn.*` and `recompose.*`)."""

    tiling = FRAME

    checkpoint_advice = ("Check network_G.drbn (width, growth, n_layers, recurrences) against the checkpoint's "
                         "drbn.* tensors.")

    pad_multiple = 4
    aux_input = None
    uses_heat = False

    def __init__(self, drbn: DRBN | None = None):
        super().__init__()
        self.drbn = drbn if drbn is not None else DRBN()
        self.recompose = BandRecomposer()

    @classmethod
    def from_options(cls, opt: dict) -> "DRBNRecompose":
        """The stage-1 part sized by `network_G.drbn`; the recomposition net has the official size."""
        return cls(DRBN.from_options(opt))

    def bands(self, lq: torch.Tensor):
        return bands_from_drbn(*self.drbn(lq))

    def forward(self, lq: torch.Tensor, bands=None) -> Recomposition:
        """Recompose `lq`'s bands (computed with the DRBN unless given, e.g. from a frozen no-grad pass)."""
        b1, b2, b3 = self.bands(lq) if bands is None else bands
        return self.recompose(lq, b1, b2, b3)

    def enhance(self, lq: torch.Tensor, aux=None, heat: float = 0.0) -> torch.Tensor:
        """The recomposed image (unclamped); `aux` and `heat` are unused (engine protocol)."""
        return self.forward(lq).output
