"""Keep freed CPU memory in the process while training (glibc ``malloc`` thresholds).

Every training batch allocates and frees the same activation tensors of 1-4 MB (batch 2000,
width 128, float32). glibc's ``malloc`` serves blocks above its mmap threshold with a fresh
``mmap`` and returns them with ``munmap``, and it trims the top of the heap once more than its
trim threshold is free, so each batch touches new pages and pays their page faults and zeroing:
about 7 % of a training step at d = 4 on one CPU thread (``benchmarks/bench_sde_throughput.py``).
Raising both thresholds keeps those blocks in the heap for reuse. This is the effect that the
PyTorch CPU performance guide gets from replacing the allocator (jemalloc, tcmalloc).

The change is process-wide and stays in effect: a process keeps up to ``TRIM_THRESHOLD_BYTES``
of freed memory instead of returning it to the system, and blocks up to
``MMAP_THRESHOLD_BYTES`` come from the heap. Set the environment variable
``MATSCALE_MALLOC_TUNING=0`` to leave ``malloc`` alone. Only glibc on Linux is tuned; elsewhere
this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VARIABLE = "MATSCALE_MALLOC_TUNING"
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
# parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state: dict[str, bool | None] = {"applied": None}


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are in effect.

    Returns False (and changes nothing) when ``MATSCALE_MALLOC_TUNING=0``, off Linux, or when
    the C library has no ``mallopt`` or refuses the values.
    """
    if os.environ.get(ENV_VARIABLE, "1").strip() == "0":
        return False
    if _state["applied"] is not None:
        return bool(_state["applied"])
    _state["applied"] = _apply()
    return bool(_state["applied"])


def _apply() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success and 0 for a value it does not accept
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
