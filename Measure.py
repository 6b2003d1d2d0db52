#!/usr/bin/env python
"""Measure PSNR / SSIM / LPIPS of a folder of predictions against a folder of references.

    python Measure.py --gt DIR --pred DIR [--ssim skimage_rgb|matlab_rgb|gray|gray_percolumn] [--psnr uint8|float]
                      [--gt-mean [llflow|plain]] [--quantisation truncate|round]
                      [--lpips] [--lpips-backbone PATH] [--device cpu] [--csv FILE] [--json FILE] [--no-progress]

A thin command line over ``utils/metrics.py``; every number is printed and stored with ``Protocol.describe()``.

File matching (unlike the official scripts, which zip two sorted listings by position): files are matched by name
stem (``1.png`` in --gt <-> ``1.png`` or ``1.jpg`` in --pred).
  * a reference without a prediction is an ERROR that lists the missing names (nothing is measured);
  * a prediction without a reference is a WARNING naming it; it is ignored;
  * two files with the same stem in one folder, a size mismatch, or an unreadable / 16-bit / transparent image is an
    ERROR naming the file(s). Exit status 2 on any error, 0 on success.

Default protocol: PSNR uint8 RGB, SSIM ``skimage_rgb``, no GT-mean, LPIPS only with --lpips.
Why (the issue requires LOL-v1 eval15 low-vs-normal to give the published 7.773 dB / 0.1914 with the defaults):
  * GT-mean must be off: with it, low-vs-normal on the 41 shared our485 pairs rises from 7.99 dB to 18.2 dB.
  * PSNR uint8 and float are identical for two 8-bit files, so the PSNR mode does not matter for that check.
  * SSIM, low vs high on the 41 shared our485 pairs (eval15 is not available here): skimage_rgb 0.1923,
    matlab_rgb 0.1955, gray 0.1988, gray_percolumn 0.2102 (PSNR 7.988 dB). The offsets are systematic
    (skimage_rgb is the lowest of the four on 37 to 41 of the 41 pairs, depending on the protocol compared, and the
    nearest to 0.1914), but they (0.003 to 0.018) are smaller than the image-to-image spread (std 0.18), so the level
    on a different 15-image set cannot single one protocol out. The deciding argument is provenance (not checkable
    here without eval15): the low-vs-normal row (7.77 / 0.191, LPIPS 0.560) is quoted in flow-based LLIE tables,
    whose Measure.py computed RGB SSIM with skimage's defaults (LLFlow's default until 2022-02-16; GLTG-AFlow's and
    UPT-Flow's default), and LLIE tables report RGB SSIM. Other protocols are one flag away, and every number is
    printed with its protocol.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.devices import pick_device  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.paths import prepare_file  # noqa: E402
from utils.metrics import (GT_MEAN_MODES, PSNR_MODES, QUANTISATIONS, SSIM_PROTOCOLS, LPIPSMetric,  # noqa: E402
                           LPIPSUnavailable, MetricAggregator, Protocol, evaluate_pair, size_problem)

try:  # the project's reader (grayscale -> 3 channels, opaque RGBA -> RGB, 16-bit/transparent -> ImageError)
    from data.image_io import IMAGE_EXTENSIONS, ImageError, read_rgb
except ImportError:  # pragma: no cover - only when the data package is absent
    import cv2
    import numpy as np

    IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

    class ImageError(ValueError):
        pass

    def read_rgb(path):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ImageError(f"{path}: cannot read image")
        if img.dtype != np.uint8:
            raise ImageError(f"{path}: {img.dtype} image; only 8-bit images are accepted")
        if img.ndim != 3 or img.shape[2] != 3:
            raise ImageError(f"{path}: expected a 3-channel colour image, got shape {img.shape}")
        return np.ascontiguousarray(img[:, :, ::-1])


class MeasureError(UserError):
    """A user-facing error (missing files, size mismatch, bad folder); the message names the files."""


def _list_by_stem(folder: Path, role: str) -> Dict[str, Path]:
    if not folder.is_dir():
        raise MeasureError(f"{role} folder {folder} does not exist")
    files: Dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
            if f.stem in files:
                raise MeasureError(f"{role} folder has two files with the stem '{f.stem}': {files[f.stem].name} and "
                                   f"{f.name}; cannot tell which one to use")
            files[f.stem] = f
    if not files:
        raise MeasureError(f"{role} folder {folder} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _name_list(names: List[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def match_files(gt_dir, pred_dir) -> Tuple[List[Tuple[str, Path, Path]], List[str]]:
    """Pair references and predictions by stem. Returns ([(gt file name, gt path, pred path)], [extra pred names]);
    raises MeasureError listing every reference that has no prediction."""
    from natsort import natsorted

    gt = _list_by_stem(Path(gt_dir), "--gt")
    pred = _list_by_stem(Path(pred_dir), "--pred")
    missing = natsorted(gt[s].name for s in gt if s not in pred)
    if missing:
        raise MeasureError(f"{len(missing)} of {len(gt)} reference image(s) have no prediction in {pred_dir}: "
                           f"{_name_list(missing)}")
    extra = natsorted(pred[s].name for s in pred if s not in gt)
    pairs = [(gt[s].name, gt[s], pred[s]) for s in natsorted(gt)]
    return pairs, extra


def measure_dirs(gt_dir, pred_dir, protocol: Protocol, lpips_backbone: Optional[str] = None, device: str = "cpu",
                 progress: bool = True, log=print) -> Tuple[MetricAggregator, dict]:
    """Evaluate every matched pair. Returns (aggregator with per-image rows, JSON-ready summary)."""
    pairs, extra = match_files(gt_dir, pred_dir)
    if extra:
        log(f"warning: {len(extra)} prediction(s) without a reference in {gt_dir} are ignored: {_name_list(extra)}")

    metric, reason = None, None
    if protocol.lpips:
        try:
            metric = LPIPSMetric(lpips_backbone, device)
        except LPIPSUnavailable as e:
            reason = str(e)
            log(f"warning: LPIPS unavailable ({reason}); PSNR and SSIM are still measured")
    run_protocol = protocol if metric is not None else dataclasses.replace(protocol, lpips=False)

    from tqdm import tqdm

    agg = MetricAggregator(protocol)
    for name, gt_path, pred_path in tqdm(pairs, desc="Measure", unit="img", disable=not progress, file=sys.stderr):
        try:
            gt_img = read_rgb(gt_path)
            pred_img = read_rgb(pred_path)
        except ImageError as e:
            raise MeasureError(str(e)) from None
        if gt_img.shape != pred_img.shape:
            raise MeasureError(f"size mismatch: reference {gt_path} is {gt_img.shape[1]}x{gt_img.shape[0]} but "
                               f"prediction {pred_path} is {pred_img.shape[1]}x{pred_img.shape[0]} (WxH)")
        problem = size_problem(gt_img.shape, run_protocol)
        if problem:
            raise MeasureError(f"{gt_path}: {problem}")
        agg.add(name, evaluate_pair(pred_img, gt_img, run_protocol, lpips_metric=metric))

    summary = agg.summary(lpips_unavailable_reason=reason)
    summary["gt_dir"] = str(gt_dir)
    summary["pred_dir"] = str(pred_dir)
    summary["ignored_predictions"] = extra
    return agg, summary


def _finite_or_str(v):
    """JSON has no inf/nan: write them as the strings 'inf' / '-inf' / 'nan'."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite_or_str(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_str(x) for x in v]
    return v


