"""Layer-wise tiled execution of the networks (see core.py); importing the package registers every tiled forward."""
from . import convnets, couplings, lewin, restormer  # noqa: F401  (register the tiled forwards)
from .core import TilePlan, conv_reach, has_tiled_forward, spans, tiled_execution

__all__ = ["TilePlan", "conv_reach", "has_tiled_forward", "spans", "tiled_execution"]
