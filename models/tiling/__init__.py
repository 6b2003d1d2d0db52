"""Layer-wise tiled execution of the networks (see core.py): the driver and the tiling contract; each block's
tiled forward lives on the block's class, next to its forward."""
from .core import TilePlan, conv_reach, has_tiled_forward, spans, tiled_execution

__all__ = ["TilePlan", "conv_reach", "has_tiled_forward", "spans", "tiled_execution"]
