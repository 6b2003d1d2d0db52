"""Network-input preprocessing shared by the training datasets and the test scripts.

Conventions: images are uint8 HxWx3 RGB numpy arrays until they become float tensors in [0, 1] with the channel
dimension at -3 (CxHxW or BxCxHxW). Random draws always come from an explicit ``np.random.Generator``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from utils.errors import ImageError

CHROMA_EPS = 1e-4
CHROMA_THRESHOLD = 0.1
AUX_KINDS = (None, "gltg_mask", "zmar_mask", "upt_zero_map")
POLARITIES = ("unbalanced_is_one", "balanced_is_one")


# ----------------------------------------------------------------------------------------------- image -> tensor

def histeq(rgb_uint8: np.ndarray) -> np.ndarray:
    """Per-channel ``cv2.equalizeHist`` of a uint8 HxWx3 RGB image (LLFlow's ``his``; spec 1.4)."""
    if rgb_uint8.dtype != np.uint8 or rgb_uint8.ndim != 3:
        raise ValueError(f"histeq expects uint8 HxWxC, got {rgb_uint8.dtype} {rgb_uint8.shape}")
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(rgb_uint8[:, :, c]))
                     for c in range(rgb_uint8.shape[2])], axis=2)


def to_tensor01(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWxC -> float32 CxHxW in [0, 1]; float arrays are taken as already in [0, 1]."""
    if img.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
    elif np.issubdtype(img.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    else:
        # Integer non-uint8 input is exactly the official GLTG bug (int64 -> no /255); refuse it.
        raise TypeError(f"to_tensor01 expects uint8 or float arrays, got {img.dtype}")
    return t


def log_low(x: torch.Tensor) -> torch.Tensor:
    """LLFlow's log input: ``log(clamp(x + 1e-3, min=1e-3))`` for x in [0, 1]."""
    return torch.log(torch.clamp(x + 1e-3, min=1e-3))


def build_lq(low01: torch.Tensor, his01: torch.Tensor | None, opt: dict) -> torch.Tensor:
    """Assemble the network input from the linear low image and its histeq (both in [0, 1]), spec 1.4 steps 2, 10, 11.

    opt keys: ``histeq_as_input`` (low := his), ``log_low`` (log of low only), ``concat_histeq`` (append his, which
    stays linear). Works on CxHxW or BxCxHxW.
    """
    need_his = bool(opt.get("histeq_as_input")) or bool(opt.get("concat_histeq"))
    if need_his and his01 is None:
        raise ValueError("build_lq: histeq_as_input/concat_histeq need the histogram-equalised image (his01)")
    x = his01 if opt.get("histeq_as_input") else low01
    if opt.get("log_low"):
        x = log_low(x)
    if opt.get("concat_histeq"):
        x = torch.cat([x, his01.to(x.dtype)], dim=-3)
    return x


# ----------------------------------------------------------------------------------------------- auxiliary maps

def _check_rgb_tensor(x, fn: str) -> torch.Tensor:
    if not torch.is_tensor(x) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{fn} expects a float RGB tensor 3xHxW or Bx3xHxW, got {shape}")
    return x


def chroma_balanced(rgb01: torch.Tensor) -> torch.Tensor:
    """1 where all chromaticity shares c/(R+G+B+1e-4) exceed 0.1, else 0 (spec 3.2/4.3); returns (B?)x1xHxW float."""
    x = _check_rgb_tensor(rgb01, "chroma_balanced")
    x = x if x.is_floating_point() else x.float()
    shares = x / (x.sum(dim=-3, keepdim=True) + CHROMA_EPS)
    shares = torch.where(shares <= CHROMA_THRESHOLD, torch.zeros_like(shares), shares)
    prod = shares[..., 0:1, :, :] * shares[..., 1:2, :, :] * shares[..., 2:3, :, :]
    return (prod != 0).to(x.dtype)


def chroma_mask(rgb01: torch.Tensor, polarity: str) -> torch.Tensor:
    """The chromaticity map with an explicit polarity.

    'unbalanced_is_one': ZMAR-SNFlow's mask (1 - balanced; 1 at black or colour-unbalanced pixels).
    'balanced_is_one': UPT-Flow's zero map zc (1 at balanced pixels).
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    bal = chroma_balanced(rgb01)
    return 1.0 - bal if polarity == "unbalanced_is_one" else bal


def zero_element_mask(rgb) -> torch.Tensor:
    """GLTG's test-time zero-element mask: 1 where ANY channel is 0, as 3 identical channels in {0, 1}.

    Accepts a uint8 HxWx3 numpy image or a float RGB tensor (CxHxW/BxCxHxW). Unlike the official test.py the values
    are {0, 1}, not {0, 1/255}. The encoder uses channel 0.
    """
    if isinstance(rgb, np.ndarray):
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"zero_element_mask expects HxWx3, got {rgb.shape}")
        rgb = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    x = _check_rgb_tensor(rgb, "zero_element_mask")
    any_zero = (x == 0).any(dim=-3, keepdim=True).float()
    return any_zero.expand_as(x).contiguous()


def aux_input(low01: torch.Tensor, kind: str | None, zero_map: torch.Tensor | None = None):
    """The encoder's auxiliary map for ``kind`` (None returns None).

    - 'gltg_mask': the injected zero-map's per-channel white indicator (3 ch, {0, 1}; e.g. the ``white`` returned
      by ``zeromap.inject_zero_map``, as a 3xHxW tensor or an HxWx3 array) when ``zero_map`` is given (spec 2.6
      steps 5-6, without the /255 bug), otherwise ``zero_element_mask(low01)``.
    - 'zmar_mask': ``chroma_mask(low01, 'unbalanced_is_one')`` (1 ch).
    - 'upt_zero_map': ``chroma_mask(low01, 'balanced_is_one')`` (1 ch).
    ``low01`` is the linear low image in [0, 1] as the network sees it (after any zero-map injection).
    """
    if kind is None:
        return None
    if kind == "gltg_mask":
        if zero_map is None:
            return zero_element_mask(low01)
        if isinstance(zero_map, np.ndarray) and zero_map.ndim == 3 and zero_map.shape[2] == 3:
            zero_map = torch.from_numpy(np.ascontiguousarray(zero_map.transpose(2, 0, 1)))
        if not torch.is_tensor(zero_map) or zero_map.shape[-3:] != low01.shape[-3:]:
            got = tuple(zero_map.shape) if hasattr(zero_map, "shape") else type(zero_map).__name__
            raise ValueError(f"aux_input: zero_map must be a {{0,1}} tensor shaped like the image "
                             f"{tuple(low01.shape[-3:])} (channels first) or an HxWx3 array, got {got}")
        return zero_map.float()
    if kind == "zmar_mask":
        return chroma_mask(low01, "unbalanced_is_one")
    if kind == "upt_zero_map":
        return chroma_mask(low01, "balanced_is_one")
    raise ValueError(f"unknown aux_input kind {kind!r}; expected one of {AUX_KINDS}")


# ----------------------------------------------------------------------------------------------- augmentation

def _hw(arrays):
    h, w = arrays[0].shape[:2]
    for a in arrays[1:]:
        if a.shape[:2] != (h, w):
            raise ImageError(f"paired arrays differ in size: {arrays[0].shape[:2]} vs {a.shape[:2]}")
    return h, w


def paired_random_crop(arrays: list, size: int, rng: np.random.Generator, name: str = "image") -> list:
    """The same random size x size crop of every HxWx... array; an image smaller than size is an error naming it."""
    h, w = _hw(arrays)
    if h < size or w < size:
        raise ImageError(f"{name}: image is {h}x{w} (HxW), smaller than the crop GT_size={size}")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return [a[top:top + size, left:left + size] for a in arrays]


def paired_center_crop(arrays: list, size: int, name: str = "image") -> list:
    """The centred size x size crop of every array (same location)."""
    h, w = _hw(arrays)
    if h < size or w < size:
        raise ImageError(f"{name}: image is {h}x{w} (HxW), smaller than center_crop_hr_size={size}")
    top, left = (h - size) // 2, (w - size) // 2
    return [a[top:top + size, left:left + size] for a in arrays]


def paired_flip_rot(arrays: list, rng: np.random.Generator, use_flip: bool, use_rot: bool,
                    use_vflip: bool = False, use_transpose: bool = False) -> list:
    """Horizontal flip with p=0.5 then rot90 with k in {0, 1, 3}, one draw shared by all arrays (spec 1.4 steps 5-6).

    `use_vflip` / `use_transpose` add a vertical flip and an H<->W transpose, each with p=0.5, after the horizontal
    flip (with all three: the 8 flips/rotations equally likely, DRBN's augmentation). Switched off they draw nothing,
    so other configs keep their random streams.
    """
    out = list(arrays)
    if use_flip and rng.random() < 0.5:
        out = [a[:, ::-1] for a in out]
    if use_vflip and rng.random() < 0.5:
        out = [a[::-1] for a in out]
    if use_transpose and rng.random() < 0.5:
        out = [a.swapaxes(0, 1) for a in out]
    if use_rot:
        k = int(rng.choice([0, 1, 3]))
        if k:
            out = [np.rot90(a, k, axes=(0, 1)) for a in out]
    return [np.ascontiguousarray(a) for a in out]


def add_noise(low01: torch.Tensor, rng: np.random.Generator, prob: float, level: float) -> torch.Tensor:
    """With probability prob add N(0, (level/255)^2) to low (spec 1.4 step 9); prob 0/None disables it.

    Like the official code the result is not clipped (the log input clamps at 1e-3 anyway).
    """
    if not prob or rng.random() >= prob:
        return low01
    noise = rng.normal(0.0, level / 255.0, size=tuple(low01.shape)).astype(np.float32)
    return low01 + torch.from_numpy(noise)


def gamma_aug(low01, gamma: float):
    """Max-normalised gamma: ``(x / max) ** gamma * max`` on float data in [0, 1] (spec 1.4 step 7, fixed).

    The official version returned float64 on 0..255 data, which ToTensor then did not divide by 255; here the
    input and output both stay float in [0, 1] with the input's dtype.
    """
    m = low01.max()
    if float(m) <= 0:
        return low01
    if torch.is_tensor(low01):
        return (low01 / m).pow(gamma) * m
    return ((low01 / m) ** gamma * m).astype(low01.dtype)


def random_gamma(rng: np.random.Generator, low: float = 0.4, high: float = 2.8) -> float:
    """Draw the gamma_aug exponent, U(0.4, 2.8) as in LLFlow's LOL-v2 loader."""
    return float(rng.uniform(low, high))
