"""Train a conditional flow enhancer.

python train.py --opt CONF [--set key=value ...] [--resume] [--launcher none|pytorch] [--threads N]
Multi-GPU / multi-process: torchrun --nproc_per_node=N train.py --opt CONF --launcher pytorch
"""
import argparse
import sys

import utils.threads  # noqa: F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from utils.threads import add_threads_arg
from options.options import add_common_args, load_options
from utils.cli import run_cli


def main(argv=None):
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--resume", action="store_true", help="continue from the newest training state of the run")
    parser.add_argument("--launcher", default="none", choices=["none", "pytorch"])
    add_threads_arg(parser, "train.threads, else torch's default: one per physical core; per process")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"train.threads={args.threads}"] if args.threads else [])
    opt = load_options(args.opt, overrides, is_train=True)
    from engine.trainer import train
    train(opt, launcher=args.launcher, resume=args.resume, argv=argv if argv is not None else sys.argv)


if __name__ == "__main__":
    run_cli(main)
