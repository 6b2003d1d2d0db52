"""Reading and writing weights: official plain state dicts, `module.`-prefixed ones and our own files.

Loading is strict by default and always uses `torch.load(..., weights_only=True)`; mismatches are reported in
sentences (missing / unexpected / wrong-shape keys), with model-specific explanations where a module offers one.

The format follows the file name: `*.safetensors` is read and written with the `safetensors` package (a flat
name -> tensor table, no pickle at all), anything else with torch's zip format. Either holds the same state dict
(official layout: plain keys such as `RRDB.*`, `flowUpsamplerNet.*`), so an official `.pth` converts losslessly:
`python tools/convert_checkpoint.py IN.pth OUT.safetensors`.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from utils.atomic import atomic_open
from utils.errors import CheckpointError

log = logging.getLogger("lowlight_flow")


def safe_load(path: str | os.PathLike, what: str = "checkpoint"):
    """`torch.load(weights_only=True)` on the CPU; a missing, truncated or corrupt file, or a pickle that needs
    arbitrary code, is a CheckpointError naming the file (torch's own warnings about such files are not shown)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} '{path}' not found")
    if _looks_like_safetensors(p):
        raise CheckpointError(f"{what} '{path}' is a safetensors file named '{p.suffix}': rename it to "
                              f"'{p.stem}{SAFETENSORS_SUFFIX}' (the format is chosen by the name)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad files: refuse any of them
        first = (str(e).strip().splitlines() or ["empty or truncated file"])[0]
        if "Weights only load failed" in first:  # torch's advice (weights_only=False) would run the file's code
            first = ("it holds pickled Python objects besides tensors, and such files are never unpickled "
                     "(weights_only loading); re-save only the state dict (or a training state of this framework)")
        raise CheckpointError(f"cannot read {what} '{path}': {type(e).__name__}: {first}") from None


SAFETENSORS_SUFFIX = ".safetensors"


def _looks_like_safetensors(p: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON starting with '{'."""
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < p.stat().st_size


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file name asks for the safetensors format (`.safetensors`, any case)."""
    return Path(path).suffix.lower() == SAFETENSORS_SUFFIX


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as e:  # pinned in requirements.txt; only a hand-made environment lacks it
        raise CheckpointError("the 'safetensors' package is needed for .safetensors weights: "
                              "pip install -r requirements.txt") from e
    return st


def read_state_dict(path: str | os.PathLike) -> dict:
    """Load a state dict from an official `.pth`, a DataParallel one, our training files, or a `.safetensors`."""
    if not is_safetensors(path):
        obj = safe_load(path)
    else:
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"checkpoint '{path}' not found")
        st = _safetensors()
        try:
            obj = st.load_file(str(p), device="cpu")
        except Exception as e:  # truncated or not a safetensors file
            first = (str(e).strip().splitlines() or ["empty or truncated file"])[0]
            raise CheckpointError(f"cannot read checkpoint '{path}': {type(e).__name__}: {first}") from None
    for key in ("params", "state_dict", "netG", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint '{path}' does not hold a state dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_weights(model: torch.nn.Module, state: dict, strict: bool = True, source: str = "checkpoint",
                 advice: str | None = None) -> list[str]:
    """Copy `state` into `model`. Returns notes (e.g. keys a module initialises itself); raises on real mismatches.

    Modules may define `optional_checkpoint_keys()` (names relative to themselves that official checkpoints lack and
    that they initialise deterministically) and `explain_checkpoint_mismatch(state, prefix)` (one sentence, or None).
    A mismatch ends with `advice`, else the model's `checkpoint_advice` (which config keys set its shapes).
    The official layout is first converted to ours (models/conversion: e.g. tensors of official modules that never
    run are dropped, with one note saying how many).
    """
    from .conversion import to_ours
    state, notes = to_ours(model, state, source)
    own = model.state_dict()
    optional = set()
    for name, mod in model.named_modules():
        if hasattr(mod, "optional_checkpoint_keys"):
            prefix = f"{name}." if name else ""
            optional.update(prefix + k for k in mod.optional_checkpoint_keys())
    for name, mod in model.named_modules():
        if hasattr(mod, "explain_checkpoint_mismatch"):
            msg = mod.explain_checkpoint_mismatch(state, f"{name}." if name else "")
            if msg:
                raise CheckpointError(f"{source}: {msg}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    tolerated = [k for k in missing if k in optional]
    missing = [k for k in missing if k not in optional]
    if tolerated:
        notes.append(f"{source} lacks {len(tolerated)} tensors that this implementation adds "
                     f"(kept at their deterministic initialisation): {', '.join(sorted(tolerated)[:6])}"
                     + (" ..." if len(tolerated) > 6 else ""))
    problems = []
    if shape:
        problems.append(f"{len(shape)} tensors have other shapes, e.g. {'; '.join(shape[:3])}")
    if strict and missing:
        problems.append(f"{len(missing)} model tensors are missing, e.g. {', '.join(missing[:5])}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} checkpoint tensors are unknown to the model, e.g. {', '.join(unexpected[:5])}")
    if problems:
        advice = advice or getattr(model, "checkpoint_advice", None) or (
            "Check that the config's model: and network_G are those the checkpoint was trained with.")
        raise CheckpointError(f"{source} does not match the model built from the config: " + "; ".join(problems)
                              + ". " + advice)
    bad = [k for k, v in state.items() if k in own and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        # Loud, not fatal: a NaN in a tensor the forward pass never reads is harmless; the test scripts refuse
        # non-finite outputs, and training skips non-finite steps.
        log.warning("%s holds NaN/inf values in %d tensor(s), e.g. %s: outputs will likely be NaN", source, len(bad),
                    ", ".join(bad[:3]))
    model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    if not strict and (missing or unexpected):
        notes.append(f"non-strict load: {len(missing)} missing, {len(unexpected)} unexpected tensors ignored")
    return notes


def _flat_tensors(obj, path) -> dict:
    """A state dict as safetensors stores it: contiguous CPU tensors, no two sharing memory (the format forbids
    aliases; tied or viewed weights are copied)."""
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"'{path}': a .safetensors file holds only a flat name -> tensor table; save training "
                              f"states (optimiser, RNG, ...) as .pth/.state")
    out, seen = {}, set()
    for k, v in obj.items():
        t = v.detach().cpu().contiguous()
        if t.numel():
            storage = t.untyped_storage()
            if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:  # shared, or a view of a larger buffer
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def atomic_save(obj, path: str | os.PathLike):
    """Save through a temp file and rename (a kill never leaves a half-written checkpoint): `torch.save`, or
    safetensors when the name ends in `.safetensors` (then `obj` must be a flat name -> tensor dict)."""
    if is_safetensors(path):
        data = _safetensors().save(_flat_tensors(obj, path), metadata={"format": "pt"})
        with atomic_open(path) as f:
            f.write(data)
        return
    with atomic_open(path) as f:
        torch.save(obj, f)


def save_generator(model: torch.nn.Module, path: str | os.PathLike):
    """Save as the official code does: a plain CPU state dict without `module.` (`.pth`, or `.safetensors`)."""
    net = model.module if hasattr(model, "module") else model
    atomic_save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Rewrite the state dict of `src` into `dst` (format from each name; `module.` and wrappers removed).
    Returns the number of tensors."""
    state = read_state_dict(src)
    atomic_save(state, dst)
    return len(state)


if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("models.checkpoint", "convert_checkpoint")
