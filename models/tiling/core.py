"""Layer-wise tiled execution: the driver (tile windows, halo crops, the context manager) and the tiling contract.

A network runs its own forward unchanged; inside :func:`tiled_execution`, every submodule whose class defines
``tiled_forward(plan, *args)`` (contract TILED, below) runs that instead of its ``forward``. These methods compute
the same function as the module, on full-size input and output maps, but evaluate it tile by tile, so the large
intermediates inside a block (a GDFN's 5.3x-wide hidden map, an RRDB's dense concatenations, a coupling's subnet
activations) only ever exist for one tile. Each tile is cropped with a halo equal to the block's receptive-field
radius (derived from its convolutions' padding, see :func:`conv_reach`), so the tile's core is computed exactly;
operations that sum over the whole map (channel attention, pooling) gather their statistics from the tile cores
first and are then applied with the gathered values. The result equals the full-frame output up to the order of
floating-point sums.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn

# The tiling contract. Every nn.Module class a network is built from declares, as its class attribute ``tiling``,
# how layer-wise tiles treat it (tests/test_tiling_contract.py walks every registered network and fails on a
# class without a declaration, so a new block cannot slip past the tiles unnoticed):
POINTWISE = "pointwise"  # each output pixel depends on the same input pixel only (1x1 convs, activations, norms)
LOCAL = "local"          # reaches conv_reach(module) pixels around each output pixel, no reduction over the map
TILED = "tiled"          # reduces over the whole map (or is worth tiling for memory): runs its own
                         # tiled_forward(plan, *args) inside tiled_execution, built from the same steps as its
                         # forward (local work -> whole-map sums -> apply)
IN_TILED = "in-tiled"    # reduces over the whole map, and an enclosing TILED block tiles it through its steps
FRAME = "frame"          # runs its forward on the whole frame under tiles too: a skeleton composing other modules
                         # (encoder, flow, generator), whose own reductions are exact and over small maps only
CONTRACTS = (POINTWISE, LOCAL, TILED, IN_TILED, FRAME)

# torch.nn classes the networks use, with their contracts.
TORCH_CONTRACTS: dict[type, str] = {
    nn.Conv2d: LOCAL, nn.Conv1d: POINTWISE,   # Conv1d: ECA's conv across channels of a pooled vector
    nn.Linear: POINTWISE, nn.LayerNorm: POINTWISE, nn.Identity: POINTWISE, nn.Dropout: POINTWISE,
    nn.ReLU: POINTWISE, nn.LeakyReLU: POINTWISE, nn.GELU: POINTWISE, nn.Sigmoid: POINTWISE, nn.Tanh: POINTWISE,
    nn.PReLU: POINTWISE, nn.Softmax: POINTWISE,
    nn.PixelShuffle: LOCAL, nn.PixelUnshuffle: LOCAL, nn.Upsample: LOCAL, nn.ConvTranspose2d: LOCAL,
    nn.AvgPool2d: LOCAL, nn.MaxPool2d: LOCAL,
    nn.Flatten: POINTWISE, nn.Sequential: FRAME, nn.ModuleList: FRAME, nn.ModuleDict: FRAME,
}
# Classes of optional packages, by qualified name (imported only where used).
NAMED_CONTRACTS = {"torchvision.ops.stochastic_depth.StochasticDepth": POINTWISE}   # per-sample, training only


def tiling_contract(cls: type) -> str | None:
    """The contract ``cls`` declares itself (not inherited from a project base class: a subclass that changes
    forward may add a reduction), or its entry in TORCH_CONTRACTS; None when it declares none."""
    if cls in TORCH_CONTRACTS:
        return TORCH_CONTRACTS[cls]
    return NAMED_CONTRACTS.get(f"{cls.__module__}.{cls.__qualname__}", cls.__dict__.get("tiling"))


def has_tiled_forward(module: nn.Module) -> bool:
    """True when tiled_execution runs ``module``'s tiled_forward instead of its forward."""
    return callable(getattr(type(module), "tiled_forward", None))


