"""Physics-based low-light synthesis: a normal-light sRGB photo -> what a short exposure of the same scene looks like.

Model, per image (all in linear light, values in [0, 1] of the normal image's white):

    x      = srgb_to_linear(normal / 255)                              (exact 8-bit table)
    s_c    = exposure * gain_c * x_c                                   (exposure; colour cast = per-channel gains)
    y_c    = s_c + sqrt(shot_noise * s_c + read_noise**2) * n,  n ~ N(0, 1)
    low    = round(255 * srgb(clip(y, 0, 1)))                           (8-bit quantisation)

The noise term is the usual Poisson-Gaussian (heteroscedastic Gaussian) approximation of a raw sensor: photon shot
noise has variance proportional to the signal (``shot_noise`` = 1 / the number of photo-electrons that makes
linear value 1.0 of the output, i.e. the inverse conversion gain at the capture's ISO), read noise is
signal-independent with standard deviation ``read_noise``. The Gaussian stands in for the Poisson count: accurate
from about ten photo-electrons per pixel up, and below that the mean and variance stay exact (only the skew is
missing). Noise is independent per pixel and channel (no demosaicing correlation); negative values clip to black as
in a camera's pipeline.

Configuration (YAML, every key validated; a range ``[lo, hi]`` is drawn per image, log-uniformly, ``lo == hi`` is a
constant, which may be 0 for the noise terms):

    exposure:   [lo, hi]   linear scale of the green channel, 1e-4 <= lo <= hi <= 1
    shot_noise: [lo, hi]   variance per unit linear signal, 0 <= lo <= hi <= 0.1
    read_noise: [lo, hi]   standard deviation in linear units, 0 <= lo <= hi <= 0.1
    colour_gain:           optional, per-channel gains relative to the exposure, each 0.1 <= lo <= hi <= 10
      r: [lo, hi]          (default [1, 1] for every channel; the fitted LOL file keeps g at 1)
      g: [lo, hi]
      b: [lo, hi]
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from options.options import yaml_problem
from utils.errors import OptionError

from .srgb import decode_uint8, encode_uint8

# key -> (lowest allowed lo, highest allowed hi, what it is)
RANGES = {
    "exposure": (1e-4, 1.0, "linear exposure scale"),
    "shot_noise": (0.0, 0.1, "shot-noise variance per unit linear signal"),
    "read_noise": (0.0, 0.1, "read-noise standard deviation (linear)"),
}
GAIN_RANGE = (0.1, 10.0)
CHANNELS = ("r", "g", "b")


@dataclass(frozen=True)
class PhysicsParams:
    """The parameters of one synthesised image."""
    exposure: float
    shot_noise: float
    read_noise: float
    gain_r: float = 1.0
    gain_g: float = 1.0
    gain_b: float = 1.0

    @property
    def gains(self) -> np.ndarray:
        return np.array([self.gain_r, self.gain_g, self.gain_b], dtype=np.float32)

    def as_dict(self) -> dict:
        return asdict(self)


def _range(value, where: str, lo_min: float, hi_max: float) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value, value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise OptionError(f"option '{where}' must be a range [lo, hi], got {value!r}")
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f"option '{where}' must hold two numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise OptionError(f"option '{where}' must be finite, got {value!r}")
    if lo > hi:
        raise OptionError(f"option '{where}': lo {lo:g} is above hi {hi:g}")
    if lo < lo_min or hi > hi_max:
        raise OptionError(f"option '{where}' = [{lo:g}, {hi:g}] is outside the allowed [{lo_min:g}, {hi_max:g}]")
    if lo < hi and lo <= 0:
        raise OptionError(f"option '{where}' = [{lo:g}, {hi:g}] is sampled log-uniformly: lo must be > 0 "
                          f"(use [0, 0] for none)")
    return lo, hi


@dataclass(frozen=True)
class PhysicsConfig:
    """Validated ranges of the physics synthesiser (see the module docstring)."""
    exposure: tuple[float, float]
    shot_noise: tuple[float, float]
    read_noise: tuple[float, float]
    colour_gain: tuple[tuple[float, float], ...] = ((1.0, 1.0),) * 3

    @classmethod
    def from_dict(cls, d, where: str = "synthesis") -> "PhysicsConfig":
        """Validate a mapping strictly: unknown or missing keys and out-of-range values are one-line OptionErrors."""
        if not isinstance(d, dict):
            raise OptionError(f"option '{where}' must be a mapping of physics ranges, got {type(d).__name__}")
        pre = f"{where}." if where else ""
        known = [*RANGES, "colour_gain"]
        for k in d:
            if k not in known:
                raise OptionError(f"unknown option '{pre}{k}' (known: {', '.join(known)})")
        missing = [k for k in RANGES if k not in d]
        if missing:
            raise OptionError(f"option '{pre}{missing[0]}' is required (a range [lo, hi])")
        vals = {k: _range(d[k], pre + k, lo, hi) for k, (lo, hi, _) in RANGES.items()}
        gains = d.get("colour_gain") or {}
        if not isinstance(gains, dict):
            raise OptionError(f"option '{pre}colour_gain' must be a mapping r/g/b -> [lo, hi]")
        for k in gains:
            if k not in CHANNELS:
                raise OptionError(f"unknown option '{pre}colour_gain.{k}' (known: r, g, b)")
        vals["colour_gain"] = tuple(_range(gains.get(c, 1.0), f"{pre}colour_gain.{c}", *GAIN_RANGE)
                                    for c in CHANNELS)
        return cls(**vals)

    def to_dict(self) -> dict:
        return {"exposure": list(self.exposure), "shot_noise": list(self.shot_noise),
                "read_noise": list(self.read_noise),
                "colour_gain": {c: list(r) for c, r in zip(CHANNELS, self.colour_gain)}}

    def sample(self, rng: np.random.Generator) -> PhysicsParams:
        """Draw one image's parameters. Always six uniforms, so fixing one range never shifts the others."""
        u = rng.random(6)
        ranges = [self.exposure, self.shot_noise, self.read_noise, *self.colour_gain]
        return PhysicsParams(*(_log_uniform(r, ui) for r, ui in zip(ranges, u)))


