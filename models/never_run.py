"""Official modules that the forward pass never runs: not built here, dropped on load, rebuilt by the export.

The official checkpoints hold layers that no forward pass uses (spec §9: LLFlow 1.18 M parameters, GLTG-AFlow
about 35.5 M, ZMAR-SNFlow 2.45 M; UPT-Flow none). Building them would cost memory and, under DDP, force
``find_unused_parameters``. A module declares each such submodule instead of building it::

    declare_never_run(self, "downconv3", lambda: nn.Conv2d(nf, nf, 3, padding=1))

The factory builds the official submodule exactly as the official constructor does (same class layout, PyTorch's
default initialisation). From the declarations:

- :func:`never_run_shapes` lists the official state-dict names and shapes (the factories run on the meta device);
  models/checkpoint.py ``load_weights`` drops exactly these keys from an official checkpoint and says so in one line;
  any other unexpected key is still an error;
- :func:`official_state_dict` writes the official layout back (engine/export_official.py): our tensors, plus every
  never-run tensor from its factory under a fixed seed (``EXPORT_SEED + i`` for the i-th declaration, i.e. a
  seeded default initialisation; they never influence an output), minus the tensors this implementation adds
  (modules' ``optional_checkpoint_keys``, e.g. GLTG-AFlow's SAN/CSN heads, which the official code cannot hold).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

EXPORT_SEED = 20250101


def declare_never_run(owner: nn.Module, name: str, factory: Callable[[], nn.Module]) -> None:
    """Record that the official `owner` has a submodule `name` (built by `factory`) that never runs.

    Call it where the official constructor builds that submodule: the factory runs once and its result is thrown
    away, so the global RNG advances exactly as in the official constructor and a seed gives every used layer the
    same initial weights as the official code (and as runs made before these modules were dropped).
    """
    registry = owner.__dict__.setdefault("_never_run", {})   # a plain attribute: not a submodule, not in state_dict
    registry[name] = factory
    factory()


def _declarations(model: nn.Module):
    for prefix, mod in model.named_modules():
        for name, factory in mod.__dict__.get("_never_run", {}).items():
            yield (f"{prefix}.{name}" if prefix else name), factory


def never_run_index(model: nn.Module) -> dict[str, tuple[str, torch.Size]]:
    """{official state-dict key: (declared module name, shape)} of every never-run tensor under `model`."""
    out = {}
    for base, factory in _declarations(model):
        with torch.device("meta"):
            sub = factory()
        out.update({f"{base}.{k}": (base, v.shape) for k, v in sub.state_dict().items()})
    return out


def never_run_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """{official state-dict key: shape} of every declared never-run tensor under `model`."""
    return {k: shape for k, (_, shape) in never_run_index(model).items()}


def never_run_parameter_count(model: nn.Module) -> int:
    return sum(s.numel() for s in never_run_shapes(model).values())


def added_keys(model: nn.Module) -> set[str]:
    """State-dict keys of `model` that official checkpoints lack (modules' ``optional_checkpoint_keys``)."""
    keys = set()
    for name, mod in model.named_modules():
        if hasattr(mod, "optional_checkpoint_keys"):
            keys.update((f"{name}." if name else "") + k for k in mod.optional_checkpoint_keys())
    return keys


def official_state_dict(model: nn.Module, seed: int = EXPORT_SEED) -> dict[str, torch.Tensor]:
    """The official-layout state dict of `model` (CPU tensors; see the module docstring for what is filled how)."""
    net = model.module if hasattr(model, "module") else model
    drop = added_keys(net)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items() if k not in drop}
    for i, (base, factory) in enumerate(_declarations(net)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            sub = factory()
        state.update({f"{base}.{k}": v.detach().cpu() for k, v in sub.state_dict().items()})
    return state
