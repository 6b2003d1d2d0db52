"""Thread count and OpenMP wait policy, quiet and beside busy jobs: the numbers to choose the CLI defaults from.

python bench/bench_threads.py [--threads 1,2] [--policies PASSIVE,ACTIVE] [--load 0,1,2] [--repeat 3]
                              [--what infer,train] [--size 400x600] [--json FILE]

Two measurements, each a fresh bench/bench_model.py process (random weights, the same set-up as the CLIs):
``infer``: DRBN stage 1 (confs/DRBN/DRBN_stage1.yml) on one --size image, the first full-size call after a warm-up;
``train``: one training step of the LLFlow demo (confs/LLFlow/demo_tiny.yml, its batch 4 x 64x64 crops).
For every (load, threads, policy) the measurement is repeated --repeat times (median printed) while `load` busy
background jobs run: each a 1-thread process doing convolution forward/backward passes without pause (what a
background training does to the cores), started before and stopped after the measurements of that load. Their own
progress over each setting's runs (passes per second, bench start-up included) is printed too, so the cost of a
setting to the *other* jobs shows as well (a spinning wait policy slows them). Nothing is set for the background jobs
except OMP_NUM_THREADS=1.

Run it on an otherwise quiet machine: its point is the comparison between settings, which other people's load would
blur. The JSON list has one object per (what, load, threads, policy): seconds (all repeats), median, cpu_seconds,
peak_rss_gb and the background jobs' passes per second.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHAT = {"infer": ["--opt", "confs/DRBN/DRBN_stage1.yml", "--what", "infer"],
        "train": ["--opt", "confs/LLFlow/demo_tiny.yml", "--what", "train", "--batch", "4", "--crop", "64"]}


def _busy(report: str):
    """A background job: 1-thread conv forward/backward passes until SIGTERM; after every pass it writes its count
    of passes and the time into `report` (read by :func:`_progress`)."""
    import torch
    torch.set_num_threads(1)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(2, 32, 96, 96)
    count, stop = 0, []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    tmp = Path(report + ".tmp")
    while not stop:
        conv(x).square().mean().backward()
        count += 1
        tmp.write_text(f"{count} {time.monotonic()}")
        os.replace(tmp, report)


def _progress(jobs) -> list[tuple[int, float]]:
    """(passes, time) of every background job now."""
    out = []
    for _, report in jobs:
        try:
            n, t = report.read_text().split()
            out.append((int(n), float(t)))
        except (OSError, ValueError):
            out.append((0, time.monotonic()))
    return out


def _rates(before, after) -> list[float]:
    return [(n1 - n0) / max(t1 - t0, 1e-9) for (n0, t0), (n1, t1) in zip(before, after)]


def _measure(what: str, threads: int, policy: str, size: str, tmp: Path) -> dict | None:
    out = tmp / "one.json"
    cmd = [sys.executable, str(ROOT / "bench/bench_model.py"), *WHAT[what], "--threads", str(threads),
           "--size", size, "--json", str(out)]
    env = dict(os.environ, OMP_WAIT_POLICY=policy, OMP_NUM_THREADS=str(threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    results = json.loads(out.read_text()) if r.returncode == 0 and out.is_file() else []
    if not results:
        print(f"{what} {threads} threads {policy}: failed\n{r.stdout[-1500:]}{r.stderr[-1500:]}", flush=True)
        return None
    out.unlink()
    return results[0]


def _start_load(n: int, tmp: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    jobs = []
    for i in range(n):
        report = tmp / f"busy{i}.json"
        jobs.append((subprocess.Popen([sys.executable, __file__, "--busy", str(report)], env=env, cwd=ROOT), report))
    time.sleep(3 if n else 0)      # let them import torch and reach their loop
    return jobs


def _stop_load(jobs):
    for proc, _ in jobs:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in jobs:
        proc.wait(timeout=60)


def _ints(text):
    return [int(v) for v in text.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=_ints, default=[1, 2], help="thread counts to try (comma-separated)")
    ap.add_argument("--policies", default="PASSIVE,ACTIVE", help="OMP_WAIT_POLICY values to try")
    ap.add_argument("--load", type=_ints, default=[0, 1, 2], help="numbers of busy 1-thread background jobs")
    ap.add_argument("--repeat", type=int, default=3, help="measurements per setting (the median is printed)")
    ap.add_argument("--what", default="infer,train", help="infer (DRBN), train (LLFlow demo step), or both")
    ap.add_argument("--size", default="400x600", help="inference image size HxW")
    ap.add_argument("--json", help="write every result to this file (a JSON list)")
    ap.add_argument("--busy", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.busy:
        return _busy(args.busy)
    policies = [p.strip().upper() for p in args.policies.split(",")]
    whats = [w for w in args.what.split(",") if w]
    for w in whats:
        if w not in WHAT:
            ap.error(f"--what: unknown measurement {w!r} (infer, train)")
    print(f"{os.cpu_count()} logical CPUs; {len(os.sched_getaffinity(0))} usable by this process", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as d:
        tmp = Path(d)
        for load in args.load:
            jobs = _start_load(load, tmp)
            try:
                for what in whats:
                    for threads in args.threads:
                        for policy in policies:
                            before = _progress(jobs)
                            runs = [_measure(what, threads, policy, args.size, tmp) for _ in range(args.repeat)]
                            rates = _rates(before, _progress(jobs))
                            runs = [r for r in runs if r]
                            if not runs:
                                continue
                            secs = [r["seconds"] for r in runs]
                            row = {"what": what, "load": load, "threads": threads, "policy": policy,
                                   "seconds": secs, "median": statistics.median(secs),
                                   "cpu_seconds": [r["cpu_seconds"] for r in runs],
                                   "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
                                   "background_passes_per_s": rates}
                            rows.append(row)
                            bg = f"; background jobs {', '.join(f'{r:.1f}' for r in rates)} passes/s" if rates else ""
                            print(f"{what:5s} load {load}  {threads} thread(s)  {policy:7s}  median "
                                  f"{row['median']:.3f} s  (runs {', '.join(f'{s:.3f}' for s in secs)}; CPU "
                                  f"{statistics.median(row['cpu_seconds']):.2f} s{bg})", flush=True)
            finally:
                _stop_load(jobs)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
