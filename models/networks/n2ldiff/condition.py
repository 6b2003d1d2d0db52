"""The 12-channel condition of N2LDiff's encoder: cat[image, histeq, colour map, noise map] (spec 8, 8.1).

The order is the one the official code really uses (its comments say otherwise). All inputs are float RGB
tensors Bx3xHxW in [0, 1].
"""
from __future__ import annotations

import torch


def histeq(img: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation as the official code does it: truncating uint8 cast of img*255,
    torchvision ``equalize`` (PIL's LUT: step = (N - count of the last non-empty bin) // 255), then / 255.

    Not data.preprocess.histeq: that is cv2.equalizeHist (LLFlow's), whose LUT rounds (cdf - cdf_min) * 255 /
    (N - cdf_min) and differs from PIL's by up to several levels, and it also rounds the input rather than
    truncating it.
    """
    from torchvision.transforms.functional import equalize   # here: torchvision's import is heavy (lewin._drop_path)
    x = (img * 255).to(torch.uint8)
    return equalize(x).to(img.dtype) / 255.0


def colour_map(img: torch.Tensor) -> torch.Tensor:
    """clamp(img / (mean over channels + 1e-8) / 3, 0, 1)."""
    return (img / (img.mean(dim=1, keepdim=True) + 1e-8) / 3).clamp(0, 1)


def noise_map(x: torch.Tensor) -> torch.Tensor:
    """max(|dy|, |dx|) with forward differences and a zero last row / column (torchmetrics image_gradients)."""
    dy = torch.zeros_like(x)
    dx = torch.zeros_like(x)
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.maximum(dy.abs(), dx.abs())


def condition_tensor(img: torch.Tensor) -> torch.Tensor:
    """The encoder input: cat[img, histeq(img), c, noise_map(c)] with c = colour_map(img) (12 channels)."""
    c = colour_map(img)
    return torch.cat([img, histeq(img), c, noise_map(c)], dim=1)
