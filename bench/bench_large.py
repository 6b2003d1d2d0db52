"""Enhance one large image (default 3840x2160) with every family, through the test scripts' Enhancer (automatic
layer-wise tiles above inference.max_memory), and report the time and peak RSS of each.

python bench/bench_large.py [--families llflow,gltg,zmar,upt] [--size 3840x2160] [--dtype fp32|bf16]
                            [--threads 2] [--tile N] [--max-memory GB] [--image PATH] [--system-malloc]
python bench/bench_large.py --calibrate [--families ...]     # the per-pixel footprints of models/tiling/memory.py

Official configs, random weights (time and memory do not depend on the values). The image is a real LOL-v1 low-light
photo from ../shared (or --image), resized to the size asked for. Each family runs in a fresh process (its own peak
RSS, ru_maxrss), with utils.runtime.keep_freed_memory like the CLIs; a small image is enhanced first (allocator
warm-up), so the numbers are the large image's: seconds of the call, peak RSS of the process, and the RSS before the
call (weights, image, interpreter). A family whose estimated peak exceeds 90% of the memory available is not run
(--force runs it): on a shared machine, running out of memory takes other processes down too.

--calibrate measures, per family, the peak RSS growth of full-frame calls at two sizes and of tiled calls at two tile
sizes on a larger image, and prints the per-pixel slopes (bytes per input pixel, full frame and live maps under
tiles, and bytes per tile pixel) in the form of models/tiling/memory.py's FOOTPRINTS.
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

from bench.families import FLOWS as FAMILIES  # noqa: E402
ENCODER = {"llflow": "ConEncoder1", "gltg": "GLTGRestormer", "zmar": "ZMARRestormer", "upt": "MSFormer"}
GB = 1024 ** 3


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _image(path: str | None, h: int, w: int):
    import cv2
    import numpy as np
    from data.image_io import read_rgb
    if path is None:
        shared = Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared"))
        found = sorted((shared / "data/LOL-v1-mini/our485/low").glob("*.png"))
        if found:
            path = str(found[0])
    if path is not None:
        img = read_rgb(path)
    else:   # no shared folder: a photo shipped with scikit-image, darkened
        from skimage import data as skdata
        img = (skdata.astronaut().astype(np.float32) * 0.15).astype(np.uint8)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)


def _child(args):
    if not args.system_malloc:
        from utils.runtime import keep_freed_memory
        keep_freed_memory()
    import torch
    torch.set_num_threads(args.threads)
    from engine.inference import Enhancer
    from models.build import build_generator
    from models.tiling.memory import estimate_peak_bytes
    from options.options import load_options
    from utils.errors import OptionError
    import numpy as np
    conf, variant = FAMILIES[args.family]
    sets = [f"network_G.variant={variant}"]
    if args.dtype != "fp32":
        sets.append(f"inference.dtype={args.dtype}")
    try:
        opt = load_options(ROOT / conf, sets)
    except OptionError as e:
        raise SystemExit(f"--dtype {args.dtype}: {e} (this checkout has no inference.dtype; use --dtype fp32)")
    model, _ = build_generator(opt, None)
    for m in model.modules():  # a benchmark must not pay for (or depend on) ActNorm's data init
        if hasattr(m, "inited"):
            m.inited = True
    w, h = (int(v) for v in args.size.split("x"))
    img = _image(args.image, h, w)
    enh = Enhancer(model, opt, device="cpu", tile=args.tile, max_memory=args.max_memory)
    enh(img[:64, :64])                                      # warm-up: allocator, kernels of a small size
    hp, wp = (-(-h // enh.multiple) * enh.multiple, -(-w // enh.multiple) * enh.multiple)
    tile = enh.tile_for(hp, wp)
    est = estimate_peak_bytes(model, hp, wp, tile, getattr(enh, "dtype", torch.float32))
    from utils.runtime import available_memory_bytes
    avail = available_memory_bytes()
    if not args.force and est is not None and avail is not None and est > 0.9 * avail:
        # running out of memory on a shared machine would take other people's processes down with this one
        print("SKIPPED " + json.dumps({"family": args.family, "estimate_gb": est / GB, "available_gb": avail / GB,
                                       "tile": tile}))
        return
    before = _rss_bytes()
    t = time.perf_counter()
    out = enh(img)
    dt = time.perf_counter() - t
    assert out.shape == img.shape
    res = {"family": args.family, "size": [h, w], "dtype": args.dtype, "threads": args.threads, "tile": tile,
           "seconds": dt, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
           "rss_before_gb": before / GB, "estimate_gb": None if est is None else est / GB,
           "max_memory_gb": None if enh.max_memory is None else enh.max_memory / GB,
           "malloc": "system" if args.system_malloc else "keep-freed", "finite": bool(np.isfinite(out).all())}
    print("RESULT " + json.dumps(res))


def run_child(args, family: str, size: str, tile: int | None) -> dict | None:
    cmd = [sys.executable, __file__, "--child", "--family", family, "--size", size, "--dtype", args.dtype,
           "--threads", str(args.threads)]
    cmd += ["--tile", str(tile)] if tile is not None else []
    cmd += ["--max-memory", str(args.max_memory)] if args.max_memory is not None else []
    cmd += ["--image", args.image] if args.image else []
    cmd += ["--system-malloc"] if args.system_malloc else []
    cmd += ["--force"] if args.force else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    skipped = next((l for l in r.stdout.splitlines() if l.startswith("SKIPPED ")), None)
    if skipped:
        sk = json.loads(skipped[8:])
        print(f"{family} {size} {args.dtype}: not run: estimated {sk['estimate_gb']:.1f} GB (tiles {sk['tile']}) "
              f"> 90% of the {sk['available_gb']:.1f} GB available (--force runs it anyway)", flush=True)
        return None
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        print(f"{family} {size}: failed (exit {r.returncode})\n{r.stderr[-2000:]}", flush=True)
        return None
    return json.loads(line[7:])


def _report(res: dict):
    tile = f"tiles {res['tile']} px" if res["tile"] else "full frame"
    est = f", estimated {res['estimate_gb']:.1f} GB" if res["estimate_gb"] is not None else ""
    limit = f", max_memory {res['max_memory_gb']:.1f} GB" if res["max_memory_gb"] is not None else ""
    print(f"{res['family']:7s} {res['size'][1]}x{res['size'][0]} {res['dtype']}: {res['seconds']:.1f} s, peak RSS "
          f"{res['peak_rss_gb']:.2f} GB (before the call {res['rss_before_gb']:.2f} GB; {tile}{est}{limit}; "
          f"{res['threads']} threads, {res['malloc']} malloc, output finite: {res['finite']})", flush=True)


def calibrate(args, family: str):
    """Footprint of one family from four runs (see the module docstring)."""
    def growth(size, tile):
        res = run_child(args, family, size, tile)
        if res is None:
            return None
        _report(res)
        h, w = res["size"]
        return (res["peak_rss_gb"] - res["rss_before_gb"]) * GB, h * w

    a, b = growth(args.cal_small, 0), growth(args.cal_mid, 0)
    t1, t2 = args.cal_tiles
    c, d = growth(args.cal_large, t1), growth(args.cal_large, t2)
    if None in (a, b, c, d):
        return
    full = (b[0] - a[0]) / (b[1] - a[1])
    per_tile = max(0.0, (d[0] - c[0]) / (t2 * t2 - t1 * t1))
    live = (c[0] - per_tile * t1 * t1) / c[1]
    print(f'    "{ENCODER[family]}": Footprint(full={full:.0f}, live={live:.0f}, per_tile={per_tile:.0f}, '
          f'width=...),   # {args.dtype}, {args.threads} threads', flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--size", default="3840x2160", help="WxH")
    ap.add_argument("--dtype", default="fp32", help="fp32, or bf16 where the checkout has inference.dtype")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, help="layer-wise tile size (default: automatic by max_memory; 0: none)")
    ap.add_argument("--max-memory", type=float, help="GB (default: inference.max_memory, i.e. automatic)")
    ap.add_argument("--image", help="image to resize (default: a LOL-v1 low-light photo from ../shared)")
    ap.add_argument("--system-malloc", action="store_true")
    ap.add_argument("--force", action="store_true", help="run even when the estimate exceeds the available memory")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--cal-small", default="384x256", help=argparse.SUPPRESS)
    ap.add_argument("--cal-mid", default="576x384", help=argparse.SUPPRESS)
    ap.add_argument("--cal-large", default="1152x768", help=argparse.SUPPRESS)
    ap.add_argument("--cal-tiles", type=int, nargs=2, default=(128, 256), help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--family", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    for family in args.families.split(","):
        if family not in FAMILIES:
            raise SystemExit(f"--families: unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        if args.calibrate:
            calibrate(args, family)
        else:
            res = run_child(args, family, args.size, args.tile)
            if res is not None:
                _report(res)


if __name__ == "__main__":
    main()
