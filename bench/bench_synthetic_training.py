"""Does training on synthetic pairs help? The same small model trained on real, synthetic and mixed pairs.

python bench/bench_synthetic_training.py --data DIR [--fit 30] [--steps 300] [--conf confs/LLFlow/demo_tiny.yml]
                                         [--physics-conf confs/synthesis/physics_LOL.yml] [--ratio 0.5]
                                         [--batch B] [--crop C] [--test-crop H W] [--setups real,synthetic,mix]
                                         [--work DIR] [--json OUT.json]

DIR holds low/ and high/ (LOL layout, e.g. LOL-v1-mini/our485). In natural-sort order, the first --fit pairs are the
training set (the pairs the physics ranges were fitted on) and the rest are the test set. Each setup trains the
config's model (same structure, seed and steps; no validation, the final checkpoint is tested) on:
- real:      the training pairs (PairedFolder);
- synthetic: the training set's normal images only, low images drawn on the fly by the physics model (Synthetic);
- mix:       Synthetic over the same normal images mixed with the real pairs, --ratio of the samples synthetic;
then test.py measures it on the real test pairs (PSNR uint8, SSIM skimage_rgb, no GT-mean). Every step is a
separate process (train.py, test.py), so the numbers are what the CLIs produce.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.base_dataset import pair_files  # noqa: E402
from data.image_io import list_images, read_rgb, write_rgb  # noqa: E402


def link_split(pairs, dst: Path, crop=None):
    """dst/{low,high}: links to the pairs, or the same centre crop (h, w) of both images of each pair."""
    for sub in ("low", "high"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for lo, hi in pairs:
        if crop is None:
            os.symlink(lo.resolve(), dst / "low" / lo.name)
            os.symlink(hi.resolve(), dst / "high" / hi.name)
            continue
        for src, sub in ((lo, "low"), (hi, "high")):
            img = read_rgb(src)
            y, x = (img.shape[0] - crop[0]) // 2, (img.shape[1] - crop[1]) // 2
            write_rgb(dst / sub / f"{src.stem}.png", img[y:y + crop[0], x:x + crop[1]])


def make_config(base: dict, setup: str, args, work: Path) -> dict:
    cfg = json.loads(json.dumps(base))  # deep copy of plain YAML data
    cfg["name"] = f"synthbench_{setup}"
    cfg["use_tb_logger"] = False
    cfg["path"] = {**cfg.get("path", {}), "experiments_root": str(work / "experiments"),
                   "results_root": str(work / "results"), "resume_state": None}
    train = {k: v for k, v in cfg["datasets"]["train"].items() if k not in ("dataset", "root")}
    real = {"dataset": "PairedFolder", "dataroot_LQ": str(work / "train" / "low"),
            "dataroot_GT": str(work / "train" / "high")}
    if setup == "real":
        train.update(real)
    else:
        train.update({"dataset": "Synthetic", "dataroot_GT": str(work / "train" / "high"),
                      "synthesis": str(Path(args.physics_conf).resolve())})
        if setup == "mix":
            train.update({"real": real, "synthetic_ratio": args.ratio})
    cfg["datasets"] = {"train": train}
    cfg["dataset"] = train["dataset"]
    if args.batch:
        train["batch_size"] = args.batch
    if args.crop:
        train["GT_size"] = args.crop
    cfg["train"] = {**cfg["train"], "niter": args.steps, "val_freq": None}
    cfg["logger"] = {**cfg.get("logger", {}), "save_checkpoint_freq": args.steps,
                     "print_freq": max(1, args.steps // 4)}
    cfg["dataroot_LR"], cfg["dataroot_GT"] = str(work / "test" / "low"), str(work / "test" / "high")
    cfg["model_path"] = str(work / "experiments" / cfg["name"] / "models" / f"{args.steps}_G.pth")
    return cfg


def run(cmd, log: Path, threads: int):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}); see {log}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with low/ and high/")
    ap.add_argument("--fit", type=int, default=30, help="the first N pairs train, the rest test (default 30)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--conf", default=str(ROOT / "confs" / "LLFlow" / "demo_tiny.yml"))
    ap.add_argument("--physics-conf", default=str(ROOT / "confs" / "synthesis" / "physics_LOL.yml"))
    ap.add_argument("--batch", type=int, help="training batch size (default: the config's)")
    ap.add_argument("--crop", type=int, help="training crop size GT_size (default: the config's)")
    ap.add_argument("--test-crop", type=int, nargs=2, metavar=("H", "W"),
                    help="test on this centre crop of each test pair (default: whole images)")
    ap.add_argument("--ratio", type=float, default=0.5, help="synthetic share of the mix (default 0.5)")
    ap.add_argument("--setups", default="real,synthetic,mix")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS of each run (default 1: on a shared 2-core machine two threads per "
                         "process oversubscribe it, and a step took ~10 s instead of ~1 s)")
    ap.add_argument("--work", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    d = Path(args.data)
    pairs = pair_files(list_images(d / "low"), list_images(d / "high"), lambda p: p.stem, d / "low", d / "high")
    train_pairs, test_pairs = pairs[:args.fit], pairs[args.fit:]
    base = yaml.safe_load(Path(args.conf).read_text())
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="synthbench_")
    work = Path(args.work or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "train").exists():
        link_split(train_pairs, work / "train")
        link_split(test_pairs, work / "test", args.test_crop)
    print(f"train: {len(train_pairs)} pairs ({train_pairs[0][0].stem} .. {train_pairs[-1][0].stem}); test: "
          f"{len(test_pairs)} real pairs ({test_pairs[0][0].stem} .. {test_pairs[-1][0].stem})"
          f"{' centre-cropped to %dx%d' % tuple(args.test_crop) if args.test_crop else ''}; {args.steps} steps; "
          f"work folder {work}")
    results = {}
    for setup in args.setups.split(","):
        cfg = make_config(base, setup, args, work)
        conf = work / f"{setup}.yml"
        conf.write_text(yaml.safe_dump(cfg, sort_keys=False))
        t0 = time.perf_counter()
        run([sys.executable, "train.py", "--opt", str(conf)], work / f"{setup}_train.log", args.threads)
        t1 = time.perf_counter()
        out = work / "results" / setup
        run([sys.executable, "test.py", "--opt", str(conf), "--out", str(out)], work / f"{setup}_test.log",
            args.threads)
        m = json.loads((out / "metrics.json").read_text())
        results[setup] = {"psnr": m["psnr"], "ssim": m["ssim"], "train_s": t1 - t0,
                          "test_s": time.perf_counter() - t1}
        print(f"{setup:<10} PSNR {m['psnr']:.3f} dB  SSIM {m['ssim']:.4f}  (train {t1 - t0:.0f} s, "
              f"test {results[setup]['test_s']:.0f} s)", flush=True)
    print(f"\n{'train data':<12} {'PSNR (dB)':>10} {'SSIM':>8} {'train s':>8}   test: {len(test_pairs)} real "
          f"held-out pairs, uint8 PSNR, skimage_rgb SSIM, no GT-mean")
    for k, r in results.items():
        print(f"{k:<12} {r['psnr']:10.3f} {r['ssim']:8.4f} {r['train_s']:8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "ratio": args.ratio, **results}, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
