"""Inference plumbing in one place: device choice, padding to what the model needs, tiling, and the enhance call.

Images are padded (reflect, bottom/right) to the model's multiple *before* preprocessing, so histogram equalisation
and auxiliary maps see exactly the pixels the network sees; the output is cropped back to the input size.
Tiled inference runs overlapping tiles of the already-preprocessed input and blends them with linear ramps; models
with global attention (the Restormer family) see less context per tile, so tiling trades exactness for memory.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from data import preprocess
from models.precision import autocast, cast_network, dtype_name, resolve_dtype
from options.options import OptionError
from utils.errors import OutOfMemoryError
from utils.devices import pick_device  # noqa: F401  (re-exported: the one place device names are checked)


def pad_amount(size: int, multiple: int, min_size: int = 1) -> int:
    """Rows (or columns) to add so `size` becomes a multiple of `multiple` and at least `min_size`."""
    target = max(size, min_size)
    return target + (-target) % multiple - size


def pad_image(img: np.ndarray, multiple: int, mode: str = "reflect", min_size: int = 1) -> np.ndarray:
    """Pad an HxWxC array at the bottom/right to a multiple that is at least `min_size` (reflect without edge
    repeat; edge where the image is too small to reflect)."""
    ph, pw = pad_amount(img.shape[0], multiple, min_size), pad_amount(img.shape[1], multiple, min_size)
    if not ph and not pw:
        return img
    if mode in ("reflect", "symmetric") and (ph >= img.shape[0] or pw >= img.shape[1]):
        mode = "edge"  # reflecting needs the pad to be smaller than the image
    widths = ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2)
    return np.pad(img, widths, mode=mode)


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    w = torch.ones(n, device=device)
    if overlap > 0:
        r = torch.linspace(0, 1, overlap + 2, device=device)[1:-1]
        if not at_start:
            w[:overlap] = r
        if not at_end:
            w[-overlap:] = r.flip(0)
    return w


# (flip rows, flip columns, transpose): the 8 symmetries of the square, for self-ensemble.
_DIHEDRAL = [(fh, fw, tr) for tr in (False, True) for fh in (False, True) for fw in (False, True)]


def _tile_starts(size: int, tile: int, step: int):
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def check_tile(tile, key: str = "--tile"):
    """`tile` (None = whole images) when it is a positive number of pixels; otherwise an OptionError naming `key`."""
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise OptionError(f"{key} must be a positive number of pixels (leave it out to enhance whole images), "
                          f"got {tile!r}")
    return tile


def input_is_log(opt: dict) -> bool:
    """`log_low` as the config's datasets set it (test, then val, then train); an error when none says."""
    phases = opt.get("datasets") or {}
    for name in ("test", "val", "train", *phases):
        value = (phases.get(name) or {}).get("log_low")
        if value is not None:
            return bool(value)
    raise OptionError("no dataset phase sets 'log_low': add datasets.test.log_low (true for LLFlow, GLTG-AFlow "
                      "and ZMAR-SNFlow, false for UPT-Flow) so test inputs are preprocessed as in training")


