"""DRBN stage 1 (Yang et al., CVPR 2020, "From Fidelity to Perceptual Quality"): four recurrent band units.

Each unit predicts the image at full, 1/2 and 1/4 resolution (res1, res2, res4); unit k > 1 sees the previous unit's
full-resolution output next to the input and adds the previous unit's features at every scale. Module names
(`recur1..4`, `SFENet1/2`, `RDBs`, `UPNet/UPNet2/UPNet4`, `Down1/2`, `Up1/2`) follow the official checkpoint.
Bands carry no activation and no clamp; H and W must be multiples of 4 (`pad_multiple`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.registry import ARCH_REGISTRY
from ...inplace import add_to
from ...kwargs import section_kwargs
from ...tiling.core import FRAME, LOCAL
from .blocks import ResidualDenseBlock, conv3x3


class BandState(NamedTuple):
    """What one band unit hands to the next: the three bands and the features they came from."""
    res1: torch.Tensor
    res2: torch.Tensor
    res4: torch.Tensor
    feat1: torch.Tensor
    feat2: torch.Tensor
    feat4: torch.Tensor


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2, half-pixel centres (nn.Upsample's default, align_corners=False)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _head(cin: int, width: int, colors: int) -> nn.Sequential:
    # two bare convolutions: the official band heads have no activation in between
    return nn.Sequential(conv3x3(cin, width), conv3x3(width, colors))


class BandUnit(nn.Module):
    """One recurrence: a three-scale U-shaped network of residual dense blocks (width 16, growth 8, 4 layers)."""

    tiling = LOCAL   # strided and transposed convs, bilinear upsampling: no reduction over the map

    def __init__(self, colors: int = 3, width: int = 16, growth: int = 8, n_layers: int = 4):
        super().__init__()
        w, g = width, growth
        self.SFENet1 = conv3x3(2 * colors, w)
        self.SFENet2 = conv3x3(w, w)
        # 0, 1: encoder at 1/1 and 1/2; 2, 3: bottleneck at 1/4 (double width); 4, 5: decoder at 1/2 and 1/1
        self.RDBs = nn.ModuleList([ResidualDenseBlock(w, g, n_layers), ResidualDenseBlock(w, g, n_layers),
                                   ResidualDenseBlock(2 * w, 2 * g, n_layers),
                                   ResidualDenseBlock(2 * w, 2 * g, n_layers),
                                   ResidualDenseBlock(w, g, n_layers), ResidualDenseBlock(w, g, n_layers)])
        self.UPNet = _head(w, w, colors)
        self.UPNet2 = _head(w, w, colors)
        self.UPNet4 = _head(2 * w, w, colors)
        self.Down1 = conv3x3(w, w, stride=2)
        self.Down2 = conv3x3(w, 2 * w, stride=2)
        self.Up1 = nn.ConvTranspose2d(w, w, 4, stride=2, padding=1)
        self.Up2 = nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, prev: BandState | None = None) -> BandState:
        """`x`: the 2*colors-channel input; `prev`: the previous unit's state (None for the first unit)."""
        # add_to / in-place ReLU: without autograd the sums are written into the fresh intermediates (same values)
        inplace = not torch.is_grad_enabled()
        first = F.relu(self.SFENet1(x), inplace=inplace)
        f1 = F.relu(self.SFENet2(first), inplace=inplace)
        f2 = self.Down1(self.RDBs[0](f1))
        f4 = self.Down2(self.RDBs[1](f2))
        f4 = add_to(self.RDBs[3](self.RDBs[2](f4)), f4)
        if prev is not None:
            f4 = add_to(f4, prev.feat4)
        f2 = add_to(self.RDBs[4](self.Up2(f4)), f2)
        if prev is not None:
            f2 = add_to(f2, prev.feat2)
        f1 = add_to(add_to(self.RDBs[5](self.Up1(f2)), f1), first)
        if prev is not None:
            f1 = add_to(f1, prev.feat1)
        res4 = self.UPNet4(f4)
        res2 = add_to(up2(res4), self.UPNet2(f2))
        res1 = add_to(up2(res2), self.UPNet(f1))
        return BandState(res1, res2, res4, f1, f2, f4)


@ARCH_REGISTRY.register("DRBN")
class DRBN(nn.Module):
    """Deep recursive band network: `recur1..recur4`. Input RGB in [0, 1]; `enhance` returns res1 of the last unit.

    The sizes default to the official ones (557,668 parameters); smaller ones are for tiny demo/test configs.
    """

    tiling = FRAME

    checkpoint_advice = ("Check network_G.drbn (width, growth, n_layers, recurrences) and that the checkpoint is "
                         "a stage-1 DRBN.")

    pad_multiple = 4
    aux_input = None
    uses_heat = False  # deterministic: a non-zero --heat is refused instead of silently ignored

    def __init__(self, width: int = 16, growth: int = 8, n_layers: int = 4, recurrences: int = 4):
        super().__init__()
        self.n_recurrences = int(recurrences)
        for k in range(1, self.n_recurrences + 1):
            self.add_module(f"recur{k}", BandUnit(3, int(width), int(growth), int(n_layers)))

    @classmethod
    def from_options(cls, opt: dict) -> "DRBN":
        """Sizes from `network_G.drbn` (null/missing keys: the constructor defaults, the official sizes)."""
        return cls(**section_kwargs((opt.get("network_G") or {}).get("drbn"), cls, "network_G.drbn"))

    def sizes(self) -> dict:
        u = self.recur1
        return {"width": u.SFENet1.out_channels, "growth": u.RDBs[0].convs[0].conv[0].out_channels,
                "n_layers": len(u.RDBs[0].convs), "recurrences": self.n_recurrences}

    def explain_checkpoint_mismatch(self, state: dict, prefix: str) -> str | None:
        """One sentence when `state` holds a DRBN of other sizes (models.checkpoint.load_weights hook)."""
        first = f"{prefix}recur1."
        try:
            theirs = {"width": state[f"{first}SFENet1.weight"].shape[0],
                      "growth": state[f"{first}RDBs.0.convs.0.conv.0.weight"].shape[0],
                      "n_layers": len({k[len(first):].split(".")[3] for k in state
                                    if k.startswith(f"{first}RDBs.0.convs.")}),
                      "recurrences": len({k[len(prefix):].split(".")[0] for k in state
                                          if k.startswith(f"{prefix}recur")})}
        except KeyError:
            return None
        if theirs == self.sizes():
            return None
        have = ", ".join(f"{k} {v}" for k, v in theirs.items())
        return f"it holds a DRBN with {have}: set network_G.drbn to these sizes"

    def units(self):
        return [getattr(self, f"recur{k}") for k in range(1, self.n_recurrences + 1)]

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """(res1, res2, res4) of the last unit; with `return_all`, the list of every unit's (res1, res2, res4)."""
        state, every = None, []
        for unit in self.units():
            # the first unit sees the input twice; later ones see the previous full-resolution band instead
            inp = torch.cat((x if state is None else state.res1, x), 1)
            state = unit(inp, state)
            if return_all:
                every.append((state.res1, state.res2, state.res4))
        return every if return_all else (state.res1, state.res2, state.res4)

    def enhance(self, lq: torch.Tensor, aux=None, heat: float = 0.0) -> torch.Tensor:
        """The enhanced image (res1 of the last unit, unclamped); `aux` and `heat` are unused (engine protocol)."""
        return self.forward(lq)[0]
