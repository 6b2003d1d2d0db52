"""Zero-map injection (GLTG-AFlow / ZMAR-SNFlow / UPT-Flow robustness protocol) and a zero-map generator.

A zero-map is a uint8 RGB image the size of the low image. A channel value of 255 ("white") zeroes that channel of
the corresponding low-light pixel; anything below 255 leaves it untouched (spec 2.6 step 5).

The mask handed to the encoder depends on the rule:

- ``gltg``: the zero-map itself, as the per-channel white indicator in {0, 1} (3 channels; the encoder reads
  channel 0). The official loader fed ToTensor(zero-map) but also left the *low image* as int64 0..255, so the
  network saw log(0..255); here the injected low stays uint8 and is divided by 255 like every other image.
- ``chroma``: the chromaticity rule of ``preprocess.chroma_mask`` computed on the injected low image, with ZMAR's
  polarity (``aux_input: zmar_mask``, 1 = unbalanced) or UPT's (``aux_input: upt_zero_map``, 1 = balanced).

Assignment: in training a zero-map is drawn per sample per call with the dataset's RNG (the official GLTG code drew
one per image once, at construction); elsewhere image i gets zero-map i mod N.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.errors import ImageError, OptionError
from .image_io import list_images, read_rgb, write_rgb

RULES = ("gltg", "chroma")
SIZE_MODES = ("resize", "error")
_RULE_FOR_KIND = {"gltg_mask": "gltg", "zmar_mask": "chroma", "upt_zero_map": "chroma"}


def zero_map_white(zmap_uint8: np.ndarray) -> np.ndarray:
    """Per-channel white indicator (value >= 255) of a uint8 HxWx3 zero-map, as uint8 {0, 1}."""
    return (zmap_uint8 >= 255).astype(np.uint8)


def inject_zero_map(low_uint8: np.ndarray, zmap_uint8: np.ndarray):
    """Zero the low-image channels where the zero-map is white; returns (injected uint8 low, white {0,1} uint8)."""
    if low_uint8.shape != zmap_uint8.shape:
        raise ImageError(f"zero-map shape {zmap_uint8.shape} differs from the image shape {low_uint8.shape}")
    white = zero_map_white(zmap_uint8)
    return low_uint8 * (1 - white), white


def fit_zero_map(zmap: np.ndarray, hw: tuple, mode: str, zmap_path, image_path) -> np.ndarray:
    """Return zmap at size hw=(H, W): nearest-neighbour resize (mode 'resize') or an error naming both files."""
    if zmap.shape[:2] == tuple(hw):
        return zmap
    if mode == "error":
        raise ImageError(f"zero-map {zmap_path} is {zmap.shape[0]}x{zmap.shape[1]} but image {image_path} is "
                         f"{hw[0]}x{hw[1]} (HxW); resize it or set zero_map.size_mismatch: resize")
    if mode != "resize":
        raise OptionError(f"zero_map.size_mismatch must be one of {SIZE_MODES}, got {mode!r}")
    # Nearest keeps the map binary; any interpolation would create grey values that are not 'white'.
    return cv2.resize(zmap, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_NEAREST)


class ZeroMapInjector:
    """The ``zero_map`` option of a dataset phase: a folder of zero-maps plus how to inject and mask.

    cfg keys: ``folder`` (required), ``rule`` (gltg|chroma; default follows aux_input), ``size_mismatch``
    (resize|error, default resize), ``prob`` (training only: chance that a sample gets a zero-map, default 1.0).
    ``cache`` keeps decoded zero-maps in RAM (the dataset passes its own ``cache`` option).
    """

    def __init__(self, cfg: dict, aux_kind: str | None, cache: bool = False):
        if not isinstance(cfg, dict) or not cfg.get("folder"):
            raise OptionError("zero_map option needs a dict with at least 'folder'")
        unknown = set(cfg) - {"folder", "rule", "size_mismatch", "prob"}
        if unknown:
            raise OptionError(f"unknown zero_map keys {sorted(unknown)}; allowed: folder, rule, size_mismatch, prob")
        self.rule = cfg.get("rule") or _RULE_FOR_KIND.get(aux_kind, "gltg")
        if self.rule not in RULES:
            raise OptionError(f"zero_map.rule must be one of {RULES}, got {self.rule!r}")
        if aux_kind is not None and _RULE_FOR_KIND.get(aux_kind) != self.rule:
            raise OptionError(f"zero_map.rule '{self.rule}' does not fit aux_input '{aux_kind}' "
                              f"(gltg_mask needs rule gltg; zmar_mask/upt_zero_map need rule chroma)")
        self.size_mismatch = cfg.get("size_mismatch", "resize")
        if self.size_mismatch not in SIZE_MODES:
            raise OptionError(f"zero_map.size_mismatch must be one of {SIZE_MODES}, got {self.size_mismatch!r}")
        self.prob = float(cfg.get("prob", 1.0))
        if not 0.0 <= self.prob <= 1.0:
            raise OptionError(f"zero_map.prob must be in [0, 1], got {self.prob}")
        self.paths = list_images(cfg["folder"])
        self._cache = {} if cache else None

    def __len__(self):
        return len(self.paths)

    def choose(self, index: int, train: bool, rng: np.random.Generator):
        """The zero-map path for a sample: random per call in training (None when skipped by prob), else i mod N."""
        if not train:
            return self.paths[index % len(self.paths)]
        if self.prob < 1.0 and rng.random() >= self.prob:
            return None
        return self.paths[int(rng.integers(len(self.paths)))]

    def apply(self, low_uint8: np.ndarray, zmap_path, image_path):
        """Inject the zero-map at zmap_path into low; returns (injected low, white indicator or None for 'chroma')."""
        zmap = self._cache.get(zmap_path) if self._cache is not None else None
        if zmap is None:
            zmap = read_rgb(zmap_path)
            if self._cache is not None:
                self._cache[zmap_path] = zmap
        zmap = fit_zero_map(zmap, low_uint8.shape[:2], self.size_mismatch, zmap_path, image_path)
        injected, white = inject_zero_map(low_uint8, zmap)
        return injected, (white if self.rule == "gltg" else None)


# ----------------------------------------------------------------------------------------------- generator

def _smooth_field(h: int, w: int, rng: np.random.Generator, cell: int) -> np.ndarray:
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def generate_zero_map(h: int, w: int, rng: np.random.Generator, dark_coverage=(0.03, 0.2), n_blobs=(1, 4),
                      n_lines=(0, 3), speckle_density=(0.0, 0.002)) -> np.ndarray:
    """A realistic random zero-map, uint8 HxWx3 RGB with values {0, 255} (255 = channel zeroed).

    It combines large connected dark regions (all channels zeroed; a thresholded smooth random field covering a
    fraction drawn from dark_coverage), saturated blobs (ellipses zeroing one or two channels, which leaves a
    saturated primary or secondary colour), and sensor-like dropouts (full or partial row/column lines and
    isolated speckle pixels, in one or all channels). Ranges are (low, high) and drawn with rng.
    """
    out = np.zeros((h, w, 3), np.uint8)

    field = _smooth_field(h, w, rng, cell=max(8, min(h, w) // 4))
    coverage = rng.uniform(*dark_coverage)
    if coverage > 0:
        out[field >= np.quantile(field, 1.0 - coverage)] = 255

    for _ in range(int(rng.integers(n_blobs[0], n_blobs[1] + 1))):
        layer = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        short = min(h, w)
        axes = (int(rng.uniform(0.04, 0.2) * short) + 1, int(rng.uniform(0.04, 0.2) * short) + 1)
        cv2.ellipse(layer, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
        channels = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
        for c in channels:
            out[:, :, c] = np.maximum(out[:, :, c], layer)

    for _ in range(int(rng.integers(n_lines[0], n_lines[1] + 1))):
        vertical = rng.random() < 0.5
        length = h if vertical else w
        pos = int(rng.integers(0, w if vertical else h))
        width = int(rng.integers(1, 3))
        start = 0 if rng.random() < 0.5 else int(rng.integers(0, length // 2))
        stop = length if rng.random() < 0.5 else int(rng.integers(start + 1, length + 1))
        chans = [int(rng.integers(3))] if rng.random() < 0.5 else [0, 1, 2]
        for c in chans:
            if vertical:
                out[start:stop, pos:pos + width, c] = 255
            else:
                out[pos:pos + width, start:stop, c] = 255

    density = rng.uniform(*speckle_density)
    n_speckle = int(round(density * h * w))
    if n_speckle:
        ys = rng.integers(0, h, n_speckle)
        xs = rng.integers(0, w, n_speckle)
        cs = rng.integers(0, 3, n_speckle)
        out[ys, xs, cs] = 255
    return out


def write_zero_map_set(folder, n: int, h: int, w: int, seed: int) -> list[Path]:
    """Write n generated zero-maps (zeromap_0000.png ...) of size HxW into folder, reproducibly from seed."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    return [write_rgb(folder / f"zeromap_{i:04d}.png", generate_zero_map(h, w, rng)) for i in range(n)]
