"""Side-by-side image strips and grids (input | output | reference) for a person to look at.

python tools/grid.py --low DIR --pred DIR [--gt DIR] --out grid.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from data.image_io import write_rgb  # noqa: E402
from engine.grid import make_grid  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.paths import check_output_plan  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--low", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--gt")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    check_output_plan([("--out", args.out)], [("--low", args.low), ("--pred", args.pred), ("--gt", args.gt)])
    write_rgb(args.out, make_grid(args.low, args.pred, args.gt))
    print(f"grid written to {args.out} (columns: input | output" + (" | reference)" if args.gt else ")"))


if __name__ == "__main__":
    run_cli(main)
