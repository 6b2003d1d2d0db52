"""The one evaluation path: validation during training and every test script enhance, score and report here.

`evaluate()` takes (name, low uint8, optional zero-map mask, optional GT uint8) items from a folder listing (the test
scripts) or a dataset (validation), runs the same :class:`engine.inference.Enhancer` call, scores with
utils/metrics.py under one or more named protocols, and writes `<out>/<name>.png`, metrics.csv and metrics.json.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from data.image_io import list_images, read_rgb, write_rgb
from models.build import build_network
from options.options import check_path
from options.validate import NONNEG
from utils import metrics
from utils.cli import in_range
from utils.pairing import index_by, pair_by_key
from utils.paths import check_output_plan, prepare_dir
from utils.reports import write_csv, write_json
from utils import threads
from utils.threads import add_threads_arg, set_threads
from models.precision import CHOICES as DTYPE_CHOICES
from utils.errors import ImageError, NonFiniteError, OptionError
from .inference import Enhancer, to_uint8
from .settings import RunSettings, settings_from_args

log = logging.getLogger("lowlight_flow")


@dataclass
class EvalItem:
    """One image to enhance: `low` and `gt` are uint8 HxWx3 RGB; `mask` is an injected zero-map (or None)."""
    name: str
    low: np.ndarray
    gt: np.ndarray | None = None
    mask: np.ndarray | None = None
    gt_path: Path | None = None  # named in messages about the reference


@dataclass
class Scorer:
    """Scores predictions under one protocol and keeps the per-image rows (by file name)."""
    protocol: metrics.Protocol
    lpips_metric: object = None
    lpips_reason: str | None = None
    agg: metrics.MetricAggregator = field(init=False)

    def __post_init__(self):
        self.agg = metrics.MetricAggregator(self.protocol)

    def check_size(self, name: str, shape) -> None:
        """An ImageError naming `name` when an image of `shape` is too small for this protocol's metrics."""
        problem = metrics.size_problem(shape, self.protocol, lpips=self.lpips_metric is not None)
        if problem:
            raise ImageError(f"{name}: {problem}")

    def add(self, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
        if gt.shape != pred.shape:
            raise ImageError(f"size mismatch: output for {name} is {pred.shape[:2]} but its reference is "
                             f"{gt.shape[:2]}")
        self.agg.add(name, metrics.evaluate_pair(pred, gt, self.protocol, lpips_metric=self.lpips_metric))

    def summary(self) -> dict:
        return self.agg.summary(self.lpips_reason)


def make_scorer(protocol: metrics.Protocol, lpips_backbone: str | None = None) -> Scorer:
    """A Scorer; when the protocol asks for LPIPS and it cannot be had, LPIPS is left out and the reason kept."""
    lpips_metric, reason = None, None
    if protocol.lpips:
        try:
            lpips_metric = metrics.get_lpips_metric(lpips_backbone)
        except metrics.LPIPSUnavailable as e:
            reason = str(e)
            log.warning("LPIPS unavailable: %s", e)
    return Scorer(protocol, lpips_metric, reason)


def output_image(pred: np.ndarray, gt: np.ndarray | None, protocol: metrics.Protocol) -> np.ndarray:
    """The uint8 image a protocol scores (GT-mean corrected when the protocol says so): what the scripts write."""
    if protocol.gt_mean != "none":
        if gt is None:
            raise OptionError(f"GT-mean correction ({protocol.gt_mean}) needs a reference image for every input")
        pred = metrics.gt_mean_llflow(pred, gt) if protocol.gt_mean == "llflow" else metrics.gt_mean_plain(pred, gt)
    return to_uint8(pred, protocol.quantisation)


def evaluate(enhancer: Enhancer, items: Iterable[EvalItem], scorers: list[Scorer], heat: float = 0.0,
             out: Path | None = None, report_dir: Path | None = None, write_protocol: metrics.Protocol | None = None,
             desc: str = "eval", total: int | None = None, on_image: Callable | None = None) -> list[dict]:
    """Enhance every item, score it with every scorer (items with GT), write `<out>/<name>.png` (the image
    `write_protocol` scores, default the first scorer's) and, with GT, `<report_dir>/metrics.csv|json` (default
    `out`; the first scorer's, then `metrics_<gt_mean>.*` for the others).

    `on_image(index, item, pred)` is called after each image (validation previews). Returns the scorers' summaries.
    """
    write_protocol = write_protocol or (scorers[0].protocol if scorers else metrics.Protocol(quantisation="round"))
    scored = False
    for i, item in enumerate(tqdm(items, desc=desc, unit="img", total=total, leave=False)):
        if item.gt is not None:
            for s in scorers:  # before the (slow) enhancement: an image too small to score is an error now
                s.check_size(str(item.gt_path or item.name), item.gt.shape)
        pred = enhancer(item.low, heat=heat, aux_mask=item.mask)
        if not np.isfinite(pred).all():
            source = getattr(enhancer, "source", "the checkpoint")
            raise NonFiniteError(f"the model produced non-finite values (NaN/inf) for {item.name}: check {source} "
                                 f"(NaN/inf weights?) and options such as the heat ({heat})")
        if item.gt is not None:
            scored = True
            for s in scorers:
                s.add(item.name, pred, item.gt)
        if out is not None:
            write_rgb(out / f"{item.name}.png", output_image(pred, item.gt, write_protocol))
        if on_image is not None:
            on_image(i, item, pred)
    summaries = [s.summary() for s in scorers] if scored else []
    report_dir = report_dir if report_dir is not None else out
    if report_dir is not None and scored:
        for k, (s, summ) in enumerate(zip(scorers, summaries)):
            suffix = "" if k == 0 else f"_{s.protocol.gt_mean}"
            write_csv(report_dir / f"metrics{suffix}.csv", s.agg)
            write_json(report_dir / f"metrics{suffix}.json", {k2: v for k2, v in summ.items() if k2 != "per_image"})
    return summaries


# -- the test scripts -------------------------------------------------------------------------------------------
def add_test_args(parser):
    parser.add_argument("--model_path", help="checkpoint (overrides model_path in the config)")
    parser.add_argument("--input", help="low-light input folder (overrides dataroot_LR / dataroot_test)")
    parser.add_argument("--gt", help="reference folder (overrides dataroot_GT); enables metrics")
    parser.add_argument("--out", help="output folder (default results/<name>)")
    parser.add_argument("--heat", type=float, action=in_range(0), help="latent temperature (overrides heat; 0 = deterministic)")
    parser.add_argument("--tile", type=int, action=in_range(0), help="layer-wise tile size in pixels, same output as the full frame "
                        "(overrides inference.tile; default: automatic above inference.max_memory; 0: never)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES,
                        help="compute dtype (overrides inference.dtype; fp16 needs CUDA; auto: bf16 where the device "
                             "has fast bf16 (CUDA, a CPU with AMX or an AMD CPU with AVX512-BF16), else fp32; "
                             "docs/precision-and-threads.md)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the 8 flipped/transposed passes (x8 time); written into the protocol line")
    parser.add_argument("--ssim", default="skimage_rgb", choices=metrics.SSIM_PROTOCOLS)
    parser.add_argument("--psnr", default="uint8", choices=metrics.PSNR_MODES)
    parser.add_argument("--lpips", action="store_true", help="also compute LPIPS (alex v0.1)")
    parser.add_argument("--lpips-backbone", help="AlexNet features .pth for offline LPIPS")
    return add_threads_arg(parser)


def pair_inputs(inputs: list[Path], gt_dir: Path | None) -> list[tuple[Path, Path | None]]:
    """Each input with the GT file of the same stem (a missing GT is an error naming the file)."""
    # outputs are named <stem>.png: two inputs with one stem (x.png, x.jpg) would overwrite each other's output
    index_by(inputs, where=str(inputs[0].parent) if inputs else "--input")
    if gt_dir is None:
        return [(p, None) for p in inputs]
    pairs, _ = pair_by_key(inputs, list_images(gt_dir), primary_dir=str(inputs[0].parent) if inputs else "--input",
                           secondary_dir=str(gt_dir), extra="return", what=("input", "reference"))
    return pairs


def resolve_io(opt: dict, args, input_keys=("dataroot_LR", "dataroot_test")):
    """Input folder, GT folder (or None), output folder and checkpoint from the flags, else the config."""
    inp = args.input or next((opt[k] for k in input_keys if opt.get(k)), None)
    inp = check_path(inp, "--input / " + " / ".join(input_keys))
    # The config's GT folder belongs to the config's input folder: with --input alone the run is unpaired.
    gt = args.gt if args.gt is not None else (opt.get("dataroot_GT") if not args.input else None)
    gt = check_path(gt, "--gt / dataroot_GT") if gt else None
    ckpt = check_path(args.model_path or opt.get("model_path"), "--model_path / model_path")
    out = Path(args.out) if args.out else Path(opt["path"]["results_root"]) / opt["name"]
    check_output_plan([("--out" if args.out else "path.results_root/name", out)],
                      [("--input", inp), ("--gt", gt), ("--model_path", ckpt)])
    return inp, gt, out, ckpt


def make_enhancer(opt, args, ckpt, settings: RunSettings | None = None) -> Enhancer:
    """The Enhancer for checkpoint `ckpt` with `settings` (default: resolved from `args` over the config, before
    the weights are read)."""
    settings = settings or settings_from_args(opt, args)
    model, notes = build_network(opt, str(ckpt))
    for n in notes:
        log.info(n)
    enhancer = Enhancer(model, opt, settings=settings)
    enhancer.source = f"checkpoint '{ckpt}'"  # named when its outputs are not finite
    if enhancer.dtype_reason:
        log.info("dtype %s (%s)", enhancer.dtype_name, enhancer.dtype_reason)
    if enhancer.device.type == "cpu":
        log.info("CPU: %s", threads.describe())
    return enhancer


def _file_items(pairs, compose, out) -> Iterator[EvalItem]:
    for i, (lp, gp) in enumerate(pairs):
        low, mask = read_rgb(lp), None
        if compose is not None:
            low, mask, _ = compose(i, low, lp)
            write_rgb(out / "inputs" / f"{lp.stem}.png", low)
        gt = read_rgb(gp) if gp is not None else None
        if gt is not None and gt.shape != low.shape:
            raise ImageError(f"size mismatch: {lp} is {low.shape[0]}x{low.shape[1]} but {gp} is "
                             f"{gt.shape[0]}x{gt.shape[1]} (HxW)")
        yield EvalItem(lp.stem, low, gt, mask, gp)


def _say_replaced(out: Path, pairs, with_inputs: bool) -> None:
    """Outputs are replaced in place (a rerun updates them); say how many earlier files that affects."""
    names = [f"{lp.stem}.png" for lp, _ in pairs]
    old = [n for n in names if (out / n).exists()]
    if with_inputs:
        old += [f"inputs/{n}" for n in names if (out / "inputs" / n).exists()]
    old += [n for n in ("metrics.csv", "metrics.json") if (out / n).exists() and any(g for _, g in pairs)]
    if old:
        log.warning("%s already holds %d of the files this run writes (e.g. %s): they are replaced", out, len(old),
                    old[0])


def run(opt: dict, args, gt_mean: str = "none", quantisation: str = "round", label: str = "test",
        compose=None) -> dict | None:
    """Enhance every input image of a test script; returns the metric summary when GT is given.

    `compose(i, low, path) -> (low, mask_or_None, zero_map_path)` lets test_with_zeromaps inject zero-maps first.
    The written PNG is the image the protocol scores: plain (clamped, `quantisation`) unless `gt_mean` says so.
    """
    inp, gt_dir, out, ckpt = resolve_io(opt, args)
    if gt_mean != "none" and gt_dir is None:
        raise OptionError(f"{label}: the GT-mean correction needs reference images: give --gt (or dataroot_GT "
                          f"without --input)")
    heat = NONNEG("--heat", args.heat) if args.heat is not None else float(opt.get("heat") or 0.0)
    pairs = pair_inputs(list_images(inp), gt_dir)
    settings = settings_from_args(opt, args)  # flags are checked before the model is built
    set_threads(getattr(args, "threads", None))
    prepare_dir(out, "--out" if args.out else "path.results_root (the default output folder)")
    enhancer = make_enhancer(opt, args, ckpt, settings)
    if heat and not getattr(enhancer.model, "uses_heat", True):
        raise OptionError(f"{'--heat' if args.heat is not None else 'heat'} is {heat:g}, but "
                          f"{type(enhancer.model).__name__} has no latent temperature (its output does not depend "
                          f"on heat): leave it at 0")
    protocol = metrics.Protocol(psnr=args.psnr, ssim=args.ssim, gt_mean=gt_mean, lpips=bool(args.lpips),
                                quantisation=quantisation, inference=enhancer.describe(heat))
    scorer = make_scorer(protocol, getattr(args, "lpips_backbone", None))
    _say_replaced(out, pairs, compose is not None)
    log.info("%s: %d images from %s -> %s (heat %g)", label, len(pairs), inp, out, heat)
    summaries = evaluate(enhancer, _file_items(pairs, compose, out), [scorer], heat=heat, out=out,
                         desc=label, total=len(pairs))
    if not summaries:
        return None
    print(f"[{label}] {scorer.agg.format_means()}")
    return summaries[0]
