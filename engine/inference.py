"""Inference plumbing in one place: device choice, padding to what the model needs, tiling, and the enhance call.

Images are padded (reflect, bottom/right) to the model's multiple *before* preprocessing, so histogram equalisation
and auxiliary maps see exactly the pixels the network sees; the output is cropped back to the input size.
Tiles are layer-wise (models/tiling): the network runs its own forward on the whole frame and each block inside it
works tile by tile, gathering whole-image statistics (channel attention, pooling) before applying them, so tiled
output equals full-frame output up to float rounding. A frame whose estimated peak memory exceeds
`inference.max_memory` is tiled automatically.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from data import preprocess
from models.tiling import tiled_execution
from models.tiling.memory import estimate_peak_bytes, tile_for_budget
from models.precision import autocast, cast_network
from utils.devices import pick_device  # noqa: F401  (re-exported: the one place device names are checked)
from utils.errors import OptionError, OutOfMemoryError
from utils.runtime import available_memory_bytes
from .settings import GB, RunSettings, resolve_settings

log = logging.getLogger(__name__)
# Share of the memory available at start-up that an automatically tiled frame may use (the rest: other processes,
# the allocator's slack, the input and output images).
AUTO_MEMORY_FRACTION = 0.5


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


# (flip rows, flip columns, transpose): the 8 symmetries of the square, for self-ensemble.
_DIHEDRAL = [(fh, fw, tr) for tr in (False, True) for fh in (False, True) for fw in (False, True)]


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

    `opt` is the resolved options dict (its `inference` section gives tile/max_memory/device/dtype defaults).
    `tile`: layer-wise tile size in pixels (None: automatic, by `max_memory`; 0: never tile).
    `dtype` ('fp32', 'bf16', 'fp16', 'auto'; default `inference.dtype`): the network's compute dtype
    (models/precision.py; 'auto': bf16 where the device has fast bf16, else fp32, the reason in :meth:`describe`);
    a reduced dtype casts the weights once (`cast='weights'`, the float32 parts excepted) or runs autocast over
    float32 weights (`cast='autocast'`). The legacy `inference.amp: true` means fp16 on CUDA.
    These arguments are resolved by :func:`engine.settings.resolve_settings`; a caller that already holds the
    resolved :class:`engine.settings.RunSettings` passes `settings` instead (the other arguments are then unused).
    """

    def __init__(self, model, opt: dict, device=None, tile: int | None = None, amp: bool | None = None,
                 self_ensemble: bool | None = None, max_memory: float | None = None,
                 compile_encoder: bool | None = None, dtype: str | None = None, cast: str = "weights",
                 settings: RunSettings | None = None):
        inf = opt.get("inference") or {}
        if settings is None:
            settings = resolve_settings(opt, device=device, dtype=dtype, tile=tile, amp=amp,
                                        self_ensemble=self_ensemble, max_memory=max_memory,
                                        compile_encoder=compile_encoder, cast=cast)
        self.settings = settings
        self.self_ensemble = settings.self_ensemble
        self.opt = opt
        self.device = settings.device
        self.dtype = settings.dtype
        self.dtype_name = settings.dtype_name
        self.dtype_reason = settings.dtype_reason
        self.memory_format = settings.memory_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        if settings.cast == "weights":
            cast_network(self.model, self.dtype)
        self.multiple = int(model.pad_multiple)
        # Smallest input the network takes (e.g. ZMAR's mask attention reflect-pads 1/8-scale features): smaller
        # images are padded up to it and cropped back, like any other padding.
        self.min_size = int(getattr(model, "min_size", 1))
        self.tile = settings.tile
        self.max_memory = settings.max_memory if settings.max_memory is not None else self._default_budget()
        self.compiled = settings.compile
        if self.compiled:
            # inductor: kernels for each new input size are built on its first call (minutes on a CPU); tiled
            # frames run eagerly (models/tiling switches compiled modules off inside tiled execution)
            for m in (model.compile_targets() if hasattr(model, "compile_targets") else [model]):
                m.compile(dynamic=False)
        self.pad_mode = inf.get("pad_mode") or "reflect"
        self.prep_opt = {"log_low": input_is_log(opt), "concat_histeq": opt.get("concat_histeq"),
                         "histeq_as_input": opt.get("histeq_as_input")}

    def _default_budget(self) -> float | None:
        """Half of the memory available now: free CUDA memory on a GPU, MemAvailable on the CPU."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return AUTO_MEMORY_FRACTION * free
        avail = available_memory_bytes()
        return None if avail is None else AUTO_MEMORY_FRACTION * avail

    def tile_for(self, h: int, w: int) -> int | None:
        """The layer-wise tile size for a padded h x w frame: the configured one, else automatic."""
        if self.tile is not None:
            return self.tile or None
        if self.max_memory is None:
            return None
        dtype = getattr(self, "dtype", torch.float32)       # the compute dtype where the network has one
        full = estimate_peak_bytes(self.model, h, w, None, dtype)
        if full is None or full <= self.max_memory:
            return None
        tile = tile_for_budget(self.model, h, w, self.max_memory, dtype)
        peak = full if tile is None else estimate_peak_bytes(self.model, h, w, tile, dtype)
        if tile is not None:
            log.info("%dx%d frame: estimated %.1f GB full frame > max_memory %.1f GB; layer-wise tiles of %d px "
                     "(estimated %.1f GB)", h, w, full / GB, self.max_memory / GB, tile, peak / GB)
        if peak > self.max_memory:
            log.warning("%dx%d frame: estimated %.1f GB%s > max_memory %.1f GB (the full-size maps that live at "
                        "once)", h, w, peak / GB, "" if tile is None else " even with tiles", self.max_memory / GB)
        return tile

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
        if self.tile:
            tiles = f"layer-wise tiles {self.tile} px (exact)"
        elif self.tile is None and self.max_memory is not None:
            tiles = f"full frame (layer-wise tiles, exact, above {self.max_memory / GB:.1f} GB estimated)"
        else:
            tiles = "full frame"
        ens = "self-ensemble x8 (flips and transposes, averaged)" if self.self_ensemble else "no self-ensemble"
        dtype = f"dtype {self.dtype_name}" + (f" ({self.dtype_reason})" if self.dtype_reason else "")
        return f"heat {heat:g}; {tiles}; {ens}; {dtype}" + ("; torch.compile" if self.compiled else "")

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
        """One pass over a padded frame, with layer-wise tiles when configured or needed."""
        with tiled_execution(self.model, self.tile_for(*lq.shape[-2:])):
            return self._run(lq, aux, heat).cpu()

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