def tiled_local(module: nn.Module, plan: "TilePlan", *maps: torch.Tensor) -> torch.Tensor:
    """A LOCAL module's tiled forward: its own forward on haloed crops of same-size NCHW maps (the halo its
    convolutions reach), each crop's core kept; a map no larger than a tile runs whole."""
    forward = type(module).forward
    if plan.fits(*maps[0].shape[-2:]):
        return forward(module, *maps)
    return map_tiles(lambda *crops: forward(module, *crops), list(maps), plan, conv_reach(module))


def conv_reach(*modules: nn.Module) -> int:
    """Receptive-field radius, in pixels, of the stride-1 convolutions inside ``modules`` applied one after another:
    the sum of their (dilated) paddings. Every 'same' convolution of the networks here pads by its radius."""
    reach = 0
    for mod in modules:
        for m in mod.modules():
            if isinstance(m, nn.Conv2d):
                if m.stride != (1, 1):
                    raise ValueError(f"conv_reach: {m} is strided; tiled execution expects stride-1 convolutions")
                reach += max(int(p) * int(d) for p, d in zip(m.padding, m.dilation))
    return reach


def spans(n: int, size: int) -> list[tuple[int, int]]:
    """[0, n) cut into ceil(n / size) consecutive parts of near-equal length (each at most ``size``)."""
    parts = max(1, math.ceil(n / max(1, size)))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def crop_span(start: int, stop: int, halo: int, size: int, n: int) -> tuple[int, int]:
    """The crop around the core [start, stop) of an axis of length n: ``size`` long (clipped to n), at least
    ``halo`` beyond the core on each side that is not the border, shifted inwards at the borders. Every crop of a
    map thus has the same shape: oneDNN builds (and caches) one kernel per shape, and a first call at a new size
    would otherwise pay for several per layer."""
    size = min(n, max(size, stop - start + 2 * halo))
    lo = min(max(0, start - halo), n - size)
    return lo, lo + size


@dataclass(frozen=True)
class Window:
    """A tile: its core rows [y0, y1) and columns [x0, x1) in the map, and the crop [cy0, cy1) x [cx0, cx1) around
    it (the core plus at least the halo, within the map)."""
    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int

    @property
    def core(self) -> tuple:
        """Index of the core in the map (..., rows, cols)."""
        return (..., slice(self.y0, self.y1), slice(self.x0, self.x1))

    @property
    def crop(self) -> tuple:
        """Index of the haloed crop in the map."""
        return (..., slice(self.cy0, self.cy1), slice(self.cx0, self.cx1))

    @property
    def core_in_crop(self) -> tuple:
        """Index of the core inside the crop."""
        return (..., slice(self.y0 - self.cy0, self.y1 - self.cy0), slice(self.x0 - self.cx0, self.x1 - self.cx0))


@dataclass(frozen=True)
class TilePlan:
    """Tile size, in pixels of the map being processed (every level of a U-Net is cut with the same size)."""
    tile: int

    def fits(self, h: int, w: int) -> bool:
        """True when a map is no larger than one tile: then the module's own forward runs on it."""
        return h <= self.tile and w <= self.tile

    def windows(self, h: int, w: int, halo: int = 0) -> Iterator[Window]:
        rows, cols = spans(h, self.tile), spans(w, self.tile)
        size_h = max(b - a for a, b in rows) + 2 * halo
        size_w = max(b - a for a, b in cols) + 2 * halo
        for y0, y1 in rows:
            cy = crop_span(y0, y1, halo, size_h, h)
            for x0, x1 in cols:
                yield Window(y0, y1, x0, x1, *cy, *crop_span(x0, x1, halo, size_w, w))


def empty_map(like: torch.Tensor, channels: int, h: int, w: int, dtype=None) -> torch.Tensor:
    """An uninitialised (B, channels, h, w) map with ``like``'s batch, device and memory format."""
    cl = like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    return torch.empty(like.shape[0], channels, h, w, dtype=dtype or like.dtype, device=like.device,
                       memory_format=torch.channels_last if cl else torch.contiguous_format)


