"""Pairing two file listings by a key (the file-name stem by default): datasets, test scripts, Measure.py, grid."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from .errors import PairingError


def short_list(items, limit: int = 10) -> str:
    """'a, b, c ... (+N more)' for messages."""
    items = [str(i) for i in items]
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def stem(path: Path) -> str:
    return Path(path).stem


def index_by(files: Iterable[Path], key: Callable = stem, where="folder") -> dict:
    """{key(f): f}; two files with one key (x.png and x.jpg) are an error naming both."""
    out = {}
    for f in files:
        k = key(f)
        if k in out:
            raise PairingError(f"{where}: files {Path(out[k]).name} and {Path(f).name} map to the same name {k!r}; "
                               f"cannot tell which one to use")
        out[k] = f
    return out


def pair_by_key(primary, secondary, key: Callable = stem, primary_dir="first folder", secondary_dir="second folder",
                extra: str = "error", what=("image", "reference")) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair every file of `primary` with the `secondary` file of the same key, in `primary`'s order.

    A primary file without a partner is an error listing them. Secondary files without a partner are an error too
    when `extra='error'`; with `extra='return'` they are returned (second value) for the caller to warn about.
    """
    a, b = index_by(primary, key, primary_dir), index_by(secondary, key, secondary_dir)
    lonely = [Path(a[k]).name for k in a if k not in b]
    extras = [b[k] for k in b if k not in a]
    parts = []
    if lonely:
        parts.append(f"{len(lonely)} {what[0]}(s) in {primary_dir} without a {what[1]} in {secondary_dir}: "
                     f"{short_list(lonely)}")
    if extras and extra == "error":
        parts.append(f"{len(extras)} {what[1]}(s) in {secondary_dir} without a {what[0]} in {primary_dir}: "
                     f"{short_list(Path(e).name for e in extras)}")
    if parts:
        raise PairingError("; ".join(parts))
    return [(a[k], b[k]) for k in a], extras