class Enhancer:
    """Runs a generator on uint8 RGB images: pad -> preprocess -> (tiled) reverse pass -> crop.

    `opt` is the resolved options dict (its `inference` section gives tile/overlap/device/dtype defaults).
    `dtype` ('fp32', 'bf16', 'fp16'; default `inference.dtype`): the network's compute dtype (models/precision.py);
    a reduced dtype casts the weights once (`cast='weights'`, the float32 parts excepted) or runs autocast over
    float32 weights (`cast='autocast'`). The legacy `inference.amp: true` means fp16 on CUDA.
    """

    def __init__(self, model, opt: dict, device=None, tile: int | None = None, overlap: int | None = None,
                 amp: bool | None = None, self_ensemble: bool | None = None, dtype: str | None = None,
                 cast: str = "weights"):
        inf = opt.get("inference") or {}
        self.self_ensemble = bool(self_ensemble if self_ensemble is not None else inf.get("self_ensemble"))
        self.opt = opt
        self.device = pick_device(device or inf.get("device"), "--device" if device else "inference.device")
        name = dtype or inf.get("dtype") or "fp32"
        if name == "fp32" and bool(amp if amp is not None else inf.get("amp")) and self.device.type == "cuda":
            name, cast = "fp16", "autocast"   # what inference.amp always meant: fp16 autocast on CUDA
        self.dtype = resolve_dtype(name, self.device, "--dtype / inference.dtype")
        self.dtype_name = dtype_name(self.dtype)
        # oneDNN convolutions run fastest on NHWC tensors (LLFlow 400x600 on 2 threads: 28.2 s -> 21.8 s).
        self.memory_format = torch.channels_last if inf.get("channels_last", True) else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        if cast not in ("weights", "autocast"):
            raise ValueError(f"Enhancer cast must be 'weights' or 'autocast', got {cast!r}")
        if cast == "weights":
            cast_network(self.model, self.dtype)
        self.multiple = int(model.pad_multiple)
        # Smallest input the network takes (e.g. ZMAR's mask attention reflect-pads 1/8-scale features): smaller
        # images are padded up to it and cropped back, like any other padding.
        self.min_size = int(getattr(model, "min_size", 1))
        key = "--tile" if tile is not None else "inference.tile"
        tile = check_tile(tile if tile is not None else inf.get("tile"), key)
        self.tile = None if not tile else int(math.ceil(max(tile, self.min_size) / self.multiple) * self.multiple)
        ov = overlap if overlap is not None else inf.get("tile_overlap", 32)
        if ov is not None and (isinstance(ov, bool) or not isinstance(ov, int) or ov < 0):
            raise OptionError(f"inference.tile_overlap must be a number of pixels >= 0, got {ov!r}")
        self.overlap = int(math.ceil(int(ov) / self.multiple) * self.multiple) if ov else 0
        self.pad_mode = inf.get("pad_mode") or "reflect"
        self.prep_opt = {"log_low": input_is_log(opt), "concat_histeq": opt.get("concat_histeq"),
                         "histeq_as_input": opt.get("histeq_as_input")}

    def prepare(self, low: np.ndarray, aux_mask: np.ndarray | None = None):
        """uint8 HxWx3 -> (lq, aux) tensors (1xCxHpxWp) on the CPU, padded to the model multiple."""
        low_p = pad_image(low, self.multiple, self.pad_mode, self.min_size)
        low01 = torch.from_numpy(np.ascontiguousarray(low_p)).permute(2, 0, 1).float().div_(255.0)
        his01 = None
        if self.prep_opt["concat_histeq"] or self.prep_opt["histeq_as_input"]:
            his01 = torch.from_numpy(preprocess.histeq(low_p)).permute(2, 0, 1).float().div_(255.0)
        lq = preprocess.build_lq(low01, his01, self.prep_opt).unsqueeze(0)
        aux = None
        kind = self.model.aux_input
        if kind is not None:
            zm = None
            if aux_mask is not None:
                zm = pad_image(aux_mask, self.multiple, self.pad_mode, self.min_size)
            aux = preprocess.aux_input(low01, kind, zero_map=zm).unsqueeze(0)
        return lq, aux

    def _run(self, lq, aux, heat, generator=None):
        lq = lq.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        aux = aux.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format) \
            if aux is not None else None
        try:
            with autocast(self.device.type, self.dtype):
                out = self.model.enhance(lq, aux, heat=heat)
        except RuntimeError as e:  # torch.OutOfMemoryError (CUDA) or the CPU allocator's failure
            if not (isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)):
                raise
            h, w = lq.shape[-2:]
            tile = max(self.multiple, (min(h, w) // 2) // self.multiple * self.multiple)
            raise OutOfMemoryError(f"out of memory enhancing a {h}x{w} (padded HxW) input on {self.device}: run it in "
                                   f"tiles, e.g. --tile {min(self.tile or tile, tile)} (or inference.tile)") from None
        return out.float()

    def describe(self, heat: float) -> str:
        """How outputs are produced, for the protocol line next to every number."""
        tiles = f"tiles {self.tile} px, overlap {self.overlap}" if self.tile else "full frame"
        ens = "self-ensemble x8 (flips and transposes, averaged)" if self.self_ensemble else "no self-ensemble"
        return f"heat {heat:g}; {tiles}; {ens}; dtype {self.dtype_name}"

    @torch.inference_mode()
    def enhance_tensor(self, lq, aux=None, heat: float = 0.0) -> torch.Tensor:
        """Enhance padded tensors (1xCxHpxWp) -> CPU float 1x3xHpxWp (unclamped); with self-ensemble the mean of the
        8 flipped/transposed passes, each mapped back (preprocessing is invariant to these, so it is done once)."""
        if not self.self_ensemble:
            return self._enhance_frame(lq, aux, heat)
        acc = None
        for flip_h, flip_w, transpose in _DIHEDRAL:
            def fwd(t, fh=flip_h, fw=flip_w, tr=transpose):
                if t is None:
                    return None
                t = t.flip(-1) if fw else t
                t = t.flip(-2) if fh else t
                return t.transpose(-1, -2) if tr else t
            out = self._enhance_frame(fwd(lq), fwd(aux), heat)
            out = out.transpose(-1, -2) if transpose else out
            out = out.flip(-2) if flip_h else out
            out = out.flip(-1) if flip_w else out
            acc = out if acc is None else acc.add_(out)
        return acc.div_(len(_DIHEDRAL))

    def _enhance_frame(self, lq, aux=None, heat: float = 0.0) -> torch.Tensor:
        """One pass over a padded frame, tiled if configured."""
        _, _, h, w = lq.shape
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self._run(lq, aux, heat).cpu()
        out = torch.zeros(1, 3, h, w)
        wsum = torch.zeros(1, 1, h, w)
        th, tw = min(self.tile, h), min(self.tile, w)
        step_h = max(self.multiple, th - self.overlap)
        step_w = max(self.multiple, tw - self.overlap)
        ys, xs = _tile_starts(h, th, step_h), _tile_starts(w, tw, step_w)
        for y in ys:
            for x in xs:
                sl = (slice(None), slice(None), slice(y, y + th), slice(x, x + tw))
                res = self._run(lq[sl], None if aux is None else aux[sl], heat).cpu()
                wy = _ramp(th, min(self.overlap, th), y == 0, y + th >= h, "cpu")
                wx = _ramp(tw, min(self.overlap, tw), x == 0, x + tw >= w, "cpu")
                wt = (wy[:, None] * wx[None, :])[None, None]
                out[sl] += res * wt
                wsum[sl] += wt
                del res
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return out / wsum

    def __call__(self, low: np.ndarray, heat: float = 0.0, aux_mask: np.ndarray | None = None) -> np.ndarray:
        """Enhance one uint8 RGB image; returns float32 HxWx3 (raw network output, not clamped)."""
        h, w = low.shape[:2]
        lq, aux = self.prepare(low, aux_mask)
        out = self.enhance_tensor(lq, aux, heat)
        return out[0, :, :h, :w].permute(1, 2, 0).numpy()


def to_uint8(img: np.ndarray, rounding: str = "round") -> np.ndarray:
    """Clamp a float [0,1] image and quantise ('round', or 'truncate' as the official test scripts do)."""
    x = np.clip(img, 0.0, 1.0) * 255.0
    return (np.rint(x) if rounding == "round" else np.floor(x)).astype(np.uint8)
