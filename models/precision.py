"""Reduced precision (bf16 / fp16): the dtype names, what stays float32, and the two ways to run a network.

Names: ``fp32``, ``bf16`` (CPU and CUDA), ``fp16`` (CUDA only; CPU fp16 kernels are missing or slower than fp32),
and ``auto`` (:func:`auto_dtype`: bf16 where the device has fast bf16, else fp32).

What stays float32 whatever the dtype (each place says why in a comment):

- the flow's state: the latent z, every log-determinant, the step-level ActNorm and the invertible 1x1 convolution
  with its inverse (errors there are not damped by anything downstream, and the inverse is a matrix inverse);
- the affine scales and the SAN/CSN maps (``sigmoid(.) + eps``): z is divided by them on the reverse pass;
- reductions over every pixel: the MDTA Gram matrix, the GLTG mask Gram and intra-patch attention, the ZMAR mask
  attention (bf16 keeps 8 bits of mantissa, so a sum over 10^5 pixels loses the small terms).

Everything else (the encoders and the coupling subnetworks, i.e. nearly all FLOPs) computes in the reduced dtype.

Two ways to run: ``'autocast'`` (float32 weights, ``torch.autocast``) and ``'weights'`` (weights cast once with
:func:`cast_network`, the float32 modules above excepted, and autocast still on so a float32 tensor meeting a bf16
weight is cast for it). Casting the weights also keeps element-wise work with parameters (ActNorm, LayerNorm,
biases, temperatures) in the reduced dtype instead of promoting it back to float32.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.devices import fast_bf16
from utils.errors import OptionError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CAST_MODES = ("weights", "autocast")
AUTO = "auto"
CHOICES = (*DTYPES, AUTO)     # what --dtype flags accept


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def auto_dtype(device: torch.device | str) -> tuple[str, str]:
    """(dtype name, reason) for ``auto``: bf16 where `device` computes it fast (a CUDA GPU with native bf16, a CPU
    with AMX, an AMD CPU with AVX512-BF16), else fp32. The reason names the check, for logs and the protocol line."""
    fast, why = fast_bf16(device)
    return ("bf16" if fast else "fp32"), f"auto: {why}"


def choose_dtype(name: str | None, device: torch.device | str,
                 key: str = "inference.dtype") -> tuple[torch.dtype, str | None]:
    """:func:`resolve_dtype` that also takes ``auto``: (dtype, reason for the automatic choice, else None)."""
    if name == AUTO:
        name, reason = auto_dtype(device)
        return resolve_dtype(name, device, key), reason
    return resolve_dtype(name, device, key), None


def resolve_dtype(name: str | None, device: torch.device | str, key: str = "inference.dtype") -> torch.dtype:
    """The torch dtype for `name` on `device`; an unknown name or fp16 on a CPU is an OptionError naming `key`.
    (``auto`` is resolved by :func:`choose_dtype`.)"""
    name = "fp32" if name in (None, "") else str(name)
    if name not in DTYPES:
        raise OptionError(f"{key}: '{name}' is not a dtype; choose one of {', '.join(DTYPES)}"
                          + (" (auto is for inference)" if name == AUTO else ""))
    if name == "fp16" and torch.device(device).type != "cuda":
        raise OptionError(f"{key}: fp16 needs a CUDA device (on the CPU use bf16)")
    return DTYPES[name]


def at_least_fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """`t` in float32 if it is a half type; float32/float64 tensors (and None) are returned unchanged."""
    return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t


def cat_for_conv(parts, dim: int = 1) -> torch.Tensor:
    """torch.cat of `parts` that a convolution reads next, under autocast in a reduced dtype: the float32 parts (the
    flow's state z) are cast to that dtype *before* concatenating. The convolution casts its input to the autocast
    dtype anyway, so the values are the same, but the reduced-dtype parts (the conditioning features) are no longer
    widened to float32 by the concatenation and narrowed again by the convolution (two full passes saved)."""
    dev = parts[0].device.type
    if torch.is_autocast_enabled(dev):
        low = torch.get_autocast_dtype(dev)
        if any(p.dtype == low for p in parts):
            parts = [p.to(low) if p.dtype == torch.float32 else p for p in parts]
    return torch.cat(parts, dim)


def keep_fp32(module: nn.Module) -> nn.Module:
    """Mark `module` as one whose weights :func:`cast_network` leaves in float32; returns it."""
    module.keep_fp32 = True
    return module


def cast_network(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast the floating-point weights of `net` to `dtype` in place, except inside modules marked with
    :func:`keep_fp32` (never rounded: casting them down and back up would lose their precision)."""
    if getattr(net, "keep_fp32", False):
        return net
    for name, p in net.named_parameters(recurse=False):
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    for name, b in net.named_buffers(recurse=False):
        if b is not None and b.is_floating_point():
            net._buffers[name] = b.to(dtype)
    for child in net.children():
        cast_network(child, dtype)
    return net


def autocast(device_type: str, dtype: torch.dtype):
    """torch.autocast for a reduced dtype; a no-op context for float32."""
    return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)


def fp32_region(t: torch.Tensor):
    """Autocast switched off on `t`'s device (the caller casts its inputs with :func:`at_least_fp32`)."""
    return torch.autocast(t.device.type, enabled=False)
