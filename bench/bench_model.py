"""Time inference on one 400x600 image and one training step (batch 4 x 160x160) of a config, with peak memory.

python bench/bench_model.py --opt confs/LLFlow/LOL-pc.yml [--variant llflow] [--what infer,train] [--threads 2]
                            [--size 400x600] [--batch 4] [--crop 160] [--weights PATH] [--channels-last]
                            [--repeat N] [--system-malloc] [--compile]

Each measurement runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own; the training step is the
second of two (the first pays for allocator growth and Adam state), inference follows a small warm-up call. Weights are random unless
--weights is given (speed does not depend on the values). Numbers printed are measured, never estimated.
The first full-size inference call also pays for oneDNN's kernel set-up at that size; --repeat N shows the later
calls (what every further image of the same size costs, e.g. a test set). Like the CLIs, the child applies
utils.runtime.keep_freed_memory unless --system-malloc is given.
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


def _child(args):
    if not args.system_malloc:
        from utils.runtime import keep_freed_memory
        keep_freed_memory()
    import torch
    torch.set_num_threads(args.threads)
    from models.build import build_generator
    from options.options import load_options
    sets = list(args.set or [])
    if args.variant:
        sets.append(f"network_G.variant={args.variant}")
    opt = load_options(args.opt, sets, is_train=args.what == "train")
    model, _ = build_generator(opt, args.weights)
    for m in model.modules():  # a benchmark must not pay for (or depend on) ActNorm's data init
        if hasattr(m, "inited"):
            m.inited = True
    h, w = (int(v) for v in args.size.split("x"))
    mult = model.pad_multiple
    hp, wp = -(-h // mult) * mult, -(-w // mult) * mult
    in_ch = 3 + (3 if opt.get("concat_histeq") else 0)
    aux_ch = {"gltg_mask": 3, "zmar_mask": 1, "upt_zero_map": 1}.get(model.aux_input)
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    if args.what == "infer":
        model.eval()
        lq = torch.rand(1, in_ch, hp, wp, generator=g).contiguous(memory_format=fmt)
        aux = (torch.rand(1, aux_ch, hp, wp, generator=g) > 0.5).float() if aux_ch else None
        if args.compile:   # as inference.compile: the encoder, static shapes (the first call compiles)
            for m in model.compile_targets():
                m.compile(dynamic=False)
        with torch.inference_mode():
            if not args.compile:   # a compiled warm-up would compile for its own size too
                model.reverse(lq[..., :64, :64], None if aux is None else aux[..., :64, :64])  # warm-up (allocator)
            times = []
            for _ in range(max(1, args.repeat)):
                t = time.perf_counter()
                out = model.reverse(lq, aux)
                times.append(time.perf_counter() - t)
                assert out.shape[-2:] == (hp, wp)
                del out
        res = {"what": "inference", "shape": [hp, wp], "seconds": times[0], "later": times[1:]}
    else:
        model.train()
        if opt["train"].get("activation_checkpointing"):
            from models.activation_checkpointing import enable_activation_checkpointing
            enable_activation_checkpointing(model.RRDB)
        c = args.crop
        gt = torch.rand(args.batch, 3, c, c, generator=g)
        lq = torch.rand(args.batch, in_ch, c, c, generator=g).contiguous(memory_format=fmt)
        gt = gt.contiguous(memory_format=fmt)
        aux = (torch.rand(args.batch, aux_ch, c, c, generator=g) > 0.5).float() if aux_ch else None
        opt_ = torch.optim.Adam(model.parameters(), lr=1e-5)

        def step():
            opt_.zero_grad(set_to_none=True)
            loss = model.nll(gt, lq, aux)["nll"].mean()
            loss.backward()
            opt_.step()
            return loss

        step()  # warm-up: the first step also pays for allocator growth and Adam state creation
        t = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t
        res = {"what": "train_step", "batch": args.batch, "crop": c, "seconds": dt, "loss_finite": bool(loss.isfinite())}
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    res["threads"] = args.threads
    res["layout"] = "NHWC" if args.channels_last else "NCHW"
    res["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    res["malloc"] = "system" if args.system_malloc else "keep-freed"
    res["compiled"] = bool(args.compile)
    print("RESULT " + json.dumps(res))


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
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the encoder (inference.compile); the first call includes the compilation")
    ap.add_argument("--system-malloc", action="store_true",
                    help="leave glibc's default (unmap freed large blocks) instead of utils.runtime.keep_freed_memory")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    for what in args.what.split(","):
        cmd = [sys.executable, __file__, "--child", "--what", what, "--opt", args.opt, "--threads", str(args.threads),
               "--size", args.size, "--batch", str(args.batch), "--crop", str(args.crop), "--repeat", str(args.repeat)]
        cmd += (["--variant", args.variant] if args.variant else []) + (["--weights", args.weights] if args.weights else [])
        cmd += sum((["--set", s] for s in args.set or []), []) + (["--channels-last"] if args.channels_last else [])
        cmd += ["--system-malloc"] if args.system_malloc else []
        cmd += ["--compile"] if args.compile else []
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            print(f"{what}: failed\n{r.stderr[-2000:]}")
            continue
        res = json.loads(line[7:])
        extra = f"{res['shape'][0]}x{res['shape'][1]}" if what == "infer" else f"batch {res['batch']} x {res['crop']}^2"
        later = res.get("later") or []
        if later:
            extra += f" (later calls: {', '.join(f'{v:.2f}' for v in later)} s)"
        print(f"{Path(args.opt).name} {what} {extra}: {res['seconds']:.2f} s, peak RSS {res['peak_rss_gb']:.2f} GB "
              f"({res['threads']} threads, {res['layout']}, {res['malloc']} malloc, {res['params_m']:.2f} M params"
              f"{', compiled encoder: first call includes compilation' if res.get('compiled') else ''})")


if __name__ == "__main__":
    main()
