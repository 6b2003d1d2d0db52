"""One GPU check, ready before a GPU is: run it on a CUDA machine and read one JSON file.

python bench/gpu_check.py [--json gpu_check.json] [--budget 480] [--stages pytest,infer,infer4k,train,ddp,compile]
python bench/gpu_check.py --device cpu --tiny [--compile-backend eager]   # dry run of every code path on the CPU

Stages (each in its own subprocess, time-boxed: a stage that fails or runs out of time is recorded in the JSON with
its error and the check goes on with the next one):
  pytest   the CUDA-marked tests (`pytest -m cuda`)
  infer    every family (llflow, gltg, zmar, upt, drbn) at 400x600 in fp32 / bf16 / fp16 through engine/inference.py's
           Enhancer: latency (median of --repeat calls after a warm-up), peak CUDA memory, max |difference| from fp32
  infer4k  one 3840x2160 frame per family in fp32 and bf16 (automatic layer-wise tiles above half the free memory)
  train    --steps training steps of each family with AMP (train.amp_dtype, default bf16; the configs' warm-up) on
           one fixed random batch: every loss finite, and the mean of the last tenth below the mean of the first tenth
  ddp      train.py through torchrun with --launcher pytorch (NCCL on CUDA, gloo on the CPU) on the demo DRBN
  compile  torch.compile of UPT-Flow's encoder (the `inference.compile` targets): cold and warm latency, max
           |difference| from eager
Full-size networks come from the configs in confs/ with random weights (no checkpoint is needed: speed, memory and
precision effects do not depend on the values); --tiny uses the demo_tiny configs and small sizes instead, so the
whole script runs in about a minute on a CPU (tests/test_gpu_check.py). Without CUDA and without --device cpu it
says so in one line and exits 0. Exit status 1 when a stage failed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# family: (full-size config, tiny demo config, network_G.variant where the config alone is ambiguous)
FAMILIES = {
    "llflow": ("confs/LLFlow/LOL-pc.yml", "confs/LLFlow/demo_tiny.yml", "llflow"),
    "gltg": ("confs/GLTG-AFlow/train_LOL-v2-real.yml", "confs/GLTG-AFlow/demo_tiny.yml", "gltg"),
    "zmar": ("confs/ZMAR-SNFlow/train_LOL-v1.yml", "confs/ZMAR-SNFlow/demo_tiny.yml", "zmar"),
    "upt": ("confs/UPT-Flow/train_LOL-v1.yml", "confs/UPT-Flow/demo_tiny.yml", "upt"),
    "drbn": ("confs/DRBN/train_LOL-v1.yml", "confs/DRBN/demo_tiny.yml", None),
}
STAGES = ("pytest", "infer", "infer4k", "train", "ddp", "compile")
# Share of --budget each stage may use (its time box); a stage that ends early leaves its time to the later ones.
SHARE = {"pytest": 0.12, "infer": 0.2, "infer4k": 0.14, "train": 0.27, "ddp": 0.1, "compile": 0.17}
GB = 1024 ** 3


# -- child side: one stage, results as a `RESULT {json}` line ----------------------------------------------------
def _options(args, family: str, is_train: bool, extra=()):
    from options.options import load_options
    full, tiny, variant = FAMILIES[family]
    sets = ([f"network_G.variant={variant}"] if variant else []) + list(extra)
    return load_options(ROOT / (tiny if args.tiny else full), sets, is_train=is_train)


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    import torch
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device):
    """Peak CUDA memory allocated since the last reset (None on the CPU: ru_maxrss cannot be reset per call)."""
    import torch
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


def _random_weights(net, fill: float):
    """Random values N(0, fill^2) also where a layer is zero-initialised (the flows' last coupling convolutions,
    rezero gains): with them at zero the output does not depend on most of the network, and a precision comparison
    would show nothing (at full size, 1e-2 already makes LLFlow's and ZMAR's reverse pass overflow; 1e-3 does not).
    ActNorm is marked initialised: a check must not depend on its data-dependent initialisation."""
    import torch
    from bench.bench_model import _no_data_init
    _no_data_init(net)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * fill)
    return net


def _timed(device, fn):
    import torch
    _sync(device)
    t = time.perf_counter()
    with torch.inference_mode():
        out = fn()
    _sync(device)
    return out, time.perf_counter() - t


def _dtypes(device):
    return ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")  # fp16 is refused on the CPU


def _families(args):
    return [f for f in args.families.split(",") if f]


def stage_infer(args, device, deadline):
    """Latency, peak memory and max |difference| from fp32 of each family and dtype on one random input."""
    import torch
    from bench.bench_model import _inputs
    from engine.inference import Enhancer
    from models.build import build_network
    h, w = (int(v) for v in args.size.split("x"))
    out = {}
    for fam in _families(args):
        res = out[fam] = {}
        if time.monotonic() > deadline:
            res["error"] = "not run: stage time box reached"
            continue
        try:
            opt = _options(args, fam, False)
            torch.manual_seed(0)
            net = _random_weights(build_network(opt)[0], args.fill)
            lq, aux, (hp, wp) = _inputs(opt, net, 1, h, w, torch.Generator().manual_seed(0), torch.contiguous_format,
                                        pad=True)
            ref = None
            for dt in _dtypes(device):
                try:
                    enh = Enhancer(copy.deepcopy(net), opt, device=str(device), dtype=dt, tile=0)
                    enh._run(lq[..., :64, :64], None if aux is None else aux[..., :64, :64], 0.0)  # warm-up
                    _reset_peak(device)
                    times = []
                    for _ in range(args.repeat):
                        y, dt_s = _timed(device, lambda: enh._run(lq, aux, 0.0))
                        times.append(dt_s)
                    y = y.cpu()
                    r = {"seconds": statistics.median(times), "all_seconds": times, "peak_gb": _peak_gb(device),
                         "finite": bool(torch.isfinite(y).all())}
                    if ref is None:
                        ref = y
                    else:
                        r["max_diff_vs_fp32"] = (y - ref).abs().max().item()
                        # random weights give outputs of any scale: the difference relative to the largest value
                        r["rel_diff_vs_fp32"] = r["max_diff_vs_fp32"] / max(ref.abs().max().item(), 1e-12)
                    res[dt] = r
                    del enh, y
                except Exception as e:  # one dtype failing (OOM, a kernel missing) must not hide the others
                    res[dt] = {"error": f"{type(e).__name__}: {e}"[:500]}
            res["shape"] = [hp, wp]
            res["params_m"] = sum(p.numel() for p in net.parameters()) / 1e6
        except Exception as e:
            res["error"] = f"{type(e).__name__}: {e}"[:500]
    return out


def stage_infer4k(args, device, deadline):
    """One large frame per family through the Enhancer's uint8 path (automatic tiles), fp32 and bf16."""
    import numpy as np
    import torch
    from bench.bench_large import _image
    from engine.inference import Enhancer, to_uint8
    from models.build import build_network
    w, h = (int(v) for v in args.large.split("x"))
    img = _image(None, h, w)
    out = {}
    for fam in _families(args):
        res = out[fam] = {"size": [h, w]}
        if time.monotonic() > deadline:
            res["error"] = "not run: stage time box reached"
            continue
        try:
            opt = _options(args, fam, False)
            torch.manual_seed(0)
            net = _random_weights(build_network(opt)[0], args.fill)
            ref = None
            for dt in ("fp32", "bf16"):
                try:
                    enh = Enhancer(copy.deepcopy(net), opt, device=str(device), dtype=dt)
                    enh(img[:64, :64])
                    _reset_peak(device)
                    y, sec = _timed(device, lambda: enh(img))
                    r = {"seconds": sec, "peak_gb": _peak_gb(device), "finite": bool(np.isfinite(y).all()),
                         "tile": enh.tile_for(-(-h // enh.multiple) * enh.multiple,
                                              -(-w // enh.multiple) * enh.multiple)}
                    if ref is None:
                        ref = y
                    else:
                        r["max_diff_vs_fp32"] = float(np.abs(y - ref).max())
                        r["rel_diff_vs_fp32"] = r["max_diff_vs_fp32"] / max(float(np.abs(ref).max()), 1e-12)
                        r["max_uint8_diff_vs_fp32"] = int(np.abs(to_uint8(y).astype(int) - to_uint8(ref)).max())
                    res[dt] = r
                    del enh
                except Exception as e:
                    res[dt] = {"error": f"{type(e).__name__}: {e}"[:500]}
        except Exception as e:
            res["error"] = f"{type(e).__name__}: {e}"[:500]
    return out


def stage_train(args, device, deadline):
    """`--steps` AMP training steps per family (the method's own optimize(), as train.py runs it) on one fixed batch."""
    import math
    import torch
    from bench.bench_model import _inputs
    from models.build import model_class
    fams = _families(args)
    out = {}
    for i, fam in enumerate(fams):
        res = out[fam] = {"amp_dtype": args.amp}
        # each family gets an equal share of what is left, so one slow family cannot starve the others
        box = (deadline - time.monotonic()) / (len(fams) - i)
        if box <= 0:
            res["error"] = "not run: stage time box reached"
            continue
        stop = time.monotonic() + box
        try:
            amp = [] if args.amp == "fp32" else [f"train.amp_dtype={args.amp}"]
            # the configs' own warm-up stays: without it LLFlow and ZMAR at full size diverge in their first steps
            # (measured on the CPU: NLL 0.74 -> 13.7 and 5.45 -> 33.2 within 6 steps at batch 1)
            opt = _options(args, fam, True, amp)
            torch.manual_seed(0)
            method = model_class(opt.get("model"))(opt, device)
            g = torch.Generator().manual_seed(0)
            c = args.crop
            lq, aux, _ = _inputs(opt, method.net, args.batch, c, c, g, torch.contiguous_format)
            batch = {"GT": torch.rand(args.batch, 3, c, c, generator=g), "LQ": lq}
            if aux is not None:
                batch["AUX"] = aux
            method.setup(batch)
            key = method.progress_keys[0]
            losses, skipped = [], 0
            _sync(device)
            t = time.perf_counter()
            while len(losses) < args.steps and time.monotonic() < stop:
                logs = method.optimize(batch)
                if key not in logs:     # the official flow loop's first call initialises and does not update
                    continue
                skipped += bool(logs.get("skipped"))
                losses.append(float(logs[key]))
            _sync(device)
            sec = time.perf_counter() - t
            n = max(1, len(losses) // 10)
            first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
            res.update({"loss_key": key, "steps": len(losses), "seconds": sec,
                        "steps_per_s": len(losses) / sec if sec else None, "batch": args.batch, "crop": c,
                        "skipped": skipped, "finite": all(math.isfinite(v) for v in losses),
                        "first_mean": first, "last_mean": last, "falling": last < first,
                        "losses": losses[:: max(1, len(losses) // 50)], "peak_gb": _peak_gb(device)})
            res["ok"] = res["finite"] and res["falling"] and not skipped and len(losses) == args.steps
            del method
            _reset_peak(device)
        except Exception as e:
            res["error"] = f"{type(e).__name__}: {e}"[:500]
    return out


def stage_compile(args, device, deadline):
    """torch.compile of UPT-Flow's compile targets: cold (compiling) and warm call, difference from eager."""
    import torch
    from bench.bench_model import _inputs
    from engine.inference import Enhancer
    from models.build import build_network
    h, w = (int(v) for v in args.size.split("x"))
    opt = _options(args, "upt", False)
    torch.manual_seed(0)
    net = _random_weights(build_network(opt)[0], args.fill)
    lq, aux, _ = _inputs(opt, net, 1, h, w, torch.Generator().manual_seed(0), torch.contiguous_format, pad=True)
    eager = Enhancer(copy.deepcopy(net), opt, device=str(device), dtype="fp32", tile=0)
    ref, eager_s = _timed(device, lambda: eager._run(lq, aux, 0.0))
    ref, eager_s = _timed(device, lambda: eager._run(lq, aux, 0.0))   # the second call: no first-call set-up
    del eager
    enh = Enhancer(copy.deepcopy(net), opt, device=str(device), dtype="fp32", tile=0)
    # what `inference.compile` does (engine/inference.py), with the backend chosen here (--compile-backend)
    for m in enh.model.compile_targets():
        m.compile(backend=args.compile_backend, dynamic=False)
    y, cold = _timed(device, lambda: enh._run(lq, aux, 0.0))
    warm = []
    for _ in range(args.repeat):
        y, s = _timed(device, lambda: enh._run(lq, aux, 0.0))
        warm.append(s)
    return {"backend": args.compile_backend, "shape": list(lq.shape[-2:]), "eager_seconds": eager_s,
            "cold_seconds": cold, "warm_seconds": statistics.median(warm),
            "max_diff_vs_eager": (y.cpu() - ref.cpu()).abs().max().item(), "finite": bool(torch.isfinite(y).all())}


def stage_ddp(args, device, deadline):
    """train.py under torchrun on the demo DRBN: NCCL over the visible GPUs (at most 2), or 2 gloo processes."""
    import torch
    nproc = min(2, torch.cuda.device_count()) if device.type == "cuda" else 2
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    steps = 20
    with tempfile.TemporaryDirectory(prefix="gpu_check_ddp_") as tmp:
        cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "train.py"),
               "--opt", str(ROOT / "confs/DRBN/demo_tiny.yml"), "--launcher", "pytorch"]
        for s in (f"path.experiments_root={tmp}", f"train.niter={steps}", "train.val_freq=0", "datasets.val=null",
                  "use_tb_logger=false", "logger.save_checkpoint_freq=0", "datasets.train.batch_size=2"):
            cmd += ["--set", s]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=max(1.0, deadline - time.monotonic()))
        sec = time.perf_counter() - t
        log = Path(tmp, "demo_tiny_DRBN", "train.log")
        text = log.read_text() if log.is_file() else ""
        done = f"training done at step {steps}" in text
        res = {"backend": "nccl" if device.type == "cuda" else "gloo", "processes": nproc, "steps": steps,
               "seconds": sec, "returncode": r.returncode, "finished": done,
               "ranks_in_sync": "ranks in sync" in text}
        if r.returncode != 0 or not done:
            res["error"] = (r.stderr or r.stdout)[-1500:]
    return res


def stage_pytest(args, device, deadline):
    """`pytest -m cuda`: counts of passed / failed / skipped tests and the failures' messages."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_pytest_") as tmp:
        xml = Path(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={xml}",
               *args.pytest_paths.split(",")]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                           timeout=max(1.0, deadline - time.monotonic()))
        res = {"returncode": r.returncode, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
        if xml.is_file():
            for case in ET.parse(xml).iter("testcase"):
                name = f"{case.get('classname')}::{case.get('name')}"
                bad = case.find("failure")
                bad = bad if bad is not None else case.find("error")
                if bad is not None:
                    res["failed"] += 1
                    res["failures"].append(f"{name}: {(bad.get('message') or '')[:300]}")
                elif case.find("skipped") is not None:
                    res["skipped"] += 1
                else:
                    res["passed"] += 1
        # 5 = no test collected (no CUDA-marked test selected): not a failure of the check
        if r.returncode not in (0, 5) or res["failed"]:
            res["error"] = r.stdout[-1500:]
    return res


def _child(args):
    import torch
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    deadline = time.monotonic() + args.box
    fn = {"infer": stage_infer, "infer4k": stage_infer4k, "train": stage_train, "compile": stage_compile,
          "ddp": stage_ddp, "pytest": stage_pytest}[args.child]
    print("RESULT " + json.dumps(fn(args, device, deadline)), flush=True)


# -- parent side: run the stages, collect one JSON ---------------------------------------------------------------
def _child_cmd(args, stage: str, box: float) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--box", f"{box:.1f}",
           "--device", args.device, "--families", args.families, "--size", args.size, "--large", args.large,
           "--repeat", str(args.repeat), "--steps", str(args.steps), "--batch", str(args.batch), "--crop",
           str(args.crop), "--amp", args.amp, "--fill", str(args.fill), "--compile-backend", args.compile_backend,
           "--threads", str(args.threads),
           "--pytest-paths", args.pytest_paths]
    return cmd + (["--tiny"] if args.tiny else [])


def _stage_ok(stage: str, res) -> bool:
    """Whether a stage's result holds no error anywhere (and, for training, every family learnt)."""
    if not isinstance(res, dict):
        return True
    if "error" in res or res.get("ok") is False or res.get("finite") is False:
        return False
    return all(_stage_ok(stage, v) for v in res.values() if isinstance(v, dict))


def run_stage(args, stage: str, box: float) -> dict:
    t = time.perf_counter()
    entry = {"stage": stage, "time_box_s": round(box, 1)}
    try:
        # the child's own deadline is the box; the hard timeout adds a margin for start-up and clean-up
        r = subprocess.run(_child_cmd(args, stage, box), capture_output=True, text=True, cwd=ROOT,
                           timeout=box + 30)
        line = next((l for l in reversed(r.stdout.splitlines()) if l.startswith("RESULT ")), None)
        if line is not None:
            entry["result"] = json.loads(line[7:])
        if r.returncode != 0 or line is None:
            entry["error"] = f"exit {r.returncode}: {r.stderr.strip()[-1500:]}"
    except subprocess.TimeoutExpired:
        entry["error"] = f"killed after its time box of {box:.0f} s (+30 s)"
    entry["seconds"] = round(time.perf_counter() - t, 2)
    entry["ok"] = "error" not in entry and _stage_ok(stage, entry.get("result"))
    return entry


def _fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def summary(report: dict) -> list[str]:
    """Human-readable lines of the report (what main prints)."""
    lines = [f"gpu_check on {report['device_name']} (torch {report['torch']}, {report['mode']}): "
             f"{sum(s['ok'] for s in report['stages'].values())}/{len(report['stages'])} stages ok in "
             f"{report['seconds']:.0f} s"]
    for name, s in report["stages"].items():
        head = f"  {name:8s} {'ok  ' if s['ok'] else 'FAIL'} {s['seconds']:6.1f} s"
        res = s.get("result") or {}
        if name in ("infer", "infer4k"):
            lines.append(head)
            for fam, r in res.items():
                parts = [f"{dt} {_fmt(r[dt].get('seconds'))} s, {_fmt(r[dt].get('peak_gb'))} GB"
                         + (f", Δ {_fmt(r[dt].get('max_diff_vs_fp32'))} (rel {_fmt(r[dt].get('rel_diff_vs_fp32'))})"
                            if "max_diff_vs_fp32" in r[dt] else "")
                         if "error" not in r[dt] else f"{dt} error" for dt in ("fp32", "bf16", "fp16") if dt in r]
                lines.append(f"      {fam:7s} " + ("; ".join(parts) if parts else r.get("error", "")))
        elif name == "train":
            lines.append(head)
            for fam, r in res.items():
                lines.append(f"      {fam:7s} " + (r["error"] if "error" in r else
                             f"{r['steps']} steps ({r['amp_dtype']}), {r['loss_key']} {r['first_mean']:.4g} -> "
                             f"{r['last_mean']:.4g}, {_fmt(r['steps_per_s'])} steps/s, finite {r['finite']}"))
        elif name == "pytest":
            lines.append(head + f"  passed {res.get('passed', 0)}, failed {res.get('failed', 0)}, "
                                f"skipped {res.get('skipped', 0)}")
        elif name == "ddp":
            lines.append(head + f"  {res.get('backend')} x{res.get('processes')}: finished {res.get('finished')}, "
                                f"ranks in sync {res.get('ranks_in_sync')}")
        elif name == "compile":
            lines.append(head + f"  {res.get('backend')}: cold {_fmt(res.get('cold_seconds'))} s, warm "
                                f"{_fmt(res.get('warm_seconds'))} s (eager {_fmt(res.get('eager_seconds'))} s), "
                                f"Δ {_fmt(res.get('max_diff_vs_eager'))}")
        else:
            lines.append(head)
        if "error" in s:
            lines.append("      error: " + s["error"].strip().splitlines()[-1][:300] if s["error"].strip() else "")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default; without CUDA: a one-line note, exit 0) or cpu")
    ap.add_argument("--tiny", action="store_true", help="demo_tiny configs and small sizes (a dry run)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for all stages together")
    ap.add_argument("--json", help="where the report goes (default gpu_check_<date>_<time>.json; never overwritten)")
    ap.add_argument("--size", help="HxW of the inference input (default 400x600; --tiny 48x64)")
    ap.add_argument("--large", help="WxH of the large frame (default 3840x2160; --tiny 192x128)")
    ap.add_argument("--repeat", type=int, default=3, help="timed inference calls (the median is reported)")
    ap.add_argument("--steps", type=int, help="training steps per family (default 200; --tiny 12)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, help="training crop (default 128; --tiny 32)")
    ap.add_argument("--amp", default=None, choices=("bf16", "fp16", "fp32"),
                    help="train.amp_dtype of the training stage (default bf16)")
    ap.add_argument("--fill", type=float, default=1e-3,
                    help="std of the random values given to zero-initialised weights (0: leave them at zero)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (inductor; eager or aot_eager for a quick dry run)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 0) or 1)
    ap.add_argument("--pytest-paths", default="tests", help="comma-separated paths given to pytest -m cuda")
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--box", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.size = args.size or ("48x64" if args.tiny else "400x600")
    args.large = args.large or ("192x128" if args.tiny else "3840x2160")
    args.steps = args.steps or (12 if args.tiny else 200)
    args.crop = args.crop or (32 if args.tiny else 128)
    args.amp = args.amp or "bf16"
    if args.child:
        return _child(args)
    import torch
    if args.device not in ("cuda", "cpu"):
        raise SystemExit(f"error: --device must be cuda or cpu, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device on this machine (torch {torch.__version__}); nothing to check "
              f"(--device cpu --tiny runs a dry run on the CPU)")
        return 0
    stages = [s for s in args.stages.split(",") if s]
    for s in stages:
        if s not in STAGES:
            raise SystemExit(f"error: --stages: unknown stage {s!r} (choose from {', '.join(STAGES)})")
    for f in args.families.split(","):
        if f not in FAMILIES:
            raise SystemExit(f"error: --families: unknown family {f!r} (choose from {', '.join(FAMILIES)})")
    out = Path(args.json or time.strftime("gpu_check_%Y%m%d_%H%M%S.json"))
    if out.exists():
        raise SystemExit(f"error: --json {out} already exists (choose another name; reports are never overwritten)")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    start = time.monotonic()
    report = {"device": args.device, "device_name": name, "torch": torch.__version__,
              "cuda": torch.version.cuda, "mode": "tiny" if args.tiny else "full-size", "budget_s": args.budget,
              "argv": sys.argv[1:] if argv is None else list(argv), "stages": {}}
    total_share = sum(SHARE[s] for s in stages)
    for i, s in enumerate(stages):
        left = args.budget - (time.monotonic() - start)
        share = SHARE[s] / sum(SHARE[x] for x in stages[i:])   # unused time of earlier stages goes to later ones
        box = max(10.0, left * share) if total_share else left
        report["stages"][s] = run_stage(args, s, box)
        print(f"gpu_check: {s} {'ok' if report['stages'][s]['ok'] else 'FAILED'} "
              f"({report['stages'][s]['seconds']:.0f} s)", flush=True)
    report["seconds"] = round(time.monotonic() - start, 1)
    report["ok"] = all(s["ok"] for s in report["stages"].values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print("\n".join(summary(report)))
    print(f"gpu_check: report written to {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
