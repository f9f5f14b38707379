"""Keep glibc from returning large NumPy temporaries to the kernel after every step.

A training step allocates and frees many arrays of a few MiB (im2col patches, layer
maps). glibc serves allocations above its mmap threshold with fresh ``mmap`` calls and
unmaps them on free, so every step pays page faults to zero the same memory again:
measured with ``spikegrad bench train`` on the 2-core CI machine, 35 % of the step.
Raising the mmap and trim thresholds keeps the memory in the heap for reuse, which is
what PyTorch's CPU allocator achieves with its own caching. Linux/glibc only; a no-op
elsewhere, and never an error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 1 << 30    # keep up to 1 GiB of freed heap before trimming

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds once per process; True if glibc accepted them."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        ok = False
    _done = ok
    return ok


def resident_bytes() -> int:
    """This process's resident set size now (Linux: /proc/self/statm), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
