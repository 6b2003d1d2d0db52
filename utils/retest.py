"""Re-evaluate every saved checkpoint of a training run on its validation split and name the best one.

python -m utils.retest --run experiments/NAME [--device cpu] [--max-images N]
Writes <run>/retest/retest.csv and retest.png (the validation curve). The test split is never used.
"""
from __future__ import annotations

import argparse

from utils.cli import in_range


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a training run folder (experiments/<name>)")
    ap.add_argument("--device", help="cpu, cuda, ... (default: the config's inference.device)")
    ap.add_argument("--max-images", type=int, action=in_range(1), help="evaluate only the first N validation images")
    args = ap.parse_args(argv)
    from engine.retest import retest  # the engine sits above utils/: imported only when the CLI runs
    from utils.logging_setup import setup_cli_logging
    setup_cli_logging()
    retest(args.run, device=args.device, max_images=args.max_images)


if __name__ == "__main__":
    from utils.cli import run_cli
    run_cli(main)
