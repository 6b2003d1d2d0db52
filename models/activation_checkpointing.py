"""Activation checkpointing for the encoder: recompute each marked block's activations in the backward pass.

Blocks opt in with the class attribute `activation_checkpoint = True` (RRDB, Restormer and masked Transformer
blocks, LeWin blocks). Enabled by `train.activation_checkpointing: true`; it trades about a third more compute for
storing only block inputs, which is what keeps full-size Restormer-family training steps in memory. State-dict
keys do not change, and inference is unaffected.
"""
from __future__ import annotations

import types

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def _checkpointed_forward(self, *args, **kwargs):
    inner = type(self).forward.__get__(self)
    if self.training and torch.is_grad_enabled():
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)
    return inner(*args, **kwargs)


def enable_activation_checkpointing(module: nn.Module) -> int:
    """Wrap the forward of every marked block under `module`; returns how many blocks were wrapped.

    The wrapper is a method bound to its block, so a deep copy (e.g. the EMA copy of the network) calls its own
    weights, not the original's.
    """
    count = 0
    for m in module.modules():
        if getattr(type(m), "activation_checkpoint", False) and not getattr(m, "_checkpointed", False):
            m.forward = types.MethodType(_checkpointed_forward, m)
            m._checkpointed = True
            count += 1
    return count
