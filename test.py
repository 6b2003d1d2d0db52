"""Enhance a folder with a trained model (paired: also measures; unpaired: just writes images).

python test.py --opt CONF [--model_path P] [--input DIR] [--gt DIR] [--out DIR] [--heat H] [--set k=v ...]
               [--dtype fp32|bf16|fp16|auto] [--threads N]
Outputs: <out>/<input stem>.png (8-bit RGB, rounded, no GT-mean) and, with --gt, metrics.csv / metrics.json.
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
    run(opt, args, gt_mean="none", quantisation="round", label="test")


if __name__ == "__main__":
    run_cli(main)
