"""Process-wide runtime settings for the command-line tools (applied once, at start-up).

Why the allocator matters: PyTorch's CPU tensors come from glibc malloc, which serves every block over 32 MiB
with a fresh ``mmap`` and unmaps it on free. A full-resolution feature map (96-510 channels x 400x600) is
90-490 MB, so every intermediate of a full-size encoder is new memory that the kernel must fault in and zero
page by page: measured on UPT-Flow at 400x600, 9 million page faults and about half of the 27 s inference.
Telling glibc to serve large blocks from its heap and to keep freed memory lets the next tensor reuse the pages
(UPT-Flow 22.6 s -> 12-13.5 s, 1 page fault per image). The cost: freed memory stays with the process until it
exits, and heap fragmentation can raise the peak RSS (UPT-Flow 3.2 -> 4.2 GB; bench/bench_model.py measures both).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1   # from <malloc.h>
_M_MMAP_MAX = -4
OPT_OUT_ENV = "LOWLIGHT_SYSTEM_MALLOC"
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed large blocks instead of unmapping them (see the module docstring).

    Returns True when the setting is in effect. Does nothing (False) on other C libraries and platforms, or when
    the environment variable LOWLIGHT_SYSTEM_MALLOC=1 asks for the system default. Idempotent.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(OPT_OUT_ENV, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # Both calls return 1 on success. The trim threshold is the largest int: freed heap tops are not returned.
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _applied


def available_memory_bytes() -> int | None:
    """Memory the system can give this process without swapping (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
