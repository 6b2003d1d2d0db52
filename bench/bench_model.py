"""Time inference on one 400x600 image and one training step (batch 4 x 160x160) of a config, with peak memory.

python bench/bench_model.py --opt confs/LLFlow/LOL-pc.yml [--variant llflow] [--what infer,train,flops] [--threads 2]
                            [--size 400x600] [--batch 4] [--crop 160] [--weights PATH] [--channels-last]
                            [--repeat N] [--system-malloc] [--dtype fp32|bf16|fp16] [--cast weights|autocast]
                            [--json FILE]      (--dtype auto: bf16 where the CPU has AMX or is an AMD CPU with AVX512-BF16, else fp32)

Each measurement runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own; the training step is the
second of two (the first pays for allocator growth and Adam state), inference follows a small warm-up call. Weights are random unless
--weights is given (speed does not depend on the values). Numbers printed are measured, never estimated.
The first full-size inference call also pays for oneDNN's kernel set-up at that size; --repeat N shows the later
calls (what every further image of the same size costs, e.g. a test set). Like the CLIs, the child applies
utils.runtime.keep_freed_memory unless --system-malloc is given.

Any `model:` works. Inference runs the network's `enhance` exactly as engine/inference.py's Enhancer sets it up
(`--dtype`, `--cast`: models/precision.py); the training step is the method's own `optimize()`
(models/methods/base_model.py), so `train.activation_checkpointing`, `train.invertible_backprop` (via --set) and `--dtype`
(= train.amp_dtype) act as in train.py. `--what flops` counts the floating-point operations of one inference call
with torch.utils.flop_counter (FLOP = 2 x multiply-accumulate; convolutions and matrix products). `--json FILE` writes
every result (seconds, cpu_seconds, peak_rss_gb, params_m, gflop, ...) as a JSON list. `cpu_seconds` is the process's CPU time over the timed call (all threads): on a shared machine it moves
far less with other people's load than wall time, so paired comparisons should look at both.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import utils.threads  # noqa: E402,F401  (OMP_WAIT_POLICY default before torch loads OpenMP; the children inherit it)


def _child(args):
    if not args.system_malloc:
        from utils.runtime import keep_freed_memory
        keep_freed_memory()
    import torch
    torch.set_num_threads(args.threads)
    from models.build import build_network, model_class
    from options.options import load_options
    sets = list(args.set or [])
    if args.variant:
        sets.append(f"network_G.variant={args.variant}")
    dtype_reason = None
    if args.dtype == "auto":
        from models.precision import auto_dtype
        args.dtype, dtype_reason = auto_dtype("cpu")
    if args.what == "train" and args.dtype != "fp32":
        sets.append(f"train.amp_dtype={args.dtype}")
    opt = load_options(args.opt, sets, is_train=args.what == "train")
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.what == "flops":
        from torch.utils.flop_counter import FlopCounterMode
        model, _ = build_network(opt, args.weights)
        _no_data_init(model)
        model.eval().to(memory_format=fmt)
        lq, aux, (hp, wp) = _inputs(opt, model, 1, *(int(v) for v in args.size.split("x")), g, fmt, pad=True)
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model.enhance(lq, aux)
        res = {"what": "flops", "shape": [hp, wp], "gflop": counter.get_total_flops() / 1e9, "seconds": 0.0}
    elif args.what == "infer":
        from engine.inference import Enhancer
        net, _ = build_network(opt, args.weights)
        _no_data_init(net)
        enh = Enhancer(net, dict(opt, inference=dict(opt["inference"], channels_last=args.channels_last)),
                       device="cpu", dtype=args.dtype, cast=args.cast)
        model = enh.model
        lq, aux, (hp, wp) = _inputs(opt, model, 1, *(int(v) for v in args.size.split("x")), g, fmt, pad=True)
        with torch.inference_mode():
            enh._run(lq[..., :64, :64], None if aux is None else aux[..., :64, :64], 0.0)   # warm-up (allocator)
            times, cpu = [], []
            for _ in range(max(1, args.repeat)):
                t, c = time.perf_counter(), time.process_time()
                out = enh._run(lq, aux, 0.0)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                assert out.shape[-2:] == (hp, wp)
                del out
        res = {"what": "inference", "shape": [hp, wp], "seconds": times[0], "later": times[1:],
               "cpu_seconds": cpu[0], "later_cpu": cpu[1:]}
    else:
        device = torch.device("cpu")
        method = model_class(opt.get("model"))(opt, device)
        model = method.net
        _no_data_init(model)
        model.to(memory_format=fmt)
        c = args.crop
        lq, aux, _ = _inputs(opt, model, args.batch, c, c, g, fmt)
        batch = {"GT": torch.rand(args.batch, 3, c, c, generator=g).contiguous(memory_format=fmt), "LQ": lq}
        if aux is not None:
            batch["AUX"] = aux
        method.optimize(batch)  # warm-up: the first step also pays for allocator growth and Adam state creation
        t, cpu = time.perf_counter(), time.process_time()
        logs = method.optimize(batch)
        dt, cpu = time.perf_counter() - t, time.process_time() - cpu
        res = {"what": "train_step", "batch": args.batch, "crop": c, "seconds": dt, "cpu_seconds": cpu,
               "loss_finite": not logs.get("skipped", False)}
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    res["threads"] = args.threads
    res["layout"] = "NHWC" if args.channels_last else "NCHW"
    res["dtype"] = args.dtype
    res["dtype_reason"] = dtype_reason
    res["wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    res["cast"] = {"infer": args.cast, "train": "autocast"}.get(args.what)
    res["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    res["malloc"] = "system" if args.system_malloc else "keep-freed"
    res["config"] = str(args.opt)
    res["sets"] = sets
    print("RESULT " + json.dumps(res))


def _no_data_init(net):
    for m in net.modules():  # a benchmark must not pay for (or depend on) ActNorm's data init
        if hasattr(m, "inited"):
            m.inited = True


def _inputs(opt, net, batch, h, w, g, fmt, pad=False):
    """Random (lq, aux) of the shapes the network expects (padded to its multiple when `pad`)."""
    import torch
    mult = net.pad_multiple
    if pad:
        h, w = -(-h // mult) * mult, -(-w // mult) * mult
    in_ch = 3 + (3 if opt.get("concat_histeq") else 0)
    aux_ch = {"gltg_mask": 3, "zmar_mask": 1, "upt_zero_map": 1}.get(net.aux_input)
    lq = torch.rand(batch, in_ch, h, w, generator=g).contiguous(memory_format=fmt)
    aux = (torch.rand(batch, aux_ch, h, w, generator=g) > 0.5).float() if aux_ch else None
    return lq, aux, (h, w)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--opt", required=True)
    ap.add_argument("--set", action="append")
    ap.add_argument("--variant")
    ap.add_argument("--weights")
    ap.add_argument("--what", default="infer,train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="400x600")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs (oneDNN's preferred layout)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="inference calls at full size; the first pays for oneDNN's kernel set-up at that size")
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's default (unmap freed large blocks) instead of utils.runtime.keep_freed_memory")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                    help="inference: compute dtype (models/precision.py); train: train.amp_dtype; auto: bf16 where "
                         "the CPU has AMX or is an AMD CPU with AVX512-BF16, else fp32")
    ap.add_argument("--cast", default="weights", choices=("weights", "autocast"),
                    help="reduced-precision inference: cast the weights once, or autocast over float32 weights")
    ap.add_argument("--json", help="write the results to this file (a JSON list, one object per measurement)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    results = []
    for what in args.what.split(","):
        cmd = [sys.executable, __file__, "--child", "--what", what, "--opt", args.opt, "--threads", str(args.threads),
               "--size", args.size, "--batch", str(args.batch), "--crop", str(args.crop), "--repeat", str(args.repeat)]
        cmd += (["--variant", args.variant] if args.variant else []) + (["--weights", args.weights] if args.weights else [])
        cmd += sum((["--set", s] for s in args.set or []), []) + (["--channels-last"] if args.channels_last else [])
        cmd += ["--system-malloc"] if args.system_malloc else []
        cmd += ["--dtype", args.dtype, "--cast", args.cast]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            print(f"{what}: failed\n{r.stderr[-2000:]}")
            continue
        res = json.loads(line[7:])
        results.append(res)
        if what == "flops":
            print(f"{Path(args.opt).name} flops {res['shape'][0]}x{res['shape'][1]}: {res['gflop']:.1f} GFLOP "
                  f"({res['gflop'] / 2:.1f} G multiply-accumulates), {res['params_m'] * 1e6:,.0f} params")
            continue
        extra = f"{res['shape'][0]}x{res['shape'][1]}" if what == "infer" else f"batch {res['batch']} x {res['crop']}^2"
        later = res.get("later") or []
        if later:
            extra += f" (later calls: {', '.join(f'{v:.2f}' for v in later)} s)"
        print(f"{Path(args.opt).name} {what} {extra}: {res['seconds']:.2f} s (CPU {res['cpu_seconds']:.2f} s), peak RSS {res['peak_rss_gb']:.2f} GB "
              f"({res['threads']} threads, {res['layout']}, {res['dtype']}"
              f"{' (' + res['dtype_reason'] + ')' if res.get('dtype_reason') else ''}, {res['malloc']} malloc, "
              f"{res['params_m']:.2f} M params)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
