"""Re-evaluate every saved checkpoint of a training run on its validation split and name the best one.

python tools/retest.py --run experiments/NAME [--device cpu] [--max-images N] [--threads N]
Writes <run>/retest/retest.csv and retest.png (the validation curve). The test split is never used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from engine.retest import retest  # noqa: E402
from utils.cli import in_range, run_cli  # noqa: E402
from utils.logging_setup import setup_cli_logging  # noqa: E402
from utils.threads import add_threads_arg, set_threads  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a training run folder (experiments/<name>)")
    ap.add_argument("--device", help="cpu, cuda, ... (default: the config's inference.device)")
    ap.add_argument("--max-images", type=int, action=in_range(1), help="evaluate only the first N validation images")
    add_threads_arg(ap)
    args = ap.parse_args(argv)
    setup_cli_logging()
    set_threads(args.threads)
    retest(args.run, device=args.device, max_images=args.max_images)


if __name__ == "__main__":
    run_cli(main)
