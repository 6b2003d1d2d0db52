"""Checkpoint conversion of the flow family (LLFlow, GLTG-AFlow, ZMAR-SNFlow, UPT-Flow): official layout <-> ours.

Our state-dict names are the official ones; the layouts differ only in modules (models/never_run.py):

- official modules that never run (LLFlow 1.18 M parameters, GLTG-AFlow about 35.5 M, ZMAR-SNFlow 2.45 M; UPT-Flow
  none) are declared by the networks, not built. :func:`to_ours` drops exactly those keys from an official
  checkpoint and says so in one line (:func:`never_run_shapes` lists their official names and shapes: the
  factories run on the meta device); any other unexpected key is still an error;
- :func:`to_official` (:func:`official_state_dict`, used by tools/export_official.py) writes the official layout
  back: our tensors, plus every never-run tensor from its factory under a fixed seed (``EXPORT_SEED + i`` for the
  i-th declaration, i.e. a seeded default initialisation; they never influence an output), minus the tensors this
  implementation adds (modules' ``optional_checkpoint_keys``, e.g. GLTG-AFlow's SAN/CSN heads, which the official
  code cannot hold).

:func:`detect_variant_from_keys` tells the family of a checkpoint from its key names.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..never_run import declarations

EXPORT_SEED = 20250101

# Distinctive state-dict key fragments of each family's checkpoints (official ones and ours, which lack the never-run
# modules), checked in this order.
KEY_SIGNATURES = {
    "upt": "relative_position_index",
    "gltg": "attn_intra",
    "zmar": "fAffine2",
    "llflow": "RRDB_trunk",
}


def detect_variant_from_keys(keys) -> str | None:
    """Family of a state dict from its key names, or None if unrecognised."""
    keys = list(keys)
    for name, frag in KEY_SIGNATURES.items():
        if any(frag in k for k in keys):
            return name
    return None


def never_run_index(model: nn.Module) -> dict[str, tuple[str, torch.Size]]:
    """{official state-dict key: (declared module name, shape)} of every never-run tensor under `model`."""
    out = {}
    for base, factory in declarations(model):
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


def to_ours(model: nn.Module, state: dict, source: str) -> tuple[dict, list[str]]:
    """(`state` without the tensors of official modules that `model` declares never-run, notes saying so)."""
    own = model.state_dict()
    never_run = never_run_index(model)
    dropped = [k for k in state if k in never_run and k not in own]
    if not dropped:
        return state, []
    drop = set(dropped)
    state = {k: v for k, v in state.items() if k not in drop}
    n_par = sum(int(never_run[k][1].numel()) for k in dropped)
    owners = sorted({never_run[k][0].rsplit(".", 1)[-1] for k in dropped})
    return state, [f"{source}: dropped {len(dropped)} tensors ({n_par / 1e6:.2f} M parameters) of official modules "
                   f"that the forward pass never runs ({', '.join(owners)}; "
                   f"docs/methods.md 'Never-run modules')"]


def official_state_dict(model: nn.Module, seed: int = EXPORT_SEED) -> dict[str, torch.Tensor]:
    """The official-layout state dict of `model` (CPU tensors; see the module docstring for what is filled how)."""
    net = model.module if hasattr(model, "module") else model
    drop = added_keys(net)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items() if k not in drop}
    for i, (base, factory) in enumerate(declarations(net)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            sub = factory()
        state.update({f"{base}.{k}": v.detach().cpu() for k, v in sub.state_dict().items()})
    return state


to_official = official_state_dict