def map_tiles(fn: Callable, inputs: list[torch.Tensor], plan: TilePlan, halo: int) -> torch.Tensor:
    """fn(*crops) evaluated tile by tile over same-size NCHW maps; returns the full output map (fn must keep the
    spatial size of its input and reach no further than ``halo`` pixels)."""
    h, w = inputs[0].shape[-2:]
    out = None
    for win in plan.windows(h, w, halo):
        res = fn(*[t[win.crop] for t in inputs])[win.core_in_crop]
        if out is None:
            out = empty_map(res, res.shape[1], h, w)
        out[win.core] = res
        del res
    return out


def map_tiles_inplace(fn: Callable, x: torch.Tensor, plan: TilePlan, halo: int) -> torch.Tensor:
    """x <- fn(x) tile by tile, in x's own memory (the caller must own x; fn as for :func:`map_tiles`, with as many
    output channels as input channels). A tile row's results are written back once the next tile row has read
    its halo from them, so only one tile row of results is held instead of a second full map."""
    h, w = x.shape[-2:]
    rows = spans(h, plan.tile)
    if len(rows) > 1 and min(b - a for a, b in rows) <= 2 * halo + 1:
        return map_tiles(fn, [x], plan, halo)      # rows too thin for one row of delay: a separate output
    pending = None
    windows = list(plan.windows(h, w, halo))
    for (y0, y1) in rows:
        band = None
        for win in (v for v in windows if v.y0 == y0):
            res = fn(x[win.crop])[win.core_in_crop]
            if band is None:
                band = empty_map(res, res.shape[1], y1 - y0, w)
            band[..., win.x0:win.x1] = res
            del res
        if pending is not None:
            x[..., pending[0]:pending[0] + pending[1].shape[-2], :] = pending[1]
        pending = (y0, band)
    x[..., pending[0]:pending[0] + pending[1].shape[-2], :] = pending[1]
    return x


class _Installed:
    """Bookkeeping of the instance-level forwards installed by :func:`tiled_execution`."""

    def __init__(self):
        self.modules: list[nn.Module] = []
        self.compiled: list[tuple[nn.Module, object]] = []

    def install(self, model: nn.Module, plan: TilePlan):
        for m in model.modules():
            impl = getattr(type(m), "tiled_forward", None)
            if impl is not None and "forward" not in m.__dict__:
                m.forward = functools.partial(impl, m, plan)
                self.modules.append(m)
            # a module compiled with nn.Module.compile runs eagerly here: tracing the tile loops would build a
            # graph per tile layout
            if getattr(m, "_compiled_call_impl", None) is not None:
                self.compiled.append((m, m._compiled_call_impl))
                m._compiled_call_impl = None

    def remove(self):
        for m in self.modules:
            del m.__dict__["forward"]
        for m, impl in self.compiled:
            m._compiled_call_impl = impl
        self.modules.clear()
        self.compiled.clear()


@contextlib.contextmanager
def tiled_execution(model: nn.Module, tile: int | None):
    """Within the block, ``model`` runs with layer-wise tiles of ``tile`` pixels (a no-op for None or 0).

    Inference only (no autograd): the coupling log-determinants are not computed and come back as NaN (the
    enhancement discards them).
    """
    if not tile:
        yield model
        return
    if torch.is_grad_enabled():
        raise RuntimeError("tiled execution is for inference: run it under torch.inference_mode() or no_grad()")
    if int(tile) < 16:
        raise ValueError(f"tile size {tile} is too small (at least 16 pixels)")
    installed = _Installed()
    installed.install(model, TilePlan(int(tile)))
    try:
        yield model
    finally:
        installed.remove()


def local_residual(fn: Callable, x: torch.Tensor, halo: int, plan: TilePlan) -> torch.Tensor:
    """x + fn(x) tile by tile, for a local fn reaching ``halo`` pixels, in x's memory (x must be a map the caller
    made, never a block's input)."""
    return map_tiles_inplace(lambda t: t + fn(t), x, plan, halo)


def nan_logdet(logdet: torch.Tensor | None) -> torch.Tensor | None:
    """The log-determinant a tiled coupling returns: NaN (a sum over pixels the enhancement never reads)."""
    return None if logdet is None else torch.full_like(logdet, float("nan"))
