"""Fit the physics synthesiser's ranges to real low/normal pairs and write them as a synthesis YAML (the fit behind
``python tools/fit_physics.py``).

Per pair, in linear light (8-bit sRGB decoded exactly):
- exposure and colour cast: per-channel least-squares ratio k_c = sum(low*high) / sum(high^2) over pixels where
  neither image is saturated; exposure = k_g, colour gains = k_c / k_g (so g is 1).
- noise: the pixels of one channel sharing one 8-bit normal-light value form a group; the variance of the low
  image within a group, against the group's mean low intensity, is the noise at that intensity (conditioning on the
  normal value removes the scene's own structure). The expected 8-bit quantisation variance (step^2 / 12) is
  subtracted, groups whose low pixels clip at black (more than 1 %) or that hold too few pixels are dropped, and a
  weighted least-squares line var = shot_noise * mean + read_noise^2 (both >= 0) is fitted.
The YAML ranges span the 10th to 90th percentile of the per-pair estimates (``--quantiles``; ``0 1`` = min/max):
real sets hold a few pairs that do not fit the model (LOL-v1 pair 330's low image is softer than its normal one,
pair 254 is barely dark), and min/max would let them set the range. A zero noise estimate at the low end is floored
to 1e-6 (log-uniform sampling needs lo > 0; that is 1 % of the 8-bit quantisation noise at black). The per-pair table
is written into the file's header comment together with the exact command.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from data.base_dataset import pair_files
from data.image_io import list_images, read_rgb
from utils.errors import ImageError, OptionError

from .physics import PhysicsConfig
from .srgb import code_step_linear, decode_uint8

SATURATED = 250  # 8-bit values at or above this are treated as clipped highlights


@dataclass(frozen=True)
class PairFit:
    """Estimates from one pair, plus how many intensity groups the noise line was fitted to."""
    name: str
    exposure: float
    gain_r: float
    gain_g: float
    gain_b: float
    shot_noise: float
    read_noise: float
    groups: int


def ratio_sums(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sums (low*high, high^2) in linear light over pixels where neither image is saturated."""
    lo, hi = decode_uint8(low).astype(np.float64), decode_uint8(high).astype(np.float64)
    ok = (low < SATURATED) & (high < SATURATED)
    return np.where(ok, lo * hi, 0.0).sum(axis=(0, 1)), np.where(ok, hi * hi, 0.0).sum(axis=(0, 1))