def _log_uniform(r: tuple[float, float], u: float) -> float:
    lo, hi = r
    return lo if lo == hi else float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))


def load_physics_config(path) -> PhysicsConfig:
    """Read a physics YAML with yaml.safe_load and validate it."""
    p = Path(path)
    if not p.is_file():
        raise OptionError(f"synthesis config '{path}' not found")
    with open(p, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise OptionError(f"synthesis config '{path}' is not valid YAML: {yaml_problem(e)}") from None
        except UnicodeDecodeError:
            raise OptionError(f"synthesis config '{path}' is not UTF-8 text: is it a YAML file?") from None
    try:
        return PhysicsConfig.from_dict(raw if raw is not None else {}, where="")
    except OptionError as e:
        raise OptionError(f"synthesis config '{path}': {e}") from None


def expose_linear(lin: np.ndarray, p: PhysicsParams, rng: np.random.Generator) -> np.ndarray:
    """The noisy linear capture (before clipping and quantisation) of linear HxWx3 float32 values."""
    s = lin * (np.float32(p.exposure) * p.gains)
    sigma = np.sqrt(np.float32(p.shot_noise) * s + np.float32(p.read_noise) ** 2)
    return s + sigma * rng.standard_normal(s.shape, dtype=np.float32)


def synthesize(normal: np.ndarray, p: PhysicsParams, rng: np.random.Generator) -> np.ndarray:
    """Low-light uint8 HxWx3 RGB image from a normal-light uint8 HxWx3 RGB image."""
    if not (isinstance(normal, np.ndarray) and normal.dtype == np.uint8 and normal.ndim == 3
            and normal.shape[2] == 3):
        desc = f"{normal.dtype} {normal.shape}" if isinstance(normal, np.ndarray) else type(normal).__name__
        raise ValueError(f"synthesize expects a uint8 HxWx3 RGB image, got {desc}")
    return encode_uint8(expose_linear(decode_uint8(normal), p, rng))
