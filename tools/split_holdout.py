"""Split a paired folder into train/ and holdout/ (symbolic links, nothing copied), for checkpoint selection on
held-out training pairs when the training data is not one real dataset (physics-synthetic pairs, mixes).

python tools/split_holdout.py --low LOW_DIR --high HIGH_DIR --n 15 --out SPLIT_DIR

Writes SPLIT_DIR/{train,holdout}/{low,high}/: the holdout is the last N pairs in natural-sort order, the same pairs
that `datasets.val.holdout: N` holds out of a real dataset, so runs on real, synthetic and mixed data validate on
identical images. Pairs are matched by file stem; an existing SPLIT_DIR is refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from data.holdout import link_holdout_split  # noqa: E402
from data.image_io import list_images  # noqa: E402
from utils.cli import in_range, run_cli  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", required=True, help="folder of low-light images")
    ap.add_argument("--high", required=True, help="folder of their normal-light partners (same file stems)")
    ap.add_argument("--n", type=int, required=True, action=in_range(1), help="pairs to hold out (the last N)")
    ap.add_argument("--out", required=True, help="new folder for train/ and holdout/")
    args = ap.parse_args(argv)
    n_train, n_hold = link_holdout_split(args.low, args.high, args.n, args.out)
    held = [p.stem for p in list_images(Path(args.out) / "holdout" / "low")]
    print(f"{args.out}: {n_train} training pairs, {n_hold} held out ({', '.join(held)})")


if __name__ == "__main__":
    run_cli(main)