def channel_ratios(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-channel linear-light ratio low/high (least squares through the origin over unsaturated pixels)."""
    num, den = ratio_sums(low, high)
    if np.any(den <= 0):
        raise ImageError("pair has a channel without unsaturated pixels; cannot fit an exposure")
    return num / den


def noise_groups(low: np.ndarray, high: np.ndarray, min_count: int = 64, max_clipped: float = 0.01,
                 subtract_quantisation: bool = True):
    """(mean, variance, count) of the linear low image per (channel, normal-light value) group, the expected 8-bit
    quantisation variance subtracted; only groups with at least min_count pixels and at most max_clipped of them
    at black."""
    lin = decode_uint8(low).astype(np.float64)
    means, variances, counts = [], [], []
    for c in range(3):
        codes = high[..., c].ravel()
        x = lin[..., c].ravel()
        n = np.bincount(codes, minlength=256).astype(np.float64)
        s1 = np.bincount(codes, weights=x, minlength=256)
        s2 = np.bincount(codes, weights=x * x, minlength=256)
        black = np.bincount(codes, weights=(low[..., c].ravel() == 0).astype(np.float64), minlength=256)
        top = np.bincount(codes, weights=(low[..., c].ravel() >= SATURATED).astype(np.float64), minlength=256)
        keep = (n >= min_count) & (black <= max_clipped * n) & (top == 0) & (np.arange(256) < SATURATED)
        n, s1, s2 = n[keep], s1[keep], s2[keep]
        m = s1 / n
        v = (s2 - n * m * m) / (n - 1)
        means.append(m)
        variances.append(v - code_step_linear(m) ** 2 / 12.0 if subtract_quantisation else v)
        counts.append(n)
    return np.concatenate(means), np.concatenate(variances), np.concatenate(counts)


def fit_noise_line(mean: np.ndarray, var: np.ndarray, count: np.ndarray, iters: int = 5) -> tuple[float, float]:
    """(shot, read^2) of var = shot * mean + read^2, both >= 0, by iteratively reweighted least squares.

    A sample variance from n pixels has variance 2 var^2 / (n - 1), so the weights are (n - 1) / model^2.
    """
    if mean.size < 2:
        raise ImageError("too few intensity groups to fit a noise line (need at least 2)")
    w = count.astype(np.float64)
    a = c = 0.0
    for _ in range(iters):
        sw, sx, sy = w.sum(), (w * mean).sum(), (w * var).sum()
        sxx, sxy = (w * mean * mean).sum(), (w * mean * var).sum()
        det = sw * sxx - sx * sx
        a = (sw * sxy - sx * sy) / det if det > 0 else 0.0
        c = (sy - a * sx) / sw
        if a < 0:  # no signal dependence measurable: constant variance
            a, c = 0.0, sy / sw
        if c < 0:  # no floor measurable: line through the origin
            c, a = 0.0, max(sxy / sxx, 0.0)
        model = np.maximum(a * mean + c, 1e-12)
        w = (count - 1) / model ** 2
    return float(a), float(c)


def fit_pair(name: str, low: np.ndarray, high: np.ndarray, min_count: int = 64) -> PairFit:
    """All physics parameters of one aligned pair (uint8 RGB arrays of equal size)."""
    if low.shape != high.shape:
        raise ImageError(f"{name}: low image is {low.shape[:2]} but the normal image is {high.shape[:2]}")
    try:
        k = channel_ratios(low, high)
        m, v, n = noise_groups(low, high, min_count)
        shot, read2 = fit_noise_line(m, v, n)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    return PairFit(name, float(k[1]), float(k[0] / k[1]), 1.0, float(k[2] / k[1]), shot, math.sqrt(read2), m.size)


def _round_out(lo: float, hi: float, digits: int = 3) -> list[float]:
    """[lo, hi] rounded outwards to `digits` significant digits (so every fitted value stays inside)."""
    def rnd(x, fn):
        if x == 0:
            return 0.0
        e = math.floor(math.log10(abs(x))) - digits + 1
        return float(fn(x / 10 ** e) * 10 ** e)
    return [float(f"{rnd(lo, math.floor):.{digits}g}"), float(f"{rnd(hi, math.ceil):.{digits}g}")]


NOISE_FLOOR = 1e-6


def ranges_from_fits(fits: list[PairFit], quantiles=(0.1, 0.9)) -> dict:
    """The synthesis YAML mapping: the [q_lo, q_hi] quantiles of each per-pair estimate (validated)."""
    q_lo, q_hi = quantiles
    if not 0 <= q_lo <= q_hi <= 1:
        raise OptionError(f"--quantiles {q_lo:g} {q_hi:g}: need 0 <= lo <= hi <= 1")

    def rng(attr, floor=0.0):
        lo, hi = np.quantile([getattr(f, attr) for f in fits], [q_lo, q_hi])
        if hi > 0:
            lo = max(lo, floor)
        return _round_out(float(lo), float(max(hi, lo)))
    d = {"exposure": rng("exposure"), "shot_noise": rng("shot_noise", NOISE_FLOOR),
         "read_noise": rng("read_noise", NOISE_FLOOR),
         "colour_gain": {"r": rng("gain_r"), "g": [1.0, 1.0], "b": rng("gain_b")}}
    PhysicsConfig.from_dict(d)
    return d


def fit_folders(low_dir, high_dir, first: int | None = None, min_count: int = 64, progress=None) -> list[PairFit]:
    """Fit every pair (by file stem, natural-sort order) of two folders, or only the first `first` of them."""
    pairs = pair_files(list_images(low_dir), list_images(high_dir), lambda p: p.stem, low_dir, high_dir)
    if first is not None:
        if first < 1 or first > len(pairs):
            raise OptionError(f"--first {first}: the folders hold {len(pairs)} pairs")
        pairs = pairs[:first]
    it = progress(pairs) if progress else pairs
    return [fit_pair(lo.stem, read_rgb(lo), read_rgb(hi), min_count) for lo, hi in it]


def format_table(fits: list[PairFit]) -> list[str]:
    lines = [f"{'pair':>8} {'exposure':>9} {'gain_r':>7} {'gain_b':>7} {'shot_noise':>11} {'read_noise':>11} groups"]
    for f in fits:
        lines.append(f"{f.name:>8} {f.exposure:9.4f} {f.gain_r:7.3f} {f.gain_b:7.3f} {f.shot_noise:11.3e} "
                     f"{f.read_noise:11.3e} {f.groups:6d}")
    return lines


def write_config(path, ranges: dict, fits: list[PairFit], command: str, quantiles=(0.1, 0.9)) -> Path:
    """The synthesis YAML with the command and the per-pair table as header comments."""
    head = ["Physics low-light synthesiser ranges (data/synthesis/physics.py documents every key), fitted with:",
            f"  {command}",
            f"on {len(fits)} pairs ({fits[0].name} .. {fits[-1].name} in natural-sort order). Ranges are quantiles",
            f"{quantiles[0]:g}..{quantiles[1]:g} of the per-pair estimates below, sampled log-uniformly per image.",
            ""] + format_table(fits)
    body = yaml.safe_dump(ranges, sort_keys=False, default_flow_style=None)
    text = "".join(f"# {ln}".rstrip() + "\n" for ln in head) + "\n" + body
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


if __name__ == "__main__":
    from utils.cli import moved_command
    moved_command("data.synthesis.fit_physics", "fit_physics")
