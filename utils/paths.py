"""Checking output locations before any work is done, so a bad `--out` costs a one-line error, not a finished run."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def prepare_dir(path, key: str) -> Path:
    """Create folder `path` (and its parents) if needed and check it can be written; `key` names the option.

    A file in the way, a missing permission or a read-only file system is an OutputError naming `key` and `path`.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{key}: '{p}' is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((a for a in p.parents if a.exists() and not a.is_dir()), None)
        why = f"'{blocker}' is a file" if blocker is not None else _why(e)
        raise OutputError(f"{key}: cannot create folder '{p}': {why}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"{key}: folder '{p}' is not writable")
    return p


def prepare_file(path, key: str) -> Path:
    """Check that file `path` can be written (its folder is created); a folder in its place is an OutputError."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{key}: '{p}' is a folder; give a file name")
    prepare_dir(p.parent, key)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{key}: file '{p}' is not writable")
    return p


def check_output_plan(outputs, inputs=()) -> None:
    """Before anything is written: no two outputs share a path, and no output is one of the inputs.

    `outputs` and `inputs` are (label, path) pairs (a label names the flag or key, e.g. ``"--csv"``); paths are
    compared resolved (symlinks followed, also for paths that do not exist yet). An output folder that is an input
    folder is refused too: the command would write files named like the inputs into it. One-line OutputError
    naming both. ``--overwrite`` flags never lift this: they only ever replace a command's earlier outputs.
    """
    seen: dict[Path, tuple[str, str]] = {}
    for label, path in outputs:
        if path is None:
            continue
        real = Path(path).resolve()
        if real in seen:
            other, other_path = seen[real]
            raise OutputError(f"{label} '{path}' and {other} '{other_path}' are the same path"
                              + (f" ('{real}')" if str(real) not in (str(path), str(other_path)) else "")
                              + ": one output would overwrite the other")
        seen[real] = (label, str(path))
    for label, path in inputs:
        if path is None:
            continue
        real = Path(path).resolve()
        if real in seen:
            out_label, out_path = seen[real]
            raise OutputError(f"{out_label} '{out_path}' is the input {label} '{path}'"
                              + (f" ('{real}')" if str(real) not in (str(path), out_path) else "")
                              + ": writing there would replace the inputs; choose another output location")
