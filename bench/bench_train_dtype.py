"""Training step time and peak memory in bf16 (``train.amp_dtype``) against fp32, same settings, per family.

python bench/bench_train_dtype.py [--families llflow,gltg,zmar,upt,drbn] [--dtype bf16] [--pairs 2] [--threads 2]
                                  [--batch 4] [--crop 160] [--channels-last] [--tiny] [--json FILE]

Every measurement is one bench/bench_model.py ``--what train`` process (random weights; the second of two steps of
the method's own ``optimize()`` is timed, so Adam's state and the allocator's growth are not in it; peak RSS of that
process). fp32 and the reduced dtype alternate (fp32, bf16, fp32, bf16 ...) --pairs times and the medians are
compared: ratio = reduced / fp32 for the step time, and the two peak memories side by side. ``--tiny`` uses each
family's confs/<family>/demo_tiny.yml (a seconds-long check that the bench works, not a measurement of the real
networks). Run it on a quiet machine; on a CPU bf16 pays off where the CPU has AMX or is an AMD
CPU with AVX512-BF16 (docs/precision-and-threads.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import utils.threads  # noqa: E402,F401  (OMP_WAIT_POLICY default before any child loads OpenMP)
from bench.bench_model import main as bench_model  # noqa: E402
from bench.families import FULL as FAMILIES, TINY  # noqa: E402


def _step(family, dtype, args) -> dict | None:
    conf, variant = (TINY[family], None) if args.tiny else FAMILIES[family]
    argv = ["--opt", str(ROOT / conf), "--what", "train", "--dtype", dtype, "--threads", str(args.threads),
            "--batch", str(args.batch), "--crop", str(args.crop)] + (["--variant", variant] if variant else [])
    argv += sum((["--set", s] for s in args.set or []), []) + (["--channels-last"] if args.channels_last else [])
    res = bench_model(argv)
    return res[0] if res else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"), help="the reduced dtype compared to fp32")
    ap.add_argument("--pairs", type=int, default=2, help="alternating fp32 / reduced measurements per family")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and batches (both dtypes)")
    ap.add_argument("--tiny", action="store_true", help="the demo_tiny configs: a quick check that it works")
    ap.add_argument("--set", action="append", help="config override for every run (repeatable)")
    ap.add_argument("--json", help="write one object per family to this file (a JSON list)")
    args = ap.parse_args(argv)
    rows = []
    for family in args.families.split(","):
        if family not in FAMILIES:
            ap.error(f"--families: unknown family {family!r} ({', '.join(FAMILIES)})")
        runs = {"fp32": [], args.dtype: []}
        for _ in range(args.pairs):
            for dtype in runs:
                r = _step(family, dtype, args)
                if r is not None:
                    runs[dtype].append(r)
        if not all(runs.values()):
            print(f"{family}: failed", flush=True)
            continue
        med = {d: statistics.median(r["seconds"] for r in rs) for d, rs in runs.items()}
        mem = {d: max(r["peak_rss_gb"] for r in rs) for d, rs in runs.items()}
        row = {"family": family, "tiny": args.tiny, "batch": args.batch, "crop": args.crop, "threads": args.threads,
               "seconds": {d: [r["seconds"] for r in rs] for d, rs in runs.items()}, "median_seconds": med,
               "peak_rss_gb": mem, "ratio": med[args.dtype] / med["fp32"],
               "loss_finite": all(r["loss_finite"] for rs in runs.values() for r in rs)}
        rows.append(row)
        print(f"== {family}: {args.dtype} / fp32 step = {row['ratio']:.3f} (median {med[args.dtype]:.3f} s vs "
              f"{med['fp32']:.3f} s over {args.pairs} pairs); peak RSS {mem[args.dtype]:.2f} GB vs "
              f"{mem['fp32']:.2f} GB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
