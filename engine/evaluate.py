"""The shared body of test.py, test_with_tricks.py and test_with_zeromaps.py: list inputs, pair them with GT by file
stem, enhance, write `<out>/<input stem>.png`, and measure with the shared metrics module when GT is given."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from tqdm import tqdm

from data.image_io import list_images, read_rgb, write_rgb
from models.build import build_network
from options.options import OptionError, check_path
from utils import metrics
from engine.inference import Enhancer, pick_device, to_uint8
from models.precision import resolve_dtype

log = logging.getLogger("lowlight_flow")


def add_test_args(parser):
    parser.add_argument("--model_path", help="checkpoint (overrides model_path in the config)")
    parser.add_argument("--input", help="low-light input folder (overrides dataroot_LR / dataroot_test)")
    parser.add_argument("--gt", help="reference folder (overrides dataroot_GT); enables metrics")
    parser.add_argument("--out", help="output folder (default results/<name>)")
    parser.add_argument("--heat", type=float, help="latent temperature (overrides heat; 0 = deterministic)")
    parser.add_argument("--tile", type=int, help="tile size for large images (overrides inference.tile)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                        help="compute dtype (overrides inference.dtype; fp16 needs CUDA; README 'Reduced precision')")
    parser.add_argument("--ssim", default="skimage_rgb", choices=metrics.SSIM_PROTOCOLS)
    parser.add_argument("--psnr", default="uint8", choices=metrics.PSNR_MODES)
    parser.add_argument("--lpips", action="store_true", help="also compute LPIPS (alex v0.1)")
    parser.add_argument("--lpips-backbone", help="AlexNet features .pth for offline LPIPS")
    return parser


def pair_by_stem(inputs: list[Path], gt_dir: Path | None) -> list[tuple[Path, Path | None]]:
    """Match each input to the GT file with the same stem; a missing GT is an error naming the file."""
    if gt_dir is None:
        return [(p, None) for p in inputs]
    gts = {p.stem: p for p in list_images(gt_dir)}
    missing = [p.name for p in inputs if p.stem not in gts]
    if missing:
        raise OptionError(f"no reference in '{gt_dir}' for input(s): {', '.join(missing[:10])}"
                          + (" ..." if len(missing) > 10 else ""))
    return [(p, gts[p.stem]) for p in inputs]


def resolve_io(opt: dict, args, input_keys=("dataroot_LR", "dataroot_test")):
    """Input folder, GT folder (or None), output folder and checkpoint from the flags, else the config."""
    inp = args.input or next((opt[k] for k in input_keys if opt.get(k)), None)
    inp = check_path(inp, "--input / " + " / ".join(input_keys))
    # The config's GT folder belongs to the config's input folder: with --input alone the run is unpaired.
    gt = args.gt if args.gt is not None else (opt.get("dataroot_GT") if not args.input else None)
    gt = check_path(gt, "--gt / dataroot_GT") if gt else None
    ckpt = check_path(args.model_path or opt.get("model_path"), "--model_path / model_path")
    out = Path(args.out) if args.out else Path(opt["path"]["results_root"]) / opt["name"]
    return inp, gt, out, ckpt


def make_enhancer(opt, args, ckpt):
    dtype = getattr(args, "dtype", None)
    device = pick_device(args.device or (opt.get("inference") or {}).get("device"))
    resolve_dtype(dtype or (opt.get("inference") or {}).get("dtype"), device, "--dtype / inference.dtype")  # fail early
    model, notes = build_network(opt, str(ckpt))
    for n in notes:
        log.info(n)
    return Enhancer(model, opt, device=args.device, tile=args.tile, dtype=dtype)


def run(opt: dict, args, gt_mean: str = "none", quantisation: str = "round", label: str = "test",
        compose=None, zero_maps: list[Path] | None = None) -> dict | None:
    """Enhance every input image; returns the metric summary when GT is given.

    `compose(i, low, path) -> (low, mask_or_None, zero_map_path)` lets test_with_zeromaps inject zero-maps first.
    The written PNG is the plain output (clamped, `quantisation`), never GT-mean corrected unless `gt_mean` says so.
    """
    inp, gt_dir, out, ckpt = resolve_io(opt, args)
    heat = args.heat if args.heat is not None else float(opt.get("heat") or 0.0)
    pairs = pair_by_stem(list_images(inp), gt_dir)
    enhancer = make_enhancer(opt, args, ckpt)
    protocol = metrics.Protocol(psnr=args.psnr, ssim=args.ssim, gt_mean=gt_mean, lpips=bool(args.lpips),
                                quantisation=quantisation, dtype=enhancer.dtype_name)
    lpips_metric, lpips_reason = None, None
    if gt_dir is not None and args.lpips:
        try:
            lpips_metric = metrics.get_lpips_metric(getattr(args, "lpips_backbone", None))
        except metrics.LPIPSUnavailable as e:
            lpips_reason = str(e)
            log.warning("LPIPS unavailable: %s", e)
    agg = metrics.MetricAggregator(protocol)
    out.mkdir(parents=True, exist_ok=True)
    log.info("%s: %d images from %s -> %s (heat %g, %s)", label, len(pairs), inp, out, heat, enhancer.dtype_name)
    for i, (lp, gp) in enumerate(tqdm(pairs, desc=label, unit="img")):
        low = read_rgb(lp)
        mask = None
        if compose is not None:
            low, mask, _ = compose(i, low, lp)
            write_rgb(out / "inputs" / f"{lp.stem}.png", low)
        pred = enhancer(low, heat=heat, aux_mask=mask)
        if gp is not None:
            gt = read_rgb(gp)
            if gt.shape != low.shape:
                raise OptionError(f"size mismatch: {lp} is {low.shape[:2]} but {gp} is {gt.shape[:2]}")
            if gt_mean == "llflow":
                pred = metrics.gt_mean_llflow(pred, gt)
            elif gt_mean == "plain":
                pred = metrics.gt_mean_plain(pred, gt)
            res = metrics.evaluate_pair(pred, gt, metrics.Protocol(protocol.psnr, protocol.ssim, "none",
                                                                   False, quantisation, protocol.dtype))
            if lpips_metric is not None:
                res["lpips"] = lpips_metric(to_uint8(pred, quantisation), gt)
            agg.add(lp.stem, res)
        write_rgb(out / f"{lp.stem}.png", to_uint8(pred, quantisation))
    if gt_dir is None:
        return None
    summary = agg.summary(lpips_reason)
    write_reports(out, agg, summary)
    print(f"[{label}] {agg.format_means()}")
    return summary


def write_reports(out: Path, agg, summary: dict):
    """metrics.csv (one row per file, protocol in a comment line) and metrics.json (means + protocol)."""
    with open(out / "metrics.csv", "w", newline="") as f:
        f.write(f"# {agg.protocol.describe()}\n")
        w = csv.DictWriter(f, fieldnames=["name", "psnr", "ssim", "lpips"])
        w.writeheader()
        for r in agg.rows:
            w.writerow(r)
    with open(out / "metrics.json", "w") as f:
        json.dump({k: v for k, v in summary.items() if k != "per_image"}, f, indent=1)
