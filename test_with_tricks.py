"""Like test.py, but applies the GT-mean brightness correction exactly as the official LLFlow / GLTG-AFlow
`test.py`/`test_with_tricks.py` do (out * mean(BGR2GRAY(GT RGB)) / mean(out), clipped, then TRUNCATED to uint8), so
published "with tricks" numbers can be reproduced. The correction uses the ground truth: it is not a blind result.
"""
import argparse

import utils.threads  # noqa: F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from options.options import add_common_args, load_options
from utils.cli import run_cli
from utils.logging_setup import setup_cli_logging
from engine.evaluate import add_test_args, run


def main(argv=None):
    parser = add_test_args(add_common_args(argparse.ArgumentParser(description=__doc__)))
    args = parser.parse_args(argv)
    setup_cli_logging()
    opt = load_options(args.opt, args.overrides)
    if not (args.gt or opt.get("dataroot_GT")):
        parser.error("test_with_tricks needs --gt (the GT-mean correction uses the reference images)")
    print("test_with_tricks: applying the official GT-mean correction (uses GT brightness; truncating quantisation)")
    run(opt, args, gt_mean="llflow", quantisation="truncate", label="test_with_tricks")


if __name__ == "__main__":
    run_cli(main)
