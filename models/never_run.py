"""Declaring official modules that the forward pass never runs (they are not built; see models/conversion/flows.py).

The official checkpoints hold layers that no forward pass uses. Building them would cost memory and, under DDP,
force ``find_unused_parameters``. A module declares each such submodule instead of building it::

    declare_never_run(self, "downconv3", lambda: nn.Conv2d(nf, nf, 3, padding=1))

The factory builds the official submodule exactly as the official constructor does (same class layout, PyTorch's
default initialisation). What is done with the declarations (dropping those tensors on load, writing them back on
export) lives at the checkpoint boundary, models/conversion/flows.py.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn


def declare_never_run(owner: nn.Module, name: str, factory: Callable[[], nn.Module]) -> None:
    """Record that the official `owner` has a submodule `name` (built by `factory`) that never runs.

    Call it where the official constructor builds that submodule: the factory runs once and its result is thrown
    away, so the global RNG advances exactly as in the official constructor and a seed gives every used layer the
    same initial weights as the official code (and as runs made before these modules were dropped).
    """
    registry = owner.__dict__.setdefault("_never_run", {})   # a plain attribute: not a submodule, not in state_dict
    registry[name] = factory
    factory()


def declarations(model: nn.Module):
    """(full submodule name, factory) of every never-run module declared under `model`."""
    for prefix, mod in model.named_modules():
        for name, factory in mod.__dict__.get("_never_run", {}).items():
            yield (f"{prefix}.{name}" if prefix else name), factory
