"""Least-squares GAN losses with noisy labels (DRBN stage 2: real ~ U[0.7, 1.2], fake ~ U[0, 0.3])."""
from __future__ import annotations

import torch
import torch.nn.functional as F

REAL_RANGE = (0.7, 1.2)
FAKE_RANGE = (0.0, 0.3)


def noisy_labels(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Uniform labels in [low, high) shaped like the discriminator output `like`."""
    return torch.rand_like(like) * (high - low) + low


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """MSE of real scores to U[0.7, 1.2] labels plus MSE of fake scores to U[0, 0.3] labels."""
    return (F.mse_loss(d_real, noisy_labels(d_real, *REAL_RANGE))
            + F.mse_loss(d_fake, noisy_labels(d_fake, *FAKE_RANGE)))


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """MSE of the generator's scores to 1."""
    return F.mse_loss(d_fake, torch.ones_like(d_fake))
