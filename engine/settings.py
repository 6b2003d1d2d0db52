"""How a run executes, resolved once from the config's `inference` section and the command-line flags.

:func:`resolve_settings` turns device, compute dtype, tiles, torch.compile, memory layout and self-ensemble into one
frozen :class:`RunSettings`; the test scripts, the page and validation during training build it once and hand it to
:class:`engine.inference.Enhancer`, which only applies it. A bad value is an OptionError naming its flag or key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.precision import choose_dtype, dtype_name
from utils.devices import pick_device
from utils.errors import OptionError

GB = 1024 ** 3
CASTS = ("weights", "autocast")


@dataclass(frozen=True)
class RunSettings:
    """Resolved execution settings (no defaults left to look up).

    `cast`: 'weights' casts the network's weights to `dtype` once, 'autocast' runs autocast over float32 weights.
    `tile`: layer-wise tile size in pixels, None for automatic (by `max_memory`), 0 for never.
    `max_memory`: bytes an automatically tiled frame may use; None means "measure what is available" (the Enhancer
    measures it when it starts, so the weights it holds are counted).
    `dtype_reason`: why `dtype` was chosen when it was chosen automatically (``--dtype auto``), else None.
    """
    device: torch.device
    dtype: torch.dtype
    cast: str
    tile: int | None
    max_memory: float | None
    compile: bool
    memory_format: torch.memory_format
    self_ensemble: bool
    dtype_reason: str | None = None

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)


def resolve_settings(opt: dict, device=None, dtype: str | None = None, tile: int | None = None,
                     amp: bool | None = None, self_ensemble: bool | None = None, max_memory: float | None = None,
                     compile_encoder: bool | None = None, cast: str = "weights") -> RunSettings:
    """RunSettings from the arguments (flags; None: not given) over `opt['inference']` (the config)."""
    inf = opt.get("inference") or {}
    dev = pick_device(device or inf.get("device"), "--device" if device else "inference.device")
    compute, cast, reason = _compute_dtype(dtype or inf.get("dtype"), amp if amp is not None else inf.get("amp"), dev, cast)
    if cast not in CASTS:
        raise ValueError(f"Enhancer cast must be 'weights' or 'autocast', got {cast!r}")
    tile = tile if tile is not None else inf.get("tile")
    limit = max_memory if max_memory is not None else inf.get("max_memory")
    return RunSettings(
        device=dev, dtype=compute, cast=cast, dtype_reason=reason,
        tile=None if tile is None else _number(tile, int, "inference.tile / --tile", 16, allow_zero=True),
        max_memory=None if limit is None else _number(limit, float, "inference.max_memory", 0.0) * GB,
        compile=bool(compile_encoder if compile_encoder is not None else inf.get("compile")),
        # oneDNN convolutions run fastest on NHWC tensors (LLFlow 400x600 on 2 threads: 28.2 s -> 21.8 s).
        memory_format=torch.channels_last if inf.get("channels_last", True) else torch.contiguous_format,
        self_ensemble=bool(self_ensemble if self_ensemble is not None else inf.get("self_ensemble")))


def settings_from_args(opt: dict, args) -> RunSettings:
    """RunSettings for a test script's flags (engine.evaluate.add_test_args) over the config."""
    return resolve_settings(opt, device=args.device, tile=args.tile, dtype=getattr(args, "dtype", None),
                            self_ensemble=True if getattr(args, "self_ensemble", False) else None)


def _compute_dtype(name: str | None, amp, device: torch.device, cast: str) -> tuple[torch.dtype, str, str | None]:
    """(compute dtype, cast, reason) for a dtype name from `--dtype / inference.dtype`: the one dtype-resolution step.

    ``auto`` becomes a concrete dtype chosen from the device (the reason says why), which
    :func:`models.precision.choose_dtype` then checks against the device.
    """
    name = name or "fp32"
    if name == "fp32" and bool(amp) and device.type == "cuda":
        name, cast = "fp16", "autocast"   # what inference.amp always meant: fp16 autocast on CUDA
    compute, reason = choose_dtype(name, device, "--dtype / inference.dtype")
    return compute, cast, reason


def _number(value, kind, key: str, minimum, allow_zero: bool = False):
    """A config number (int pixels or float GB) checked against its minimum; an OptionError naming `key`."""
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and number != value):
            raise ValueError
    except (TypeError, ValueError):
        raise OptionError(f"{key}: expected a {'whole ' if kind is int else ''}number, got {value!r}") from None
    if not (number >= minimum and number > 0 or allow_zero and number == 0):
        least = (f"at least {minimum}" if minimum else "positive") + (", or 0 for none" if allow_zero else "")
        raise OptionError(f"{key}: {value!r} is too small (it must be {least})")
    return number
