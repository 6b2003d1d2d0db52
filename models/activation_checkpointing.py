"""Activation checkpointing for the encoder: recompute each marked block's activations in the backward pass.

Blocks opt in with the class attribute `activation_checkpoint = True` (RRDB, Restormer and masked Transformer
blocks, LeWin blocks). `train.activation_checkpointing`:

- `true` (`'full'`): store only block inputs and recompute the whole block in the backward pass (about a third more
  compute); what keeps full-size Restormer-family training steps in memory;
- `'selective'`: inside each block keep the outputs of convolutions and matrix products and recompute only the
  cheap element-wise work (activations, concatenations, residual sums): far less extra compute, less memory saved.
  Suits convolution-heavy blocks such as LLFlow's RRDB, whose dense concatenations hold most of its activations.

State-dict keys do not change, and inference is unaffected.
"""
from __future__ import annotations

import functools
import types

import torch
import torch.nn as nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from utils.errors import OptionError

# the outputs 'selective' keeps (everything else inside a block is recomputed)
_SAVED_OPS = {torch.ops.aten.convolution.default, torch.ops.aten.mm.default, torch.ops.aten.bmm.default,
              torch.ops.aten.addmm.default, torch.ops.aten.baddbmm.default}


def _keep_products(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_CONTEXT = {"full": {}, "selective": {"context_fn": functools.partial(create_selective_checkpoint_contexts,
                                                                       _keep_products)}}


def checkpoint_mode(value) -> str | None:
    """`train.activation_checkpointing` -> None, 'full' or 'selective' (OptionError naming the key otherwise)."""
    if value in (None, False, "", "none"):
        return None
    if value is True or value == "full":
        return "full"
    if value == "selective":
        return "selective"
    raise OptionError(f"train.activation_checkpointing: {value!r}; use true (full), 'selective' or false")


def _checkpointed_forward(self, *args, **kwargs):
    inner = type(self).forward.__get__(self)
    if self.training and torch.is_grad_enabled():
        return checkpoint(inner, *args, use_reentrant=False, **_CONTEXT[self._checkpointed], **kwargs)
    return inner(*args, **kwargs)


def enable_activation_checkpointing(module: nn.Module, mode="full") -> int:
    """Wrap the forward of every marked block under `module` (`mode`: 'full' or 'selective', see the module
    docstring); returns how many blocks were wrapped.

    The wrapper is a method bound to its block, so a deep copy (e.g. the EMA copy of the network) calls its own
    weights, not the original's.
    """
    mode = checkpoint_mode(mode)
    count = 0
    for m in module.modules():
        if getattr(type(m), "activation_checkpoint", False) and not getattr(m, "_checkpointed", False):
            m.forward = types.MethodType(_checkpointed_forward, m)
            m._checkpointed = mode
            count += 1
    return count
