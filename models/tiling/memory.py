"""Peak-memory estimates of the flow generators, full frame and under layer-wise tiles (for automatic tiling).

The numbers are measured, not derived: peak RSS of one inference (bench/bench_large.py --calibrate, official
configs, random weights, float32, glibc keeping freed memory), minus the RSS before it, at two image sizes; the
per-pixel slope is what is stored. Under tiled execution the peak is the full-size maps that live at once (the
U-Net's skip connections, a block's input and output, the flow's conditioning) plus one tile's intermediates:
``live * pixels + per_tile * tile**2``.

Every family has float32 figures; a 2-byte compute dtype (bf16, fp16) halves them, except where half-precision
figures were measured because halving misleads: under bf16 the flow's state and the reductions stay float32
(models/precision.py), and for UPT-Flow at 3840x2160 the halved figures gave 11.3 GB against 19.2 GB measured.
Other encoder widths scale the estimate linearly (activations are linear in the channel count), an approximation
for a decision that only needs the right order of magnitude.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Footprint:
    full: float        # bytes per input pixel, full frame
    live: float        # bytes per input pixel of the maps alive under tiled execution
    per_tile: float    # bytes per tile pixel of one tile's intermediates
    width: int         # encoder width (dim, or nf for the RRDB encoder) the numbers were measured at


# Measured with bench/bench_large.py --calibrate (official configs, float32, 2 threads; sizes 288x192 and 432x288
# full frame, 864x576 with tiles of 96 and 192; ZMAR's and UPT's live figures re-measured at 864x576, tiles of 192,
# after the FFN passes went in place; docs/performance.md "Large images"). LLFlow's peak is the encoder's output dict
# (the RRDB taps concatenated onto every level), which tiles do not shrink: its live figure equals its full one, and
# its per-tile figure is an estimate (the dense blocks' 192-channel crops; both tile sizes measured the same peak).
FOOTPRINTS = {
    "ConEncoder1": Footprint(full=2600.0, live=2600.0, per_tile=1000.0, width=64),
    "GLTGRestormer": Footprint(full=13000.0, live=1340.0, per_tile=22500.0, width=48),
    "ZMARRestormer": Footprint(full=7500.0, live=1600.0, per_tile=15200.0, width=48),
    "MSFormer": Footprint(full=19100.0, live=2900.0, per_tile=14500.0, width=48),
}
# 2-byte compute dtypes (bf16; fp16 on CUDA), where measured: UPT-Flow keeps much of its live memory in float32, so
# its half-precision figures are not the float32 ones halved. full: --calibrate --dtype bf16 (384x256 and 576x384);
# live: a 3840x2160 bf16 run with tiles of 128 (19.21 GB peak, 0.87 GB before the call), less one tile's
# intermediates, taken as the float32 per-tile figure halved (calibration at 1152x768 could not resolve it).
# Families not listed use their float32 figures halved, which the 3840x2160 bf16 runs bore out or overestimated
# (docs/performance.md "Large images").
HALF_FOOTPRINTS = {
    "MSFormer": Footprint(full=6200.0, live=2360.0, per_tile=7250.0, width=48),
}
MIN_TILE = 128


def _encoder(network):
    return getattr(network, "RRDB", None)


def footprint(network, dtype: torch.dtype = torch.float32) -> Footprint | None:
    """The network's footprint scaled to its encoder width and ``dtype``; None for networks without one."""
    enc = _encoder(network)
    name = type(enc).__name__ if enc is not None else None
    fp = FOOTPRINTS.get(name)
    if fp is None:
        return None
    size = torch.empty((), dtype=dtype).element_size()
    scale = size / 4
    if size == 2 and name in HALF_FOOTPRINTS:
        fp, scale = HALF_FOOTPRINTS[name], 1.0
    width = getattr(enc, "dim", None) or enc.conv_first.out_channels
    scale *= width / fp.width
    return Footprint(fp.full * scale, fp.live * scale, fp.per_tile * scale, width)


def estimate_peak_bytes(network, h: int, w: int, tile: int | None = None,
                        dtype: torch.dtype = torch.float32) -> float | None:
    """Estimated peak memory of one enhancement of an h x w frame (full frame, or tiles of ``tile`` pixels)."""
    fp = footprint(network, dtype)
    if fp is None:
        return None
    if not tile or (h <= tile and w <= tile):
        return fp.full * h * w
    return fp.live * h * w + fp.per_tile * tile * tile


def tile_for_budget(network, h: int, w: int, budget: float, dtype: torch.dtype = torch.float32) -> int | None:
    """None when the full frame fits in ``budget`` bytes, when tiles would not lower the estimate, or when nothing
    is known about the network; otherwise the largest tile whose estimate fits (at least MIN_TILE: below it the
    halos cost more than the tiles save)."""
    fp = footprint(network, dtype)
    if fp is None or fp.full * h * w <= budget:
        return None
    spare = budget - fp.live * h * w
    tile = max(MIN_TILE, int(math.sqrt(spare / fp.per_tile)) if spare > 0 else 0)
    if tile >= max(h, w) or fp.live * h * w + fp.per_tile * tile * tile >= fp.full * h * w:
        return None
    return tile
