"""Turning a device name from a flag or config key into a torch.device that exists on this machine."""
from __future__ import annotations

import torch

from .errors import OptionError


def pick_device(name: str | None = "auto", key: str = "--device") -> torch.device:
    """'auto' (or None) -> CUDA if available, else CPU; otherwise the named device, checked to exist here.

    A malformed name, CUDA on a machine without it, or `cuda:N` beyond the device count is an OptionError
    naming `key`.
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise OptionError(f"{key}: '{name}' is not a device name (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OptionError(f"{key}: '{name}' asked for, but CUDA is not available on this machine "
                              f"(use cpu or auto)")
        if dev.index is not None and dev.index >= count:
            raise OptionError(f"{key}: '{name}' does not exist; this machine has {count} CUDA device(s) "
                              f"(cuda:0 to cuda:{count - 1})")
        return dev
    try:  # other back ends (mps, xpu, ...): one allocation tells whether they work here
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise OptionError(f"{key}: device '{name}' cannot be used here ({str(e).splitlines()[0]})") from None
    return dev
