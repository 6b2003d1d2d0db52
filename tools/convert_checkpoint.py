"""Convert weights between .pth and .safetensors (`module.` prefixes and wrappers removed).

python tools/convert_checkpoint.py IN OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from models.checkpoint import convert  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.paths import check_output_plan  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(prog="python tools/convert_checkpoint.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="weights to read (.pth / .safetensors)")
    p.add_argument("dst", help="file to write; .safetensors or any other suffix (torch format)")
    args = p.parse_args(argv)
    check_output_plan([("dst", args.dst)], [("src", args.src)])
    n = convert(args.src, args.dst)
    print(f"{args.src} -> {args.dst}: {n} tensors")


if __name__ == "__main__":
    run_cli(main)
