"""The table and validation curves of budgeted training runs (docs/cpu-training.md), from what the runs left.

python bench/cpu_training_report.py --run LABEL=experiments/NAME:results/NAME/metrics.json [--run ...]
                                    [--baseline LABEL=metrics.json ...] [--png FILE]

Per run: steps done and seconds per step (from its train.log), the checkpoint tools/retest.py chose on the
validation split (step, PSNR), and the test-split scores test.py or Measure.py wrote (metrics.json: PSNR, SSIM,
LPIPS and the protocol). Baselines are scores without a run (e.g. the authors' weights, histogram equalisation).
Prints a Markdown table and the protocol lines; --png draws every run's validation PSNR curve in one figure.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from datetime import datetime
from pathlib import Path

STEP = re.compile(r"^(\d\d:\d\d:\d\d) INFO step (\d+) ")
DONE = re.compile(r"^(\d\d:\d\d:\d\d) INFO training done at step (\d+)")
START = re.compile(r"^(\d\d:\d\d:\d\d) INFO .* parameters; .* steps$")
# the automatic tiling threshold depends on the memory free at the time; everything else in a protocol is fixed
FREE_MEMORY = re.compile(r", above [0-9.]+ GB estimated")


def _protocol(text: str) -> str:
    return FREE_MEMORY.sub("", text)


def _labelled(text: str) -> tuple[str, str]:
    if "=" not in text:
        sys.exit(f"error: '{text}' is not LABEL=VALUE")
    return tuple(text.split("=", 1))


def read_log(run: Path) -> dict:
    """Steps done and wall time of the run's last training process, from train.log (start: the line announcing the
    run; end: 'training done')."""
    start = end = steps = None
    for line in (run / "train.log").read_text().splitlines():
        if START.match(line):
            start = START.match(line).group(1)
        elif DONE.match(line):
            end, steps = DONE.match(line).groups()
    if start is None or end is None:
        sys.exit(f"error: {run / 'train.log'}: no complete training in it")
    seconds = (datetime.strptime(end, "%H:%M:%S") - datetime.strptime(start, "%H:%M:%S")).seconds
    return {"steps": int(steps), "minutes": seconds / 60, "s_per_step": seconds / int(steps)}


def read_retest(run: Path) -> tuple[list[dict], str]:
    lines = (run / "retest" / "retest.csv").read_text().splitlines()
    rows = [dict(r, step=int(r["step"]), psnr=float(r["psnr"]), ssim=float(r["ssim"]))
            for r in csv.DictReader(lines[1:])]
    return rows, lines[0].split("protocol: ", 1)[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="LABEL=RUN_DIR:METRICS_JSON")
    ap.add_argument("--baseline", action="append", default=[], help="LABEL=METRICS_JSON")
    ap.add_argument("--png", help="validation curves of every run")
    args = ap.parse_args(argv)
    table = ["| method | steps done (wall) | s/step | checkpoint (validation PSNR) | PSNR | SSIM | LPIPS |",
             "|---|---|---|---|---|---|---|"]
    protocols, curves = set(), {}
    for label, spec in map(_labelled, args.run):
        run_dir, metrics = spec.rsplit(":", 1)
        run, m = Path(run_dir), json.loads(Path(metrics).read_text())
        info, (rows, val_protocol) = read_log(run), read_retest(run)
        best = max(rows, key=lambda r: r["psnr"])
        curves[label] = [(r["step"], r["psnr"]) for r in rows if r["weights"] == "G"]
        protocols.add(("validation", _protocol(val_protocol)))
        protocols.add(("test", _protocol(m["protocol"]["description"])))
        table.append(f"| {label} | {info['steps']} ({info['minutes']:.0f} min) | {info['s_per_step']:.2f} | "
                     f"step {best['step']} ({best['psnr']:.2f} dB) | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                     f"{m.get('lpips', float('nan')):.3f} |")
    for label, metrics in map(_labelled, args.baseline):
        m = json.loads(Path(metrics).read_text())
        protocols.add(("test, " + label, _protocol(m["protocol"]["description"])))
        table.append(f"| {label} | - | - | - | {m['psnr']:.2f} | {m['ssim']:.3f} | {m.get('lpips', float('nan')):.3f} |")
    print("\n".join(table))
    for kind, p in sorted(protocols):
        print(f"\n{kind}: {p}")
    if args.png and curves:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for label, pts in curves.items():
            ax.plot([s for s, _ in pts], [p for _, p in pts], "o-", label=label, markersize=3)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=90)
        print(f"\n{args.png}")


if __name__ == "__main__":
    main()
