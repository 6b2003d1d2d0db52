"""Turning a device name from a flag or config key into a torch.device that exists on this machine, and whether
that device computes bf16 faster than float32."""
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


CPUINFO = "/proc/cpuinfo"


def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (vendor_id, flags, ...); empty where there is no such file."""
    info = {}
    try:
        with open(CPUINFO) as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def fast_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(whether `device` runs bf16 faster than float32, the reason in a few words).

    CUDA: the GPU's native bf16 support (Ampere and later). CPU: the AMX matrix units (flag ``amx_bf16``), or an
    AMD CPU with AVX512-BF16 (Zen 4 and later). Measured at 400x600 on 2 threads: on an AMD EPYC (Zen 5) bf16 took
    0.52-0.77x the fp32 time; on an Intel CPU with AVX512-BF16 but no AMX, 1.2-1.7x (docs/precision-and-threads.md).
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:       # torch builds without the keyword
            ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return ok, f"{name} {'has' if ok else 'lacks'} native bf16"
    if device.type == "cpu":
        info = cpu_info()
        flags = set(info.get("flags", "").split())
        if "amx_bf16" in flags:
            return True, "CPU has AMX (amx_bf16)"
        if info.get("vendor_id") == "AuthenticAMD" and "avx512_bf16" in flags:
            return True, "AMD CPU with AVX512-BF16"
        return False, "CPU without AMX (no amx_bf16)"
    return False, f"no bf16 check for {device.type} devices"
