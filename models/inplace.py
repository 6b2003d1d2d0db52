"""Element-wise results written into a fresh intermediate instead of a new tensor, where autograd is not recording.

Inference allocates one full-size map per out-of-place operation; writing a residual add, a gate or a scale into
the intermediate that is dropped right after saves that allocation (and the memory traffic of touching new pages)
without changing a value: the same operation on the same operands, in the same order where order matters. While
autograd records (training) the out-of-place form is kept, since backward may need the overwritten input.
"""
from __future__ import annotations

import torch


def _can_write(y: torch.Tensor, x) -> bool:
    """Whether `y op x` may be written into `y`: no autograd, and the result has y's dtype and shape (under autocast
    a bf16 intermediate plus a float32 input is float32 out of place, so it is not written into the bf16 tensor)."""
    if torch.is_grad_enabled():
        return False
    if not isinstance(x, torch.Tensor):
        return y.dtype == torch.result_type(y, x)
    return y.dtype == torch.result_type(y, x) and y.shape == torch.broadcast_shapes(y.shape, x.shape)


def add_to(y: torch.Tensor, x) -> torch.Tensor:
    """`x + y` for a fresh intermediate `y` the caller drops afterwards (floating-point addition commutes, so the
    values are those of `x + y`)."""
    return y.add_(x) if _can_write(y, x) else x + y


def mul_into(y: torch.Tensor, x) -> torch.Tensor:
    """`y * x` for a fresh intermediate `y` the caller drops afterwards."""
    return y.mul_(x) if _can_write(y, x) else y * x
