"""A paired folder split into train/ and holdout/ by symbolic links: the held-out pairs of `datasets.val.holdout`."""
from __future__ import annotations

import os
from pathlib import Path

from utils.errors import OptionError

from .lol_dataset import stem_samples


def link_holdout_split(low, high, n: int, out) -> tuple[int, int]:
    """Link the pairs of (low, high), matched by file stem, into out/{train,holdout}/{low,high}: the last `n` in
    natural-sort order are held out, as `datasets.val.holdout: n` does. Returns (train pairs, held-out pairs);
    an existing `out` is refused."""
    out = Path(out)
    if out.exists():
        raise OptionError(f"--out {out}: already exists; choose a new folder (nothing was changed)")
    samples = stem_samples(Path(low), Path(high))
    if n >= len(samples):
        raise OptionError(f"--n {n}: leaves no training pairs ({len(samples)} pairs in {low})")
    parts = {"train": samples[:-n], "holdout": samples[-n:]}
    for part, items in parts.items():
        for side in ("low", "high"):
            (out / part / side).mkdir(parents=True)
        for s in items:
            os.symlink(s.lq.resolve(), out / part / "low" / s.lq.name)
            os.symlink(s.gt.resolve(), out / part / "high" / s.gt.name)
    return len(parts["train"]), len(parts["holdout"])
