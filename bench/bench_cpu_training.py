"""Training speed on a CPU, before and after the speed-ups, with train.py itself (data loading included).

python bench/bench_cpu_training.py [--confs confs/cpu_LOL-v1/DRBN_real.yml,confs/cpu_LOL-v1/LLFlow_small.yml]
                                   [--steps 12,6] [--threads 1] [--json FILE]

For every config, fresh train.py processes run --steps steps in four settings, each adding one speed-up to the
previous one:
  before   the official recipe's data settings (images decoded every step by the config's original loader workers,
           no RAM cache), float32, NCHW
  cache    every image decoded once, crops cut in memory, no worker processes (datasets.train.cache, n_workers 0)
  nhwc     + channels-last weights and batches (train.channels_last)
  bf16     + bf16 autocast (train.amp_dtype), i.e. the config as written
and the seconds per step train.py reports (first step of the process excluded) are printed with the ratio to
`before`. The runs go to a temporary folder and are deleted. Needs the data the configs name (docs/cpu-training.md).
The figures depend on the CPU: bf16 pays off only where it has AMX or is an AMD CPU with AVX512-BF16
(docs/precision-and-threads.md); run it on an otherwise quiet machine, or beside exactly the jobs you will train with.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from options.options import load_options  # noqa: E402

SPEED = re.compile(r"; ([0-9.]+) s/step over steps")
# the loader workers of the official recipes these configs shorten (DRBN's DRBL trainer: 2, LLFlow: 1)
ORIGINAL_WORKERS = {"DRBN": 2, "LLFlow": 1}


def settings(opt: dict) -> dict[str, list[str]]:
    workers = ORIGINAL_WORKERS.get(opt["model"], 1)
    before = ["datasets.train.cache=false", f"datasets.train.n_workers={workers}", "train.amp_dtype=fp32",
              "train.channels_last=false"]
    cache = ["datasets.train.cache=true", "datasets.train.n_workers=0", "train.amp_dtype=fp32",
             "train.channels_last=false"]
    nhwc = cache[:3] + ["train.channels_last=true"]
    bf16 = cache[:2] + ["train.amp_dtype=bf16", "train.channels_last=true"]
    return {"before": before, "cache": cache, "nhwc": nhwc, "bf16": bf16}


def seconds_per_step(conf: str, sets: list[str], steps: int, threads: int, root: Path) -> float:
    cmd = [sys.executable, str(ROOT / "train.py"), "--opt", conf, "--threads", str(threads)]
    for s in sets + [f"train.niter={steps}", f"path.experiments_root={root}", "use_tb_logger=false",
                     "train.val_freq=0", "train.max_minutes=null", "logger.save_checkpoint_freq=0"]:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    m = SPEED.search(r.stderr)
    if r.returncode or not m:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return float(m.group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--confs", default="confs/cpu_LOL-v1/DRBN_real.yml,confs/cpu_LOL-v1/LLFlow_small.yml")
    ap.add_argument("--steps", default="12,6", help="steps per run, one per config (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    confs, steps = args.confs.split(","), [int(s) for s in args.steps.split(",")]
    if len(steps) != len(confs):
        sys.exit("error: --steps needs one number per --confs entry")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for conf, n in zip(confs, steps):
            opt = load_options(ROOT / conf, is_train=True)
            base = None
            for i, (name, sets) in enumerate(settings(opt).items()):
                sps = seconds_per_step(conf, sets, n, args.threads, Path(tmp) / f"{i}")
                base = base or sps
                rows.append({"conf": conf, "setting": name, "seconds_per_step": sps, "steps_per_second": 1 / sps,
                             "ratio_to_before": sps / base, "steps": n, "threads": args.threads})
                print(f"{conf:40s} {name:7s} {sps:7.3f} s/step  {1 / sps:6.3f} steps/s  {sps / base:5.2f}x",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
