#!/usr/bin/env python
"""Measure PSNR / SSIM / LPIPS (and no-reference NIQE) of folders of predictions against a folder of references.

    python Measure.py --gt DIR --pred DIR [--pred DIR2 ...] [--label A --label B ...]
                      [--ssim skimage_rgb|matlab_rgb|gray|gray_percolumn] [--psnr uint8|float]
                      [--gt-mean [llflow|plain]] [--quantisation truncate|round] [--crop-border N]
                      [--lpips] [--lpips-backbone PATH] [--device cpu] [--no-ref niqe] [--threads N]
                      [--csv FILE] [--json FILE] [--html FILE [--input LOWDIR] [--inline-images]] [--no-progress]
    python Measure.py --pred DIR --no-ref niqe            # no reference: NIQE only

Several --pred folders (methods) are measured one after another with the same protocol. Labels come from --label
(one per --pred, in order) or default to the folder names. With one --pred, --csv/--json are written to exactly the
given paths (unchanged behaviour); with several, each method gets its own files, the label inserted before the
suffix: ``--csv m.csv`` -> ``m_<label>.csv`` (characters other than letters, digits, ``.``, ``-``, ``_`` become
``_``). --html writes one self-contained comparison page (utils/report_html.py).

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
import dataclasses
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import utils.threads  # noqa: E402,F401  (first: OMP_WAIT_POLICY must be set before torch loads OpenMP)
from utils.cli import call_cli, in_range  # noqa: E402
from utils.threads import add_threads_arg, set_threads  # noqa: E402
from utils.devices import pick_device  # noqa: E402
from utils.paths import check_output_plan, prepare_file  # noqa: E402
from utils.reports import write_csv, write_json  # noqa: E402
from utils.metrics import (GT_MEAN_MODES, NO_REF_METRICS, PSNR_MODES, QUANTISATIONS, SSIM_PROTOCOLS,  # noqa: E402
                           LPIPSMetric, LPIPSUnavailable, MetricAggregator, Protocol, evaluate_pair, size_problem)

from data.image_io import list_images, read_rgb  # noqa: E402
from utils.errors import ImageError, PairingError, UserError  # noqa: E402
from utils.pairing import index_by, pair_by_key, short_list  # noqa: E402


class MeasureError(UserError):
    """A user-facing error (missing files, size mismatch, bad folder); the message names the files."""


def _images(folder: Path, role: str) -> List[Path]:
    if not folder.is_dir():
        raise MeasureError(f"{role} folder {folder} does not exist")
    files = list_images(folder)
    if not files:
        raise MeasureError(f"{role} folder {folder} contains no images")
    return files


def _list_by_stem(folder: Path, role: str) -> Dict[str, Path]:
    try:
        return index_by(_images(folder, role), where=f"{role} folder {folder}")
    except PairingError as e:
        raise MeasureError(str(e)) from None


def match_files(gt_dir, pred_dir) -> Tuple[List[Tuple[str, Optional[Path], Path]], List[str]]:
    """Pair references and predictions by stem (utils/pairing.py, as every script does). Returns
    ([(gt file name, gt path, pred path)], [extra pred names]); a reference without a prediction is an error
    listing them. Without a reference folder (``gt_dir`` None) every prediction is listed as (name, None, path)."""
    preds = _images(Path(pred_dir), "--pred")
    if gt_dir is None:
        index_by(preds, where=f"--pred folder {pred_dir}")
        return [(p.name, None, p) for p in preds], []
    try:
        pairs, extra = pair_by_key(_images(Path(gt_dir), "--gt"), preds, primary_dir=f"--gt {gt_dir}",
                                   secondary_dir=f"--pred {pred_dir}", extra="return",
                                   what=("reference", "prediction"))
    except PairingError as e:
        raise MeasureError(str(e)) from None
    return [(g.name, g, p) for g, p in pairs], [e.name for e in extra]


def _open_lpips(protocol: Protocol, lpips_backbone, device, log):
    if not (protocol.full_ref and protocol.lpips):
        return None, None
    try:
        return LPIPSMetric(lpips_backbone, device), None
    except LPIPSUnavailable as e:
        log(f"warning: LPIPS unavailable ({e}); PSNR and SSIM are still measured")
        return None, str(e)


def measure_dirs(gt_dir, pred_dir, protocol: Protocol, lpips_backbone: Optional[str] = None, device: str = "cpu",
                 progress: bool = True, log=print, lpips=None, pairs=None) -> Tuple[MetricAggregator, dict]:
    """Evaluate every matched pair (``gt_dir`` None: no-reference metrics of every prediction). Returns
    (aggregator with per-image rows, JSON-ready summary). ``lpips`` = (metric, unavailable reason) reuses an
    opened LPIPS network; ``pairs`` = a ready ``match_files`` result."""
    if gt_dir is None and protocol.full_ref:
        raise MeasureError("--gt is required unless only no-reference metrics are asked for (--no-ref niqe)")
    pairs, extra = pairs if pairs is not None else match_files(gt_dir, pred_dir)
    if extra:
        log(f"warning: {len(extra)} prediction(s) without a reference in {gt_dir} are ignored: {short_list(extra)}")

    metric, reason = lpips if lpips is not None else _open_lpips(protocol, lpips_backbone, device, log)
    run_protocol = protocol if metric is not None else dataclasses.replace(protocol, lpips=False)

    from tqdm import tqdm

    agg = MetricAggregator(protocol)
    for name, gt_path, pred_path in tqdm(pairs, desc="Measure", unit="img", disable=not progress, file=sys.stderr):
        try:
            gt_img = read_rgb(gt_path) if gt_path is not None else None
            pred_img = read_rgb(pred_path)
        except ImageError as e:
            raise MeasureError(str(e)) from None
        if gt_img is not None and gt_img.shape != pred_img.shape:
            raise MeasureError(f"size mismatch: reference {gt_path} is {gt_img.shape[1]}x{gt_img.shape[0]} but "
                               f"prediction {pred_path} is {pred_img.shape[1]}x{pred_img.shape[0]} (WxH)")
        problem = size_problem(gt_img.shape if gt_img is not None else pred_img.shape, run_protocol)
        if problem:
            raise MeasureError(f"{gt_path if gt_img is not None else pred_path}: {problem}")
        try:
            res = evaluate_pair(pred_img, gt_img if protocol.full_ref else None, run_protocol, lpips_metric=metric)
        except ValueError as e:  # crop border larger than the image, image too small for NIQE
            raise MeasureError(f"{pred_path}: {e}") from None
        agg.add(name, res)

    summary = agg.summary(lpips_unavailable_reason=reason)
    summary["gt_dir"] = None if gt_dir is None else str(gt_dir)
    summary["pred_dir"] = str(pred_dir)
    summary["ignored_predictions"] = extra
    return agg, summary


def method_labels(preds: List[str], labels: Optional[List[str]]) -> List[str]:
    """One label per --pred: the given ones (count must match) or the folder names; duplicates are an error."""
    if labels:
        if len(labels) != len(preds):
            raise MeasureError(f"got {len(preds)} --pred folder(s) but {len(labels)} --label(s); give one --label "
                               f"per --pred, in the same order, or none (labels are then the folder names)")
        out = list(labels)
    else:
        out = [Path(p).resolve().name or str(p) for p in preds]
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise MeasureError(f"two methods share the label {', '.join(repr(d) for d in dup)}; give distinct --label "
                           f"values")
    return out


def per_method_path(path, label: str) -> Path:
    """``m.csv`` + label ``A b`` -> ``m_A_b.csv``: the file of one method when several are measured."""
    p = Path(path)
    return p.with_name(f"{p.stem}_{re.sub(r'[^A-Za-z0-9._-]', '_', label)}{p.suffix}")


def output_files(args, labels: List[str]) -> List[Tuple[str, Optional[str], Path]]:
    """(flag, method label or None, path) of every file the command writes: one CSV/JSON per method when several."""
    several = len(labels) > 1
    files = []
    for key in ("csv", "json"):
        if getattr(args, key, None):
            files += ([(key, label, per_method_path(getattr(args, key), label)) for label in labels] if several
                      else [(key, None, Path(getattr(args, key)))])
    if args.html:
        files.append(("html", None, Path(args.html)))
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="Measure.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", help="folder of reference (normal-light) images (optional with --no-ref only)")
    p.add_argument("--pred", required=True, action="append",
                   help="folder of predictions, matched to --gt by file-name stem; repeat it to compare methods")
    p.add_argument("--label", action="append", help="name of the method of each --pred, in order "
                                                    "(default: the folder names)")
    p.add_argument("--ssim", default="skimage_rgb", choices=SSIM_PROTOCOLS, help="SSIM protocol (default skimage_rgb)")
    p.add_argument("--psnr", default="uint8", choices=PSNR_MODES, help="PSNR on uint8 (peak 255) or float (peak 1)")
    p.add_argument("--gt-mean", nargs="?", const="llflow", default="none", choices=GT_MEAN_MODES,
                   help="GT-mean brightness correction of the prediction; a bare --gt-mean means 'llflow' "
                        "(LLFlow test.py's exact formula); 'plain' = RGB-mean ratio. Default none")
    p.add_argument("--quantisation", default="truncate", choices=QUANTISATIONS,
                   help="how a GT-mean corrected prediction is turned back into uint8 (official scripts truncate)")
    p.add_argument("--crop-border", type=int, default=0, metavar="N", action=in_range(0),
                   help="shave N pixels from every side of prediction and reference before every metric "
                        "(DRBN's protocol: 10). Default 0; written into the protocol line")
    p.add_argument("--lpips", action="store_true", help="also compute LPIPS (AlexNet, v0.1)")
    p.add_argument("--lpips-backbone", metavar="PATH", default=None,
                   help="AlexNet features.* weights for LPIPS (implies --lpips); else $LPIPS_ALEXNET, else the "
                        "torchvision cache. Never downloads")
    p.add_argument("--device", default="cpu", help="torch device for LPIPS (default cpu, as the official code)")
    add_threads_arg(p)
    p.add_argument("--no-ref", action="append", default=[], choices=NO_REF_METRICS,
                   help="also compute a no-reference metric of each prediction (repeatable): niqe (MATLAB niqe, "
                        "LIVE pristine model). Without --gt only these are computed")
    p.add_argument("--csv", metavar="FILE", help="per-image CSV (name, metrics) with a protocol comment line; "
                                                 "one file per method when several --pred are given")
    p.add_argument("--json", metavar="FILE", help="JSON with the means, standard deviations, count, protocol and "
                                                  "per-image rows; one file per method when several --pred")
    p.add_argument("--html", metavar="FILE", help="write a comparison report page (tables, image strips, zoom)")
    p.add_argument("--input", metavar="DIR", help="low-light inputs shown first in the --html image strips")
    p.add_argument("--inline-images", action="store_true",
                   help="embed the images in the --html page (data URIs) instead of linking them by relative path")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def _check_args(args) -> None:
    if args.gt is None and not args.no_ref:
        raise MeasureError("--gt is required unless only no-reference metrics are asked for (--no-ref niqe)")
    if args.input and not args.html:
        raise MeasureError("--input only feeds the --html report; add --html FILE")


def _common_pairs(gt, preds: List[str], labels: List[str], log):
    """match_files for every method; without --gt every method must hold the first method's images."""
    matched = [match_files(gt, p) for p in preds]
    if gt is None and len(preds) > 1:
        ref = {Path(n).stem for n, _, _ in matched[0][0]}
        for i in range(1, len(preds)):
            (pairs, _), p, lab = matched[i], preds[i], labels[i]
            have = {Path(n).stem for n, _, _ in pairs}
            missing = sorted(ref - have)
            if missing:
                raise MeasureError(f"method '{lab}' ({p}) lacks {len(missing)} image(s) of '{labels[0]}': "
                                   f"{short_list(missing)}")
            extra = sorted(have - ref)
            if extra:
                log(f"warning: {len(extra)} image(s) of '{lab}' not in '{labels[0]}' are ignored: {short_list(extra)}")
            matched[i] = ([t for t in pairs if Path(t[0]).stem in ref], extra)
    return matched


