"""The sRGB transfer curve and its 8-bit forms (a lookup table to decode, float32 arithmetic to encode)."""
from __future__ import annotations

import numpy as np


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve on [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The sRGB encoding curve on [0, 1] (input clipped to [0, 1])."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


# Linear value of every 8-bit code, and the linear values where round(255 * srgb(y)) steps from k to k + 1.
DECODE_LUT = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
_ENCODE_EDGES = srgb_to_linear((np.arange(255, dtype=np.float64) + 0.5) / 255.0).astype(np.float32)


def decode_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear in [0, 1] (exact table lookup)."""
    return DECODE_LUT[img]


def encode_uint8(lin: np.ndarray) -> np.ndarray:
    """Linear values (any real number; clipped to [0, 1]) -> uint8 sRGB, round(255 * srgb(clip(lin))), in float32."""
    x = np.clip(lin, 0.0, 1.0, dtype=np.float32)
    y = np.where(x <= np.float32(0.0031308), x * np.float32(12.92),
                 np.float32(1.055) * np.power(x, np.float32(1 / 2.4)) - np.float32(0.055))
    return np.rint(y * np.float32(255.0)).astype(np.uint8)


def code_step_linear(lin: np.ndarray) -> np.ndarray:
    """Width, in linear units, of the 8-bit code interval around each linear value (for quantisation variance)."""
    code = np.searchsorted(_ENCODE_EDGES, lin, side="right")
    edges = np.concatenate([[0.0], _ENCODE_EDGES.astype(np.float64), [1.0]])
    return edges[code + 1] - edges[code]
