"""Invertible 1x1 convolution (Glow), with the inverse cached while the weight is unchanged."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...precision import at_least_fp32, fp32_region
from ...tiling.core import POINTWISE


class InvertibleConv1x1(nn.Module):
    """y = W x per pixel; log-det = H*W*log|det W|. Weight shape (C, C) as in official checkpoints.

    Always float32 (models/precision.py), also under bf16/fp16: its inverse is a matrix inverse applied to the flow's
    state z, and a rounding error here is carried unchanged through every later step of the reverse pass.
    """

    tiling = POINTWISE

    keep_fp32 = True

    def __init__(self, num_channels: int, generator: torch.Generator | None = None):
        super().__init__()
        # A random rotation; the torch RNG keeps it reproducible under train.manual_seed (and avoids BLAS threads).
        a = torch.randn(num_channels, num_channels, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter(torch.linalg.qr(a)[0].float())
        self._cache_key = None
        self._cache = None

    def _inverse_and_logdet(self):
        # Recomputing inv/slogdet per call dominated small-image inference; reuse them until the weight changes.
        w = self.weight
        key = (w._version, w.data_ptr(), w.device, w.dtype)
        if self._cache_key != key or torch.is_grad_enabled():
            wd = w.double()
            inv = torch.inverse(wd).to(w.dtype)
            logabsdet = torch.linalg.slogdet(wd)[1].to(w.dtype)
            if torch.is_grad_enabled():
                return inv, logabsdet
            self._cache_key, self._cache = key, (inv, logabsdet)
        return self._cache

    def forward(self, x, logdet=None, reverse: bool = False):
        with fp32_region(x):    # float32 under autocast too (see the class docstring)
            return self._forward(at_least_fp32(x), logdet, reverse)

    def _forward(self, x, logdet, reverse: bool):
        c = self.weight.shape[0]
        hw = x.shape[2] * x.shape[3]
        if not reverse:
            y = F.conv2d(x, self.weight.view(c, c, 1, 1))
            if logdet is not None:
                logdet = logdet + torch.linalg.slogdet(self.weight)[1] * hw
            return y, logdet
        inv, logabsdet = self._inverse_and_logdet()
        y = F.conv2d(x, inv.view(c, c, 1, 1))
        if logdet is not None:
            logdet = logdet - logabsdet * hw
        return y, logdet
