"""Checkpoint selection without the test set: every saved checkpoint of a run re-evaluated on its validation split.

Writes `<run>/retest/retest.csv` (one row per checkpoint, protocol in the first line), `retest.png` (the validation
curve) and names the best checkpoint with its protocol. The test split is never read: a run whose `datasets.val`
lists a test split is refused (configure `datasets.val.holdout: N` instead).
"""
from __future__ import annotations

import csv
import logging
import re
import textwrap
from pathlib import Path

from natsort import natsorted

from data.split_guard import reads_test_data
from models.build import build_network
from options.options import load_options
from utils import metrics
from utils.atomic import atomic_open
from utils.errors import OptionError
from .evaluate import evaluate, make_scorer
from .inference import Enhancer
from .trainer import build_datasets, val_items

log = logging.getLogger("lowlight_flow")
CKPT = re.compile(r"^(\d+)_(G|G_ema)\.pth$")


def list_checkpoints(models_dir: Path) -> list[tuple[int, str, Path]]:
    """(step, 'G' | 'G_ema', path) of every step checkpoint in a run's models/ folder, by step."""
    out = []
    for p in natsorted(models_dir.glob("*_G*.pth")):
        m = CKPT.match(p.name)
        if m:
            out.append((int(m.group(1)), m.group(2), p))
    return out


def retest(run_dir, device: str | None = None, max_images: int | None = None) -> dict:
    """Evaluate every checkpoint of `run_dir` on the validation split; returns {'rows', 'best', 'protocol'}."""
    run = Path(run_dir)
    conf = run / "config.yml"
    if not conf.is_file():
        raise OptionError(f"--run {run}: no config.yml (not a training run folder?)")
    opt = load_options(conf, is_train=True)
    ckpts = list_checkpoints(run / "models")
    if not ckpts:
        raise OptionError(f"--run {run}: no step checkpoints (<step>_G.pth) in {run / 'models'}")
    # a holdout is checked too: `split: train` over a test folder is still the test set
    probe, _ = build_network(opt)
    _, val = build_datasets(opt, getattr(probe, "aux_input", None))
    if val is None:
        raise OptionError(f"{conf}: no datasets.val; retest selects checkpoints on a validation split only")
    why = reads_test_data(val)
    if why:
        raise OptionError(f"{conf}: datasets.val is test data ({why}); choosing a checkpoint on the test set "
                          f"inflates the reported numbers. Set datasets.val.holdout: N (held-out training pairs)")
    vopt = opt["val"]
    heat = float(vopt.get("heat") or 0.0)
    rows, protocol = [], None
    val_set = None
    for step, kind, path in ckpts:
        net, _ = build_network(opt, str(path))
        if val_set is None:
            _, val_set = build_datasets(opt, getattr(net, "aux_input", None))
        enhancer = Enhancer(net, opt, device=device)
        scorer = make_scorer(metrics.Protocol(psnr=vopt["psnr"], ssim=vopt["ssim"], quantisation="round",
                                              inference=enhancer.describe(heat)))
        protocol = scorer.protocol.describe()
        (summary,) = evaluate(enhancer, val_items(val_set, max_images), [scorer], heat=heat,
                              desc=f"retest {path.name}")
        rows.append({"checkpoint": path.name, "step": step, "weights": kind, "psnr": summary["psnr"],
                     "ssim": summary["ssim"], "count": summary["count"]})
        log.info("%s: PSNR %.3f SSIM %.4f (n=%d)", path.name, summary["psnr"], summary["ssim"], summary["count"])
    best = max(rows, key=lambda r: r["psnr"])
    out = run / "retest"
    with atomic_open(out / "retest.csv", "w") as f:
        f.write(f"# validation split of {conf}; protocol: {protocol}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot(rows, out / "retest.png", protocol)
    print(f"best checkpoint: {run / 'models' / best['checkpoint']} (step {best['step']}, {best['weights']}): "
          f"PSNR {best['psnr']:.3f} dB, SSIM {best['ssim']:.4f} on {best['count']} validation images; {protocol}")
    return {"rows": rows, "best": best, "protocol": protocol}


def _plot(rows, path: Path, protocol: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for kind, style in (("G", "o-"), ("G_ema", "s--")):
        pts = [r for r in rows if r["weights"] == kind]
        if pts:
            for ax, key in zip(axes, ("psnr", "ssim")):
                ax.plot([r["step"] for r in pts], [r[key] for r in pts], style, label=kind)
    for ax, key in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    best = max(rows, key=lambda r: r["psnr"])
    axes[0].annotate(f"best: {best['checkpoint']}", (best["step"], best["psnr"]), fontsize=8,
                     xytext=(5, -12), textcoords="offset points")
    fig.suptitle(textwrap.fill("validation split; " + protocol, 150), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
