"""Differentiable SSIM with an 11x11 Gaussian window (sigma 1.5), per channel, averaged (the `pytorch_ssim` recipe).

Boundary convention: the local statistics are Gaussian-weighted sums over a zero-padded image (padding 5), and the
SSIM map is averaged over every pixel, border included; this is what DRBN's training loss used. Away from the border
(5 pixels) the map equals skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian taps centred on size // 2."""
    g = torch.tensor([math.exp(-((i - size // 2) ** 2) / (2 * sigma ** 2)) for i in range(size)], dtype=torch.float64)
    return (g / g.sum()).float()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable zero-padded Gaussian filter of every channel (the 2-D window is the outer product of `taps`)."""
    c, k = x.shape[1], taps.numel()
    kv = taps.to(x.dtype).view(1, 1, k, 1).expand(c, 1, k, 1)
    x = F.conv2d(x, kv, padding=(k // 2, 0), groups=c)
    return F.conv2d(x, kv.transpose(2, 3), padding=(0, k // 2), groups=c)


def ssim_map(x: torch.Tensor, y: torch.Tensor, taps: torch.Tensor | None = None, c1: float = 1e-4,
             c2: float = 9e-4) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of N x C x H x W images in [0, 1] (same shape as the inputs)."""
    if taps is None:
        taps = gaussian_1d()
    n = x.shape[0]
    # one filter call for the five local moments
    mom = _blur(torch.cat((x, y, x * x, y * y, x * y), 0), taps.to(x.device))
    mx, my, mxx, myy, mxy = mom.split(n, 0)
    mx2, my2, mxmy = mx * mx, my * my, mx * my
    vx, vy, cxy = mxx - mx2, myy - my2, mxy - mxmy
    return ((2 * mxmy + c1) * (2 * cxy + c2)) / ((mx2 + my2 + c1) * (vx + vy + c2))


class SSIM(nn.Module):
    """Mean SSIM (a similarity: the DRBN losses use its negative). `window`, `sigma`, `c1`, `c2` as in the paper."""

    def __init__(self, window: int = 11, sigma: float = 1.5, c1: float = 1e-4, c2: float = 9e-4):
        super().__init__()
        self.register_buffer("taps", gaussian_1d(window, sigma), persistent=False)
        self.c1, self.c2 = c1, c2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim_map(x, y, self.taps, self.c1, self.c2).mean()