def write_html(path, results, matched, input_dir, protocol: Protocol, inline: bool) -> None:
    """The --html page: one strip per image of the first method, inputs (if any) matched by stem."""
    from utils.report_html import MethodResult, ReportItem, write_report

    inputs = _list_by_stem(Path(input_dir), "--input") if input_dir else {}
    items = [ReportItem(name, Path(name).stem, gt_path, inputs.get(Path(name).stem))
             for name, gt_path, _ in matched[0][0]]
    missing = [it.name for it in items if input_dir and it.input is None]
    if missing:
        raise MeasureError(f"--input folder {input_dir} has no image for {len(missing)} of {len(items)} image(s): "
                           f"{short_list(missing)}")
    methods = [MethodResult(label, Path(pred), agg, {Path(n).stem: pp for n, _, pp in pairs})
               for (label, pred, agg, _), (pairs, _) in zip(results, matched)]
    try:
        write_report(path, methods, items, protocol, inline=inline)
    except (OSError, ValueError) as e:
        raise MeasureError(f"cannot write the report {path}: {e}") from None


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: 0 on success; a user error is one `error:` line and 2 (utils.cli.call_cli)."""
    return call_cli(measure, argv)


def measure(argv: Optional[List[str]] = None) -> int:
    """Measure.py's work; user errors are raised (MeasureError, ImageError, OutputError, ...)."""
    args = build_parser().parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    _check_args(args)
    set_threads(args.threads)
    labels = method_labels(args.pred, args.label)
    outputs = output_files(args, labels)
    # before measuring: a bad or colliding output path should not cost the whole run
    check_output_plan([(f"--{key}" + (f" of '{label}'" if label else ""), path) for key, label, path in outputs],
                      [("--gt", args.gt), ("--input", args.input), *(("--pred", p) for p in args.pred)])
    for key, _, path in outputs:
        prepare_file(path, f"--{key}")
    protocol = Protocol(psnr=args.psnr, ssim=args.ssim, gt_mean=args.gt_mean, quantisation=args.quantisation,
                        lpips=bool(args.lpips or args.lpips_backbone), crop_border=args.crop_border,
                        no_ref=tuple(dict.fromkeys(args.no_ref)), full_ref=args.gt is not None)
    device = str(pick_device(args.device)) if protocol.full_ref and protocol.lpips else args.device
    matched = _common_pairs(args.gt, args.pred, labels, log)
    lpips = _open_lpips(protocol, args.lpips_backbone, device, log)
    results = []
    for pred, label, pairs in zip(args.pred, labels, matched):
        if len(args.pred) > 1:
            log(f"[{label}] {pred}")
        agg, summary = measure_dirs(args.gt, pred, protocol, progress=not args.no_progress, log=log,
                                    lpips=lpips, pairs=pairs)
        summary["label"] = label
        results.append((label, pred, agg, summary))
    if args.html:
        write_html(args.html, results, matched, args.input, protocol, args.inline_images)
    several = len(results) > 1
    for label, _, agg, summary in results:
        if args.csv:
            write_csv(per_method_path(args.csv, label) if several else args.csv, agg)
        if args.json:
            write_json(per_method_path(args.json, label) if several else args.json, summary)
        print(f"[{label}] {agg.format_means()}" if several else agg.format_means())
        if protocol.full_ref and protocol.lpips and summary.get("lpips") is None:
            print(f"LPIPS unavailable: {summary['lpips_unavailable_reason']}")
    if args.html:
        print(f"report: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