def write_json(path, summary: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_finite_or_str(summary), f, indent=2, allow_nan=False)
        f.write("\n")


def write_csv(path, agg: MetricAggregator) -> None:
    """'# protocol: ...' comment line, then header name,psnr,ssim,lpips and one row per image (lpips empty if none)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(f"# protocol: {agg.protocol.describe()}\n")
        w = csv.writer(f)
        w.writerow(["name", "psnr", "ssim", "lpips"])
        for r in agg.rows:
            w.writerow([r["name"]] + ["" if r[k] is None else repr(float(r[k])) for k in ("psnr", "ssim", "lpips")])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="Measure.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="folder of reference (normal-light) images")
    p.add_argument("--pred", required=True, help="folder of predictions, matched to --gt by file-name stem")
    p.add_argument("--ssim", default="skimage_rgb", choices=SSIM_PROTOCOLS, help="SSIM protocol (default skimage_rgb)")
    p.add_argument("--psnr", default="uint8", choices=PSNR_MODES, help="PSNR on uint8 (peak 255) or float (peak 1)")
    p.add_argument("--gt-mean", nargs="?", const="llflow", default="none", choices=GT_MEAN_MODES,
                   help="GT-mean brightness correction of the prediction; a bare --gt-mean means 'llflow' "
                        "(LLFlow test.py's exact formula); 'plain' = RGB-mean ratio. Default none")
    p.add_argument("--quantisation", default="truncate", choices=QUANTISATIONS,
                   help="how a GT-mean corrected prediction is turned back into uint8 (official scripts truncate)")
    p.add_argument("--lpips", action="store_true", help="also compute LPIPS (AlexNet, v0.1)")
    p.add_argument("--lpips-backbone", metavar="PATH", default=None,
                   help="AlexNet features.* weights for LPIPS (implies --lpips); else $LPIPS_ALEXNET, else the "
                        "torchvision cache. Never downloads")
    p.add_argument("--device", default="cpu", help="torch device for LPIPS (default cpu, as the official code)")
    p.add_argument("--csv", metavar="FILE", help="per-image CSV (name, psnr, ssim, lpips) with a protocol comment line")
    p.add_argument("--json", metavar="FILE", help="JSON with the means, count, protocol and per-image rows")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    protocol = Protocol(psnr=args.psnr, ssim=args.ssim, gt_mean=args.gt_mean, quantisation=args.quantisation,
                        lpips=bool(args.lpips or args.lpips_backbone))
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    for key in ("csv", "json"):  # before measuring: a bad output path should not cost the whole run
        if getattr(args, key):
            prepare_file(getattr(args, key), f"--{key}")
    device = str(pick_device(args.device)) if protocol.lpips else args.device
    agg, summary = measure_dirs(args.gt, args.pred, protocol, lpips_backbone=args.lpips_backbone,
                                device=device, progress=not args.no_progress, log=log)
    if args.csv:
        write_csv(args.csv, agg)
    if args.json:
        write_json(args.json, summary)
    print(agg.format_means())
    if summary.get("lpips") is None and protocol.lpips:
        print(f"LPIPS unavailable: {summary['lpips_unavailable_reason']}")
    return 0


if __name__ == "__main__":
    from utils.cli import run_cli

    run_cli(main)
