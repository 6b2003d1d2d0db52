"""Fit the physics synthesiser's ranges to real low/normal pairs and write them as a synthesis YAML.

python tools/fit_physics.py --low LOW_DIR --high HIGH_DIR [--first N] --out confs/synthesis/physics_X.yml
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
import yaml  # noqa: E402

from data.synthesis import fit_physics as library  # noqa: E402
from utils.cli import in_range, run_cli  # noqa: E402
from utils.paths import check_output_plan  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__ + "\n" + library.__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", required=True, help="folder of real low-light images")
    ap.add_argument("--high", required=True, help="folder of their normal-light partners (same file stems)")
    ap.add_argument("--out", required=True, help="synthesis YAML to write")
    ap.add_argument("--first", type=int, action=in_range(1),
                    help="use only the first N pairs in natural-sort order (default: all)")
    ap.add_argument("--quantiles", type=float, nargs=2, default=(0.1, 0.9), metavar=("LO", "HI"),
                    action=in_range(0, 1),
                    help="range = these quantiles of the per-pair estimates (default 0.1 0.9; 0 1 = min/max)")
    ap.add_argument("--min-count", type=int, default=64, action=in_range(1),
                    help="pixels needed in an intensity group (default 64)")
    args = ap.parse_args(argv)
    check_output_plan([("--out", args.out)], [("--low", args.low), ("--high", args.high)])
    from tqdm import tqdm
    fits = library.fit_folders(args.low, args.high, args.first, args.min_count,
                               progress=lambda x: tqdm(x, desc="fit", unit="pair"))
    ranges = library.ranges_from_fits(fits, args.quantiles)
    command = "python tools/fit_physics.py " + " ".join(shlex.quote(a) for a in
                                                         (argv if argv is not None else sys.argv[1:]))
    out = library.write_config(args.out, ranges, fits, command, args.quantiles)
    print("\n".join(library.format_table(fits)))
    print(yaml.safe_dump(ranges, sort_keys=False, default_flow_style=None).rstrip())
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
