"""Activation checkpointing for the encoder: recompute each marked block's activations in the backward pass.

Blocks opt in with the class attribute `activation_checkpoint = True` (RRDB, Restormer and masked Transformer
blocks, LeWin blocks). Enabled by `train.activation_checkpointing: true`; it trades about a third more compute for
storing only block inputs, which is what keeps full-size Restormer-family training steps in memory. State-dict
keys do not change, and inference is unaffected.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def enable_activation_checkpointing(module: nn.Module) -> int:
    """Wrap the forward of every marked block under `module`; returns how many blocks were wrapped."""
    count = 0
    for m in module.modules():
        if getattr(type(m), "activation_checkpoint", False) and not getattr(m, "_checkpointed", False):
            inner = m.forward

            def forward(*args, _inner=inner, _m=m, **kwargs):
                if _m.training and torch.is_grad_enabled():
                    return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
                return _inner(*args, **kwargs)

            m.forward = forward
            m._checkpointed = True
            count += 1
    return count
