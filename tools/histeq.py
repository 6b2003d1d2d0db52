"""Histogram equalisation as a baseline enhancer: every image of a folder equalised per RGB channel.

python tools/histeq.py --input low/ --out results/histeq [--overwrite]
Writes <out>/<stem>.png (8-bit RGB): OpenCV's equalizeHist on R, G and B separately (the histogram-equalised map
LLFlow conditions on). Score it like any method: python Measure.py --gt high/ --pred results/histeq
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from data.image_io import list_images, read_rgb, write_rgb  # noqa: E402
from data.preprocess import histeq  # noqa: E402
from data.synthesize import check_out  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.logging_setup import setup_cli_logging  # noqa: E402
from utils.paths import check_output_plan  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="folder of low-light images")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    args = ap.parse_args(argv)
    setup_cli_logging()
    check_output_plan([("--out", args.out)], [("--input", args.input)])
    files, out = list_images(args.input), Path(args.out)
    check_out(files, out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        write_rgb(out / f"{f.stem}.png", histeq(read_rgb(f)))
    print(f"{out}: {len(files)} images equalised")


if __name__ == "__main__":
    run_cli(main)
