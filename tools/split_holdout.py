"""Split a paired folder into train/ and holdout/ (symbolic links, nothing copied), for checkpoint selection on
held-out training pairs when the training data is not one real dataset (physics-synthetic pairs, mixes).

python tools/split_holdout.py --low LOW_DIR --high HIGH_DIR --n 15 --out SPLIT_DIR

Writes SPLIT_DIR/{train,holdout}/{low,high}/: the holdout is the last N pairs in natural-sort order, the same pairs
that `datasets.val.holdout: N` holds out of a real dataset, so runs on real, synthetic and mixed data validate on
identical images. Pairs are matched by file stem; an existing SPLIT_DIR is refused.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from data.image_io import list_images  # noqa: E402
from data.lol_dataset import stem_samples  # noqa: E402
from utils.cli import in_range, run_cli  # noqa: E402
from utils.errors import OptionError  # noqa: E402


def split(low, high, n: int, out) -> tuple[int, int]:
    """Link the pairs of (low, high) into out/{train,holdout}/{low,high}; returns (train pairs, held-out pairs)."""
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", required=True, help="folder of low-light images")
    ap.add_argument("--high", required=True, help="folder of their normal-light partners (same file stems)")
    ap.add_argument("--n", type=int, required=True, action=in_range(1), help="pairs to hold out (the last N)")
    ap.add_argument("--out", required=True, help="new folder for train/ and holdout/")
    args = ap.parse_args(argv)
    n_train, n_hold = split(args.low, args.high, args.n, args.out)
    held = [p.stem for p in list_images(Path(args.out) / "holdout" / "low")]
    print(f"{args.out}: {n_train} training pairs, {n_hold} held out ({', '.join(held)})")


if __name__ == "__main__":
    run_cli(main)
