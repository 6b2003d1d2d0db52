"""What the local web page (app.py) does, without the page: load the models, enhance uploads, synthesise pairs.

Every enhancement goes through :func:`engine.evaluate.evaluate` with an :class:`engine.inference.Enhancer` built by
:func:`engine.evaluate.make_enhancer`, exactly as test.py does, so a page result is the PNG test.py writes for the same
weights, image and settings. Nothing here imports gradio; engine/webpage.py lays the page out.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from data.image_io import read_rgb, write_rgb
from data.synthesis.physics import PhysicsParams, load_physics_config, synthesize
from data.synthesize import image_rng
from models.precision import AUTO, auto_dtype, resolve_dtype
from options.options import check_path, load_options
from options.validate import NONNEG
from utils import metrics
from utils.errors import OptionError, UserError, user_message
from .evaluate import EvalItem, evaluate, make_enhancer, make_scorer
from .inference import pick_device

DTYPES = ("fp32", "bf16", "fp16")
log = logging.getLogger("lowlight_flow")
DEFAULT_DTYPE = "default"    # each config's inference.dtype
# Enhancers kept per model (one per dtype/tile combination asked for); each holds a copy of the weights.
MAX_CACHED = 3
# Enhancement folders kept in the scratch folder (the page keeps its own copy of every file it shows or offers;
# synthesised pairs stay, the pair tab refers to them).
KEEP_REQUESTS = 20
DEFAULT_PHYSICS = Path(__file__).resolve().parents[1] / "confs" / "synthesis" / "physics_LOL.yml"


def resolve_page_dtype(name: str | None, device) -> str | None:
    """The dtype the page passes to the Enhancer for its dtype field: None for 'default' (each config's
    inference.dtype, what test.py uses without --dtype), else the name, checked against the device (fp16 needs CUDA);
    'auto' becomes the dtype `test.py --dtype auto` picks on this device (enhancers are cached by that name)."""
    if name in (None, "", DEFAULT_DTYPE):
        return None
    if name == AUTO:
        name, reason = auto_dtype(device)
        log.info("dtype auto -> %s (%s)", name, reason)
    resolve_dtype(name, device, "dtype")
    return name


def auto_note(device) -> str:
    """What 'auto' means on `device`, for the dtype field's label (e.g. 'fp32: CPU without AMX (no amx_bf16)')."""
    name, reason = auto_dtype(device)
    return f"{name}, {reason.removeprefix('auto: ')}"


def dtype_choices(device) -> list[str]:
    """The dtype field's choices: 'default', then the compute dtypes the Enhancer supports on `device`."""
    ok = [DEFAULT_DTYPE]
    for name in (*DTYPES, AUTO):
        try:
            resolve_page_dtype(name, device)
            ok.append(name)
        except OptionError:
            pass
    return ok


def parse_tile(value) -> int | None:
    """The page's tile field: empty or 'auto' -> None (automatic, by inference.max_memory), else pixels (0: never)."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        number = float(text)
    except ValueError:
        raise OptionError(f"tile: expected 'auto' or a whole number of pixels, got {value!r}") from None
    if number != int(number):
        raise OptionError(f"tile: expected a whole number of pixels, got {value!r}")
    return int(number)   # range checked by the Enhancer (inference.tile / --tile)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


@dataclass
class LoadedModel:
    """One `--opt CONF --model_path CKPT` pair: its options, checkpoint and the Enhancers built for it."""
    label: str
    opt: dict
    ckpt: Path
    device: str | None
    enhancers: dict = field(default_factory=dict)

    @property
    def uses_heat(self) -> bool:
        return bool(getattr(next(iter(self.enhancers.values())).model, "uses_heat", True))

    @property
    def default_heat(self) -> float:
        return float(self.opt.get("heat") or 0.0)

    def enhancer(self, dtype: str | None = None, tile: int | None = None):
        """The Enhancer for (dtype, tile), built the way test.py builds it (weights read, dtype checked)."""
        key = (dtype, tile)
        if key not in self.enhancers:
            if len(self.enhancers) >= MAX_CACHED:
                self.enhancers.pop(next(k for k in self.enhancers if k != (None, None)))
            args = SimpleNamespace(device=self.device, tile=tile, dtype=dtype, self_ensemble=False)
            self.enhancers[key] = make_enhancer(self.opt, args, self.ckpt)
        return self.enhancers[key]


@dataclass
class Result:
    """One model's output for one image: the PNG written (test.py's bytes) and the seconds it took."""
    label: str
    name: str
    png: Path
    seconds: float
    input_png: Path
    metrics: dict | None = None


def load_models(specs, overrides=(), device: str | None = None) -> list[LoadedModel]:
    """LoadedModels for [(conf, checkpoint or None[, its own overrides])], `overrides` applying to all: configs and
    checkpoints are read now, so a wrong checkpoint for a config is the start-up's one-line error. Labels are the
    configs' names, numbered where two collide."""
    pick_device(device, "--device")
    models, seen = [], {}
    for conf, ckpt, *own in specs:
        opt = load_options(conf, list(overrides) + list(own[0] if own else []))
        path = check_path(str(ckpt) if ckpt else opt.get("model_path"), "--model_path / model_path")
        label = str(opt.get("name") or Path(conf).stem)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} ({seen[label]})"
        m = LoadedModel(label, opt, Path(path), device)
        m.enhancer()     # the default Enhancer: loads and checks the weights now
        models.append(m)
    return models


