"""Tiled forward of LLFlow's residual dense blocks: purely local, crops with a halo of their reach (five 3x3
convolutions: 5 pixels), each crop's core kept."""
from __future__ import annotations

from ..encoders.rrdb import ResidualDenseBlock
from .core import TilePlan, conv_reach, map_tiles, tiled_forward


@tiled_forward(ResidualDenseBlock)
def dense_block(blk: ResidualDenseBlock, plan: TilePlan, x):
    if plan.fits(*x.shape[-2:]):
        return ResidualDenseBlock.forward(blk, x)
    return map_tiles(lambda t: ResidualDenseBlock.forward(blk, t), [x], plan, conv_reach(blk))
