"""Glow building blocks shared by every flow: ActNorm, the ActNorm'd conv of the coupling subnets, zero-init conv,
squeeze, and small tensor helpers. Parameter names follow the official LLFlow code so its checkpoints load."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...tiling.core import LOCAL, POINTWISE


def sum_chw(x: torch.Tensor) -> torch.Tensor:
    """Per-sample sum over all non-batch dimensions."""
    return x.flatten(1).sum(1)


def split_half(z: torch.Tensor):
    """Split channels into the first floor(C/2) and the rest (the coupling partition)."""
    c1 = z.shape[1] // 2
    return z[:, :c1], z[:, c1:]


def split_cross(h: torch.Tensor):
    """Split interleaved channels: even channels -> shift, odd channels -> raw scale."""
    return h[:, 0::2], h[:, 1::2]


class ActNorm2d(nn.Module):
    """Per-channel affine y = (x + bias) * exp(logs) with data-dependent initialisation.

    The first forward in training mode initialises bias/logs from the batch statistics, unless the bias is already
    non-zero (a loaded checkpoint): this keeps the official behaviour without adding a state-dict entry.
    """

    tiling = POINTWISE   # its data-dependent initialisation (statistics over the batch) runs in training only

    def __init__(self, num_features: int, scale: float = 1.0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = float(scale)
        self.inited = False

    @torch.no_grad()
    def initialize(self, x: torch.Tensor):
        if not self.training:
            return
        if bool((self.bias != 0).any()):
            self.inited = True
            return
        bias = -x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x + bias) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        logs = torch.log(self.scale / (var.sqrt() + 1e-6))
        self.bias.copy_(bias)
        self.logs.copy_(logs)
        self.inited = True

    def forward(self, x: torch.Tensor, logdet: torch.Tensor | None = None, reverse: bool = False):
        if not self.inited:
            self.initialize(x)
        if not reverse:
            x = (x + self.bias) * torch.exp(self.logs)
        else:
            x = x * torch.exp(-self.logs) - self.bias
        if logdet is not None:
            dlogdet = self.logs.sum() * (x.shape[2] * x.shape[3])
            logdet = logdet - dlogdet if reverse else logdet + dlogdet
        return x, logdet


class ActNormConv2d(nn.Conv2d):
    """Conv ('same' padding) followed by its own ActNorm, as the official `flow.Conv2d`.

    The ActNorm here normalises activations of a coupling subnet; it is not part of the flow's log-det.
    """

    tiling = LOCAL

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, do_actnorm: bool = True,
                 weight_std: float = 0.05):
        k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        super().__init__(in_channels, out_channels, k, padding=(k - 1) // 2, bias=not do_actnorm)
        with torch.no_grad():
            self.weight.normal_(0.0, weight_std)
            if self.bias is not None:
                self.bias.zero_()
        self.do_actnorm = do_actnorm
        if do_actnorm:
            self.actnorm = ActNorm2d(out_channels)

    def forward(self, x):
        x = super().forward(x)
        if self.do_actnorm:
            x, _ = self.actnorm(x)
        return x


class Conv2dZeros(nn.Conv2d):
    """Zero-initialised conv whose output is scaled by exp(3 * logs): couplings start as the identity."""

    tiling = LOCAL

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, logscale_factor: float = 3.0):
        k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        super().__init__(in_channels, out_channels, k, padding=(k - 1) // 2, bias=True)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()

    def forward(self, x):
        return super().forward(x) * torch.exp(self.logs * self.logscale_factor)


def squeeze2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Space-to-depth with the official channel order (output channel = c*f*f + i*f + j): F.pixel_unshuffle."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"squeeze by {factor} needs H and W divisible by {factor}, got {h}x{w}")
    return F.pixel_unshuffle(x, factor)


def unsqueeze2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Inverse of :func:`squeeze2d` (F.pixel_shuffle)."""
    return x if factor == 1 else F.pixel_shuffle(x, factor)


class SqueezeLayer(nn.Module):
    """Squeeze as a flow layer (log-det 0)."""

    tiling = LOCAL

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x, logdet=None, reverse: bool = False):
        return (unsqueeze2d(x, self.factor) if reverse else squeeze2d(x, self.factor)), logdet


def gaussian_logp(z: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample log N(z; mean, I) summed over C, H, W."""
    d = z if mean is None else z - mean
    return sum_chw(-0.5 * (d * d + 1.8378770664093453))  # ln(2*pi)


def affine_subnet(in_ch: int, out_ch: int, hidden: int, k_first: int = 3, k_hidden: int = 1, k_last: int = 3,
                  act: type[nn.Module] = nn.ReLU, extra: nn.Module | None = None) -> nn.Sequential:
    """The coupling subnetwork NN_F: ActNormConv -> act -> ActNormConv -> act -> [extra] -> Conv2dZeros.

    Indices (0, 2, [4,] last) match the official state-dict names.
    """
    layers = [ActNormConv2d(in_ch, hidden, k_first), act(), ActNormConv2d(hidden, hidden, k_hidden), act()]
    if extra is not None:
        layers.append(extra)
    layers.append(Conv2dZeros(hidden, out_ch, k_last))
    return nn.Sequential(*layers)