class Workbench:
    """The page's state: the loaded models, a scratch folder for results, one enhancement at a time."""

    def __init__(self, models: list[LoadedModel], physics_conf=None, lpips_backbone: str | None = None,
                 scratch: Path | None = None):
        if not models:
            raise OptionError("app: give at least one --opt CONF (with --model_path CKPT)")
        self.models = {m.label: m for m in models}
        self.physics_conf = Path(physics_conf) if physics_conf else DEFAULT_PHYSICS
        self.physics = load_physics_config(self.physics_conf)
        self.lpips_backbone = lpips_backbone
        self.scratch = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="lowlight_app_"))
        self._lock = threading.Lock()       # one request on the network at a time (memory; timings)
        self._count = 0

    @property
    def labels(self) -> list[str]:
        return list(self.models)

    def device(self):
        first = next(iter(self.models.values()))
        return next(iter(first.enhancers.values())).device

    def model(self, label: str) -> LoadedModel:
        if label not in self.models:
            raise OptionError(f"model '{label}' is not loaded (loaded: {', '.join(self.models)})")
        return self.models[label]

    def _new_dir(self, what: str) -> Path:
        self._count += 1
        d = self.scratch / f"{self._count:05d}_{what}"
        d.mkdir(parents=True)
        for old in sorted(self.scratch.glob("*_enhance"))[:-KEEP_REQUESTS]:
            shutil.rmtree(old, ignore_errors=True)
        return d

    def enhance(self, paths, labels, heat=None, tile=None, dtype: str | None = None, gt=None) -> list[Result]:
        """Enhance every image file with every model (by label). `heat` (None: each config's) applies to the flows
        only; `tile` as :func:`parse_tile`; `dtype` as :func:`resolve_page_dtype`; `gt` (uint8 RGB) adds
        PSNR/SSIM/LPIPS. Outputs are <stem>.png (one model) or <stem>_<label>.png, the bytes test.py writes."""
        paths = [Path(p) for p in (paths or [])]
        if not paths:
            raise OptionError("no image: upload one or more photos first")
        labels = list(labels or [])
        if not labels:
            raise OptionError("no model: pick one or more of the loaded models")
        chosen = [self.model(lb) for lb in labels]
        tile = parse_tile(tile)
        dtype = resolve_page_dtype(dtype, self.device())
        heat = None if heat is None or heat == "" else NONNEG("heat", heat)
        images = [(p, read_rgb(p)) for p in paths]     # every upload is checked before the slow part
        stems = [p.stem for p in paths]
        if len(set(stems)) < len(stems):
            raise OptionError(f"two uploads are named {next(s for s in stems if stems.count(s) > 1)}.*: their "
                              f"results would share a name")
        results = []
        with self._lock:
            out = self._new_dir("enhance")
            # the decoded inputs as PNG: what the page shows as "before" (a browser may not show .tif or .ppm)
            shown = [write_rgb(out / "inputs" / f"{p.stem}.png", low) for p, low in images]
            for m in chosen:
                enh = m.enhancer(dtype, tile)
                h = (m.default_heat if heat is None else heat) if m.uses_heat else 0.0
                protocol = metrics.Protocol(quantisation="round", lpips=True, inference=enh.describe(h))
                for (p, low), before in zip(images, shown):
                    name = p.stem if len(chosen) == 1 else f"{p.stem}_{_slug(m.label)}"
                    scorers = [make_scorer(protocol, self.lpips_backbone)] if gt is not None else []
                    start = time.perf_counter()
                    summ = evaluate(enh, [EvalItem(name, low, gt)], scorers, heat=h, out=out, desc=m.label,
                                    write_protocol=protocol)
                    seconds = time.perf_counter() - start
                    results.append(Result(m.label, name, out / f"{name}.png", seconds, before,
                                          _pair_metrics(summ[0]) if summ else None))
        return results

    def synthesise(self, path, seed: int = 0) -> tuple[Path, Path, PhysicsParams]:
        """A low-light version of a normal photo with the physics synthesiser (parameters drawn from the config
        with `seed` and the file stem, as `python tools/synthesize.py --seed` draws them): (normal PNG, low PNG,
        parameters)."""
        if path is None:
            raise OptionError("no image: upload a normal-light photo first")
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise OptionError(f"seed: expected a whole number, got {seed!r}") from None
        if seed < 0:
            raise OptionError(f"seed: must be >= 0, got {seed}")
        src = Path(path)
        normal = read_rgb(src)
        rng = image_rng(seed, src.stem)
        params = self.physics.sample(rng)
        low = synthesize(normal, params, rng)
        with self._lock:
            out = self._new_dir("synth")
        return write_rgb(out / f"{src.stem}_normal.png", normal), write_rgb(out / f"{src.stem}.png", low), params

    def close(self):
        shutil.rmtree(self.scratch, ignore_errors=True)


def _pair_metrics(summary: dict) -> dict:
    out = {k: summary.get(k) for k in ("psnr", "ssim", "lpips")}
    if summary.get("lpips_unavailable_reason"):
        out["lpips_note"] = summary["lpips_unavailable_reason"]
    return out


def error_line(exc: BaseException) -> str:
    """The one-line message the CLIs print for a user error (utils/cli.py), for the page."""
    return f"error: {user_message(exc)}"


__all__ = ["DEFAULT_DTYPE", "DTYPES", "LoadedModel", "Result", "UserError", "Workbench", "auto_note", "dtype_choices", "error_line",
           "load_models", "parse_tile", "resolve_page_dtype"]
