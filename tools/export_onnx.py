"""Export a model's enhance path to ONNX.

    python tools/export_onnx.py --opt CONF --model_path M.pth --out model.onnx [--size H W] [--opset 17]
                                [--no-check] [--set key=value ...]

A thin entry point: the work (and the description of the graph's inputs and output) is in ``engine/export_onnx.py``.
Needs the optional packages of ``requirements-onnx.txt`` (imported only when the export runs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from options.options import add_common_args, check_path, load_options  # noqa: E402
from utils.cli import in_range, run_cli  # noqa: E402
from utils.logging_setup import setup_cli_logging  # noqa: E402
from utils.paths import check_output_plan  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command line (no model code imported: --help and argument errors stay fast)."""
    p = add_common_args(argparse.ArgumentParser(prog="python tools/export_onnx.py",
                                                description=__doc__.split("\n\n")[0]))
    p.add_argument("--model_path", help="checkpoint (.pth or .safetensors; overrides model_path in the config)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None, action=in_range(1),
                   help="size of the traced example (rounded up to the model's pad multiple; default 96 128); "
                        "the graph accepts any size that is a multiple of the pad multiple")
    p.add_argument("--opset", type=int, default=17, action=in_range(7), help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check at another size")
    return p


def main(argv=None):
    from engine.export_onnx import DEFAULT_SIZE, export_onnx

    args = build_parser().parse_args(argv)
    setup_cli_logging()
    opt = load_options(args.opt, args.overrides)
    ckpt = args.model_path or opt.get("model_path")
    ckpt = str(check_path(ckpt, "--model_path / model_path")) if ckpt else None
    check_output_plan([("--out", args.out)], [("--model_path", ckpt), ("--opt", args.opt)])
    info = export_onnx(opt, ckpt, args.out, size=tuple(args.size or DEFAULT_SIZE), opset=args.opset,
                       check=not args.no_check)  # ExportError is a UserError: run_cli prints it as one line
    ins = ", ".join(f"{k} {v}" for k, v in info["inputs"].items())
    print(f"wrote {args.out}: family {info['family']}, inputs {ins} (H, W dynamic, multiples of "
          f"{info['pad_multiple']}), output enhanced (1, 3, H, W)")
    if info["check"]:
        c = info["check"]
        print(f"onnxruntime vs PyTorch at {c['size'][0]}x{c['size'][1]}: max abs diff {c['max_abs_diff']:.3g}")
    return info


if __name__ == "__main__":
    run_cli(main)
