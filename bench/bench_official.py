"""Our inference against the official code, side by side, under the same process settings.

python bench/bench_official.py --official PATH_TO_OFFICIAL_CHECKOUT --family llflow|zmar|upt|gltg|drbn
                               [--pairs 3] [--threads 1] [--image PATH] [--system-malloc] [--repeat 1]
                               [--dtype fp32|bf16|fp16|auto] [--channels-last | --no-channels-last] [--json FILE]

--dtype and the layout flags act on our side only (the official code always runs as published: float32, NCHW):
our network runs in that dtype exactly as engine/inference.py's Enhancer runs it (weights cast once), so the ratio is
ours-in-that-dtype / official-fp32; the layout default is our config's ``inference.channels_last`` (NHWC). The
outputs' PSNR (clipped to [0, 1], peak 1) shows how far the reduced precision moved ours from the official output.
Peak memory is each process's peak RSS. --json writes every pair and the medians.

PATH is a checkout of the family's official repository (wyf0912/LLFlow, NJUPT-IPR-ZhangBo/ZMAR-SNFlow,
NJUPT-IPR-XuLintao/UPT-Flow, NJUPT-IPR-HuKR/GLTG-AFlow, flyywh/CVPR-2020-Semi-Low-Light); nothing of it is copied
here. The official code runs in its own subprocess with the checkout's code folder on sys.path, through its own
entry points: its option parser and YAML (``confs/`` of the checkout), ``models.create_model``, ``load_network`` and
``get_sr`` (what its test scripts call); for DRBN, its ``model/drbn.py`` network called as its ``trainer.test``
does. Packages the official code imports that this project does not pin (einops, timm, thop) go on PYTHONPATH
(``--site DIR``, e.g. wheels unpacked there with ``pip download``), never into requirements.txt.

Both sides get identical weights (our generator built from our copy of the official YAML with a fixed seed, every
parameter perturbed by --perturb N(0, 1) so that no coupling is an identity, saved in the official layout; the
official model loads it with ``load_network``) and identical input tensors (a real
400x600 LOL-v1 image preprocessed once, as golden-tested against the official preprocessing). Each run is a fresh
process with the same threads (torch.set_num_threads and OMP_NUM_THREADS) and the same allocator setting
(utils.runtime.keep_freed_memory on both sides, or on neither with --system-malloc); it enhances a 64x64 crop first
(allocator warm-up), then times the full image (the first call at that size, oneDNN's kernel set-up included, on
both sides). Runs alternate official, ours, official, ours ... and the ratio ours / official is printed per pair,
then their median: pairs keep the comparison fair on a shared machine whose load changes. The outputs of both sides
are compared (max abs difference) to show that the same network ran.

Shims, applied in the official process only, for running CUDA code on a CPU (no file of the checkout is edited):
``.cuda()`` returns the tensor/module unchanged; for GLTG-AFlow, whose flow builds half-precision layers inside
every call (it ran under CUDA autocast), ``Module.half()`` keeps float32. GLTG-AFlow's official flow draws new
random layers on every call, so its output is not comparable (only its time is).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._official import cuda_shim, enter_official  # noqa: E402

# family: (our config, official code folder in the checkout, official config in that folder)
FAMILIES = {
    "llflow": ("confs/LLFlow/LOL-pc.yml", "code", "confs/LOL-pc.yml"),
    "zmar": ("confs/ZMAR-SNFlow/LOLv2-pc.yml", ".", "confs/LOLv2-pc.yml"),
    "upt": ("confs/UPT-Flow/UPT-Flow.yml", "UPT-Flow", "confs/UPT-Flow.yml"),
    "gltg": ("confs/GLTG-AFlow/LOLv2-pc.yml", ".", "confs/LOLv2-pc.yml"),
    "drbn": ("confs/DRBN/DRBN_stage1.yml", "DRBL-stage1/src", None),   # flyywh/CVPR-2020-Semi-Low-Light
}
WARMUP = 64


def _settings(args):
    if not args.system_malloc:
        # loaded from its file: the official code has its own top-level `utils`, `models`, `options` packages
        import importlib.util
        spec = importlib.util.spec_from_file_location("_lowlight_runtime", ROOT / "utils" / "runtime.py")
        runtime = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runtime)
        runtime.keep_freed_memory()
    import torch
    torch.set_num_threads(args.threads)
    return torch


def _options(args):
    from options.options import load_options
    overrides = [] if args.family == "drbn" else [f"network_G.variant={args.family}"]
    return load_options(ROOT / FAMILIES[args.family][0], overrides)


def _time_calls(torch, call, lq, aux, repeat: int):
    crop = (..., slice(0, WARMUP), slice(0, WARMUP))
    call(lq[crop], None if aux is None else aux[crop])                  # allocator warm-up
    times, out = [], None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = call(lq, aux)
        times.append(time.perf_counter() - t)
    return times, out


def _report(torch, times, out, args, **extra):
    """The child's one result line: call times, the process's peak RSS, and its output saved for the comparison."""
    import resource
    torch.save(out.float(), args.out)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps({"seconds": times[0], "later": times[1:], "peak_rss_gb": peak_gb, **extra}))


def _official_child(args):
    torch = _settings(args)
    _, folder, conf = FAMILIES[args.family]
    code = Path(args.official).resolve() / folder
    enter_official(code, args.site)
    cuda_shim(torch, keep_half_fp32=args.family == "gltg")            # CPU run of CUDA code (module docstring)
    os.chdir(args.workdir)
    if args.family == "drbn":
        return _official_drbn(torch, args)
    import options.options as option
    from models import create_model
    opt = option.parse(str(code / conf), is_train=False)
    opt["gpu_ids"] = None
    opt = option.dict_to_nonedict(opt)
    model = create_model(opt)
    own = set(model.netG.state_dict())
    sd = torch.load(args.weights, map_location="cpu", weights_only=True)
    missing, unexpected = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or unexpected:   # load_network is strict: give it exactly the official keys
        sd = {k: v for k, v in sd.items() if k in own}
        model.netG.load_state_dict(sd, strict=False)
    else:
        model.load_network(load_path=args.weights, network=model.netG)
    lq, aux = (torch.load(args.inputs, weights_only=True)[k] for k in ("lq", "aux"))

    def call(x, a):
        return model.get_sr(lq=x, heat=None) if args.family == "llflow" else model.get_sr(x, a, heat=None)
    times, out = _time_calls(torch, call, lq, aux, args.repeat)
    _report(torch, times, out, args, missing_keys=len(missing), unexpected_keys=len(unexpected))


def _official_drbn(torch, args):
    """DRBN has no option-parsed model factory worth its data set-up: its `model.drbn.DRBN` network, called as its
    trainer.test calls it (input / 255, no_grad, the full-resolution band of the returned three)."""
    from types import SimpleNamespace
    from model.drbn import DRBN
    net = DRBN(SimpleNamespace(n_colors=3)).eval()
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    lq = torch.load(args.inputs, weights_only=True)["lq"]

    def call(x, _):
        with torch.no_grad():
            return net(x)[0]
    times, out = _time_calls(torch, call, lq, None, args.repeat)
    _report(torch, times, out, args, missing_keys=0, unexpected_keys=0)


def _ours_child(args):
    torch = _settings(args)
    from engine.inference import Enhancer
    from models.build import build_network
    opt = _options(args)
    if args.channels_last is not None:
        opt = dict(opt, inference=dict(opt.get("inference") or {}, channels_last=args.channels_last))
    model, _ = build_network(opt, args.weights)
    enh = Enhancer(model, opt, device="cpu", tile=0, dtype=args.dtype)
    lq, aux = (torch.load(args.inputs, weights_only=True)[k] for k in ("lq", "aux"))
    times, out = _time_calls(torch, lambda x, a: enh.enhance_tensor(x, a), lq, aux, args.repeat)
    _report(torch, times, out, args, dtype=enh.dtype_name, dtype_reason=enh.dtype_reason,
            layout="NHWC" if enh.memory_format == torch.channels_last else "NCHW")


def _prepare(args, tmp: Path):
    """Identical weights (official layout) and input tensors for both sides."""
    import torch
    from data.image_io import read_rgb
    from engine.inference import Enhancer
    from models.build import build_network
    from models.networks.flow.couplings.aflow import aflow_head_parameter_names
    torch.manual_seed(args.seed)
    opt = _options(args)
    model, _ = build_network(opt, None)
    for m in model.modules():   # ActNorm counts as initialised (the official loader sets nothing else)
        if hasattr(m, "inited"):
            m.inited = True
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():       # no layer is an identity (zero-initialised convs included)
        for p in model.parameters():
            p.add_(args.perturb * torch.randn(p.shape, generator=g))
    ours_only = set(aflow_head_parameter_names(model))     # GLTG's registered heads: not official tensors
    sd = {k: v for k, v in model.state_dict().items() if k not in ours_only}
    torch.save(sd, tmp / "weights.pth")
    if ours_only:   # our side needs its heads too: a second file with everything
        torch.save(model.state_dict(), tmp / "weights_ours.pth")
    image = args.image
    if image is None:
        shared = Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared"))
        found = sorted((shared / "data/LOL-v1-mini/our485/low").glob("*.png"))
        if not found:
            raise SystemExit("no image: give --image (a real low-light photo; ../shared has LOL-v1-mini)")
        image = str(found[0])
    lq, aux = Enhancer(model, opt, device="cpu", tile=0).prepare(read_rgb(image))
    torch.save({"lq": lq, "aux": aux}, tmp / "inputs.pt")
    return image, tuple(lq.shape[-2:])


def _run(args, side: str, tmp: Path, index: int) -> dict | None:
    out = tmp / f"out_{side}_{index}.pt"
    weights = tmp / ("weights_ours.pth" if side == "ours" and (tmp / "weights_ours.pth").exists() else "weights.pth")
    cmd = [sys.executable, __file__, f"--child-{side}", "--family", args.family, "--threads", str(args.threads),
           "--weights", str(weights), "--inputs", str(tmp / "inputs.pt"), "--out", str(out),
           "--repeat", str(args.repeat), "--workdir", str(tmp)]
    cmd += ["--official", args.official] if args.official else []
    cmd += ["--site", args.site] if args.site else []
    cmd += ["--system-malloc"] if args.system_malloc else []
    if side == "ours":
        cmd += ["--dtype", args.dtype]
        cmd += [] if args.channels_last is None else ["--channels-last" if args.channels_last else "--no-channels-last"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT if side == "ours" else tmp)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        print(f"{side} run failed (exit {r.returncode}):\n{r.stderr[-3000:]}", flush=True)
        return None
    res = json.loads(line[7:])
    res["out"] = out
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", help="path to a checkout of the family's official repository")
    ap.add_argument("--family", required=True, choices=list(FAMILIES))
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="full-size calls per run (the first one is compared)")
    ap.add_argument("--image", help="input image (default: a LOL-v1 low-light photo from ../shared)")
    ap.add_argument("--site", help="folder put on the official side's sys.path for its extra packages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--perturb", type=float, default=1e-3, help="std of the noise added to every parameter")
    ap.add_argument("--system-malloc", action="store_true", help="glibc's default allocator on both sides")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                    help="our side's compute dtype (the official side stays float32)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="our side's layout: NHWC / NCHW (default: the config's inference.channels_last, NHWC)")
    ap.add_argument("--json", help="write the pairs and medians to this file (a JSON object)")
    for hidden in ("--weights", "--inputs", "--out", "--workdir"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--child-official", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-ours", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_official:
        return _official_child(args)
    if args.child_ours:
        return _ours_child(args)
    if not args.official:
        ap.error("--official PATH is required")
    # both sides get the CLIs' default wait policy (utils/threads.py; not imported here: the official child has its
    # own top-level `utils` package) unless the environment names one
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    with tempfile.TemporaryDirectory(prefix="bench_official_") as d:
        tmp = Path(d)
        image, shape = _prepare(args, tmp)
        malloc = "glibc default" if args.system_malloc else "keep-freed (utils.runtime) on both sides"
        print(f"{args.family}: {Path(image).name} at {shape[0]}x{shape[1]}, {args.threads} thread(s), {malloc}",
              flush=True)
        ratios, later_ratios, pairs = [], [], []
        for i in range(args.pairs):
            a = _run(args, "official", tmp, i)
            b = _run(args, "ours", tmp, i)
            if a is None or b is None:
                continue
            oa, ob = torch.load(a["out"], weights_only=True), torch.load(b["out"], weights_only=True)
            diff, scale = (oa - ob).abs().max(), oa.abs().max()
            mse = (oa.clamp(0, 1) - ob.clamp(0, 1)).square().mean().item()
            psnr = float("inf") if mse == 0 else 10 * math.log10(1 / mse)
            ratio = b["seconds"] / a["seconds"]
            ratios.append(ratio)
            pairs.append({"official": {k: a[k] for k in ("seconds", "later", "peak_rss_gb")},
                          "ours": {k: b[k] for k in ("seconds", "later", "peak_rss_gb", "dtype", "layout")},
                          "ratio": ratio, "max_abs_diff": diff.item(), "output_max": scale.item(),
                          "psnr_ours_vs_official": psnr})
            keys = f"; official load: {a['missing_keys']} missing / {a['unexpected_keys']} unexpected keys" \
                if a["missing_keys"] or a["unexpected_keys"] else ""
            if a["later"] and b["later"]:
                later_ratios.append(b["later"][-1] / a["later"][-1])
                keys += (f"; later call: official {a['later'][-1]:.2f} s, ours {b['later'][-1]:.2f} s, ratio "
                         f"{later_ratios[-1]:.3f}")
            print(f"pair {i + 1}: official fp32 {a['seconds']:.2f} s / {a['peak_rss_gb']:.2f} GB, "
                  f"ours {b['dtype']} {b['layout']} {b['seconds']:.2f} s / {b['peak_rss_gb']:.2f} GB, ratio "
                  f"{ratio:.3f} (outputs differ by at most {diff.item():.2e}, output max {scale.item():.2e}, "
                  f"PSNR {psnr:.1f} dB{keys})", flush=True)
        if ratios:
            print(f"{args.family}: ours ({args.dtype}) / official (fp32) = {statistics.median(ratios):.3f} (median "
                  f"of {len(ratios)} pairs: {', '.join(f'{r:.3f}' for r in ratios)})")
        if later_ratios:
            print(f"{args.family}: later calls, ours / official = {statistics.median(later_ratios):.3f} (median of "
                  f"{len(later_ratios)} pairs)")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "family": args.family, "image": str(image), "shape": list(shape), "threads": args.threads,
                "malloc": malloc, "wait_policy": os.environ.get("OMP_WAIT_POLICY"), "dtype": args.dtype,
                "pairs": pairs, "median_ratio": statistics.median(ratios) if ratios else None,
                "median_later_ratio": statistics.median(later_ratios) if later_ratios else None}, indent=1))


if __name__ == "__main__":
    main()
