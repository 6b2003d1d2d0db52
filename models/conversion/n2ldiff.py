"""Checkpoint conversion of N2LDiff: the official Lightning checkpoint -> ours.

The official Lightning files wrap the state dict under ``state_dict`` (unwrapped by models/checkpoint.py
``read_state_dict``); their parameter names are ours (``model.*``, ``encoder.*``). A real training checkpoint of the
official code also holds loss/metric networks (torchmetrics LPIPS-VGG attached in on_train_start, lpips AlexNet in
on_validation_start), which :func:`to_ours` skips with a note. The official YAML configs are converted by
options/n2ldiff_official.py (the options layer reads configs before any model exists).
"""
from __future__ import annotations

import torch.nn as nn

# Sub-modules a real training checkpoint of the official code also holds: not part of the model.
TRAINING_ONLY_PREFIXES = ("lpips.", "loss_fn_alex.")


def split_training_only(state: dict) -> tuple[dict, list[str]]:
    """(state without the official training-time LPIPS modules, the dropped keys)."""
    dropped = [k for k in state if k.startswith(TRAINING_ONLY_PREFIXES)]
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}, dropped


def to_ours(model: nn.Module, state: dict, source: str) -> tuple[dict, list[str]]:
    """(`state` without the training-time LPIPS modules when `model` is an N2LDiffNet, notes saying so)."""
    from ..networks.n2ldiff.network import N2LDiffNet
    if not isinstance(model, N2LDiffNet):
        return state, []
    state, dropped = split_training_only(state)
    if not dropped:
        return state, []
    return state, [f"{source}: skipped {len(dropped)} tensors of the official training-time LPIPS modules "
                   f"(lpips.*, loss_fn_alex.*): loss/metric networks, not part of the model"]

