"""Keep freed memory in the C heap between training steps (glibc only), for faster CPU training.

glibc's ``malloc`` serves blocks above a threshold (128 KiB at first, adapting up to 32 MiB)
with fresh ``mmap`` calls and returns them to the kernel on ``free``, and it trims the heap's
free top. A CPU training step allocates and frees the same activation and gradient tensors
(megabytes each) every step, so each step pays for page faults and zeroed pages again.
Fixing the mmap threshold at 32 MiB and trimming only above 128 MiB of free heap keeps those
blocks for reuse (docs/performance.md has the measured gain), at the price of keeping up to the
trim threshold of freed memory. PyTorch's CPU tuning guide
gets the same effect by preloading jemalloc or tcmalloc; this needs no extra library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 128 << 20

_tuned = False


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where there is no glibc (macOS, musl)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    log.debug("malloc thresholds %s", "set" if _tuned else "not set")
    return _tuned
