"""How close are synthesised low-light images to real ones? Fidelity on held-out real pairs.

python bench/bench_synthesis.py --data DIR [--fit 30] [--physics-conf confs/synthesis/physics_LOL.yml]
                                [--seeds 0 1 2 3 4] [--lpips-backbone ALEXNET.pth]
                                [--n2ldiff-model CKPT --n2ldiff-opt CONF] [--json OUT.json]

DIR holds low/ and high/ (LOL layout, e.g. LOL-v1-mini/our485). Pairs are taken in natural-sort order: the first
--fit pairs are the fitting set (what confs/synthesis/physics_LOL.yml was fitted on), the rest are held out. For every
held-out pair each method turns the normal image into a low one, compared with the real low image:
- physics: the synthesis YAML, one run per seed (per-image generators as in python tools/synthesize.py);
- gain: a noise-free per-channel linear-light gain, least-squares fitted on the fitting pairs pooled;
- n2ldiff: a trained N2LDiff checkpoint through python tools/synthesize.py --method n2ldiff (when given).
Reported: PSNR (uint8 RGB), SSIM (skimage_rgb), LPIPS-alex against the real low image, mean brightness, and the
noise level: the standard deviation of the low image among pixels sharing one normal-light value (per channel, in
linear light, no quantisation correction), averaged in bins of low intensity. Pixel metrics reward predicting the
mean: a noise-free method can score a higher PSNR than one with the right noise, which is why the noise table matters.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (the CLIs' OMP_WAIT_POLICY default, inherited by the synthesis process)
from data.base_dataset import pair_files  # noqa: E402
from data.image_io import list_images, read_rgb  # noqa: E402
from data.synthesis.fit_physics import noise_groups, ratio_sums  # noqa: E402
from data.synthesis.physics import load_physics_config, synthesize  # noqa: E402
from data.synthesis.srgb import decode_uint8, encode_uint8  # noqa: E402
from data.synthesize import image_rng  # noqa: E402
from utils import metrics  # noqa: E402

BIN_EDGES = [0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 1.0]  # linear low intensity


def noise_by_bin(pairs_lo_hi) -> list[float | None]:
    """Noise standard deviation (linear x 1e3) per intensity bin, over (low, high) pairs pooled."""
    ms, vs, ns = [], [], []
    for low, high in pairs_lo_hi:
        m, v, n = noise_groups(low, high, min_count=20, max_clipped=1.0, subtract_quantisation=False)
        ms.append(m), vs.append(v), ns.append(n)
    m, v, n = np.concatenate(ms), np.concatenate(vs), np.concatenate(ns)
    out = []
    for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        sel = (m >= lo) & (m < hi)
        out.append(float(np.sqrt(max((v[sel] * n[sel]).sum() / n[sel].sum(), 0.0)) * 1e3) if sel.any() else None)
    return out


def score(made: list[np.ndarray], real: list[np.ndarray], highs: list[np.ndarray], lpips) -> dict:
    r = {"psnr": float(np.mean([metrics.psnr(a, b) for a, b in zip(made, real)])),
         "ssim": float(np.mean([metrics.ssim(a, b, "skimage_rgb") for a, b in zip(made, real)])),
         "lpips": float(np.mean([lpips(a, b) for a, b in zip(made, real)])) if lpips else None,
         "brightness": float(np.mean([a.mean() for a in made])),
         "noise": noise_by_bin(zip(made, highs))}
    return r


def run_n2ldiff(args, held, tmp: Path) -> list[np.ndarray]:
    inp, out = tmp / "n2ldiff_in", tmp / "n2ldiff_out"
    inp.mkdir()
    for _, hi in held:
        shutil.copy(hi, inp / hi.name)
    cmd = [sys.executable, "tools/synthesize.py", "--method", "n2ldiff", "--input", str(inp), "--out", str(out),
           "--model_path", args.n2ldiff_model, "--opt", args.n2ldiff_opt, "--seed", "0"]
    if args.n2ldiff_steps:
        cmd += ["--steps", str(args.n2ldiff_steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return [read_rgb(out / f"{hi.stem}.png") for _, hi in held]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with low/ and high/")
    ap.add_argument("--fit", type=int, default=30, help="the first N pairs are the fitting set (default 30)")
    ap.add_argument("--physics-conf", default=str(ROOT / "confs" / "synthesis" / "physics_LOL.yml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--lpips-backbone", help="AlexNet features .pth for offline LPIPS")
    ap.add_argument("--n2ldiff-model", help="trained N2LDiff checkpoint (adds the n2ldiff row)")
    ap.add_argument("--n2ldiff-opt", help="N2LDiff config for --n2ldiff-model")
    ap.add_argument("--n2ldiff-steps", type=int)
    ap.add_argument("--threads", type=int, help="CPU threads of the N2LDiff synthesis (default: torch's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    d = Path(args.data)
    pairs = pair_files(list_images(d / "low"), list_images(d / "high"), lambda p: p.stem, d / "low", d / "high")
    fit, held = pairs[:args.fit], pairs[args.fit:]
    if not held:
        raise SystemExit(f"--fit {args.fit} leaves no held-out pairs of {len(pairs)}")
    print(f"{len(fit)} fitting pairs ({fit[0][0].stem} .. {fit[-1][0].stem}), {len(held)} held out "
          f"({held[0][0].stem} .. {held[-1][0].stem})")
    real = [read_rgb(lo) for lo, _ in held]
    highs = [read_rgb(hi) for _, hi in held]
    try:
        lpips = metrics.get_lpips_metric(args.lpips_backbone)
    except metrics.LPIPSUnavailable as e:
        print(f"LPIPS unavailable: {e}")
        lpips = None

    results = {"real": {"brightness": float(np.mean([a.mean() for a in real])),
                        "noise": noise_by_bin(zip(real, highs))}}
    num, den = np.zeros(3), np.zeros(3)
    for lo, hi in fit:
        n_, d_ = ratio_sums(read_rgb(lo), read_rgb(hi))
        num, den = num + n_, den + d_
    gain = (num / den).astype(np.float32)
    print(f"global gain (linear, r g b): {' '.join(f'{g:.4f}' for g in gain)}")
    results["gain"] = score([encode_uint8(decode_uint8(h) * gain) for h in highs], real, highs, lpips)

    cfg = load_physics_config(args.physics_conf)
    per_seed = []
    for s in args.seeds:
        made = []
        for (_, hi), h in zip(held, highs):
            rng = image_rng(s, hi.stem)
            made.append(synthesize(h, cfg.sample(rng), rng))
        per_seed.append(score(made, real, highs, lpips))
    results["physics"] = {k: (float(np.mean([r[k] for r in per_seed])) if k != "noise" and per_seed[0][k] is not None
                              else None) for k in ("psnr", "ssim", "lpips", "brightness")}
    results["physics"]["std_over_seeds"] = {k: float(np.std([r[k] for r in per_seed]))
                                            for k in ("psnr", "ssim", "lpips") if per_seed[0][k] is not None}
    results["physics"]["noise"] = [None if per_seed[0]["noise"][b] is None else
                                   float(np.mean([r["noise"][b] for r in per_seed])) for b in range(len(BIN_EDGES) - 1)]
    results["physics"]["seeds"] = args.seeds

    if args.n2ldiff_model:
        if not args.n2ldiff_opt:
            raise SystemExit("--n2ldiff-model needs --n2ldiff-opt")
        with tempfile.TemporaryDirectory() as tmp:
            results["n2ldiff"] = score(run_n2ldiff(args, held, Path(tmp)), real, highs, lpips)

    def f(v, fmt):
        return format(v, fmt) if v is not None else "n/a"
    print(f"\nfidelity to the real low image, {len(held)} held-out pairs (physics: mean over seeds "
          f"{' '.join(map(str, args.seeds))}, +- std)")
    print(f"{'method':<10} {'PSNR':>14} {'SSIM':>16} {'LPIPS':>16} {'brightness':>10}")
    for name, r in results.items():
        if name == "real":
            print(f"{'real':<10} {'':>14} {'':>16} {'':>16} {r['brightness']:10.2f}")
            continue
        sd = r.get("std_over_seeds", {})
        pm = {k: (f" +-{sd[k]:.{p}f}" if k in sd else "") for k, p in (("psnr", 2), ("ssim", 3), ("lpips", 3))}
        print(f"{name:<10} {f(r['psnr'], '.2f') + pm['psnr']:>14} {f(r['ssim'], '.4f') + pm['ssim']:>16} "
              f"{f(r['lpips'], '.4f') + pm['lpips']:>16} {r['brightness']:10.2f}")
    print("\nnoise std (linear x 1e3) among pixels with the same normal-light value, by low intensity (linear)")
    heads = [f"{lo:g}-{hi:g}" for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:])]
    print(f"{'method':<10} " + " ".join(f"{h:>11}" for h in heads))
    for name, r in results.items():
        print(f"{name:<10} " + " ".join(f"{f(v, '.3f'):>11}" for v in r["noise"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"gain_rgb": gain.tolist(), **results}, indent=1))


if __name__ == "__main__":
    main()
