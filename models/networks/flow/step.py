"""A flow step: ActNorm -> invertible 1x1 conv -> (optional) coupling."""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.registry import COUPLING_REGISTRY, FLOW_STEP_REGISTRY
from .invconv import InvertibleConv1x1
from ...precision import keep_fp32
from ...tiling.core import FRAME
from .ops import ActNorm2d


@FLOW_STEP_REGISTRY.register("FlowStep")
class FlowStep(nn.Module):
    """Glow step. `coupling` (a COUPLING_REGISTRY name, built with `coupling_kwargs`); None gives the 'no-affine'
    steps placed after each squeeze. `rng` draws the invertible 1x1 conv's rotation."""

    tiling = FRAME

    def __init__(self, in_channels: int, cond_channels: int, coupling: str | None = None,
                 coupling_kwargs: dict | None = None, rng: torch.Generator | None = None):
        super().__init__()
        self.actnorm = keep_fp32(ActNorm2d(in_channels))   # acts on the flow's state z: float32 (models/precision.py)
        self.invconv = InvertibleConv1x1(in_channels, rng)
        if coupling is not None:
            self.affine = COUPLING_REGISTRY.get(coupling)(in_channels, cond_channels, **(coupling_kwargs or {}))
        else:
            self.affine = None

    def conditioning(self, ft):
        """What the coupling computes from the conditioning alone (its `conditional(ft)`), or None."""
        conditional = getattr(self.affine, "conditional", None)
        return conditional(ft) if conditional is not None else None

    def forward(self, z, logdet, ft=None, reverse: bool = False, cond=None):
        """`cond`: :meth:`conditioning`'s result for this ft, when the caller already has it (invertible backprop)."""
        kw = {} if cond is None else {"cond": cond}
        if not reverse:
            z, logdet = self.actnorm(z, logdet)
            z, logdet = self.invconv(z, logdet)
            if self.affine is not None:
                z, logdet = self.affine(z, logdet, ft, **kw)
            return z, logdet
        if self.affine is not None:
            z, logdet = self.affine(z, logdet, ft, reverse=True, **kw)
        z, logdet = self.invconv(z, logdet, reverse=True)
        z, logdet = self.actnorm(z, logdet, reverse=True)
        return z, logdet
