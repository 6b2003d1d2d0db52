"""Running official code (a checkout outside the repository) in a subprocess of its own: shared by bench/ scripts.

Nothing of the checkout is copied or edited. The child process puts the checkout's code folder (and a side folder of
packages this project does not pin, e.g. einops/timm unpacked there) first on sys.path and drops this repository
from it (the official code has its own top-level `utils`, `models`, `options` packages), then applies the shims
below so that CUDA code runs on a CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def enter_official(code: str | Path, site: str | None = None) -> None:
    """sys.path: `site` and the official `code` folder first, this repository removed."""
    sys.path[:] = [p for p in (site, str(code)) if p] + [p for p in sys.path if Path(p or ".").resolve() != ROOT]


def cuda_shim(torch, keep_half_fp32: bool = False) -> None:
    """`.cuda()` returns the tensor/module unchanged; optionally `Module.half()` keeps float32 (GLTG-AFlow builds
    half-precision layers inside its forward, which ran under CUDA autocast)."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    if keep_half_fp32:
        torch.nn.Module.half = lambda self: self
