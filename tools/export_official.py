"""Write a checkpoint in the official code's layout (to go back to the official repositories).

python tools/export_official.py --opt CONF --model_path ours.pth --out official.pth [--set k=v ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from engine import export_official as library  # noqa: E402
from options.options import add_common_args, load_options  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.logging_setup import setup_cli_logging  # noqa: E402
from utils.paths import check_output_plan  # noqa: E402


def main(argv=None):
    description = __doc__ + "\n" + library.__doc__.split("\n\n", 1)[1]  # what the written file holds
    parser = add_common_args(argparse.ArgumentParser(description=description,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--model_path", required=True, help="our checkpoint (or an official one)")
    parser.add_argument("--out", required=True, help="where to write the official-layout .pth")
    args = parser.parse_args(argv)
    check_output_plan([("--out", args.out)], [("--model_path", args.model_path), ("--opt", args.opt)])
    setup_cli_logging()
    opt = load_options(args.opt, args.overrides)
    library.export_official(opt, args.model_path, args.out)


if __name__ == "__main__":
    run_cli(main)
