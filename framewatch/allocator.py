"""glibc malloc set up for a process that allocates the same large buffers every batch.

A CPU forward pass allocates its activations afresh for every batch (the
first one of EfficientNet-Lite0 is 51 MB at batch 32). With glibc's defaults
each such buffer is a new mmap, or lands in a thread arena's heap that is
unmapped again once it is free, so the kernel faults in and zeroes every page
of it, every batch: about 5,000 page faults per frame, and the CPU worker ran
at half its speed. ``tune`` asks glibc, before any thread exists, for one
arena (thread arenas unmap a heap as soon as it is free, whatever the
settings), no mmap, and a trim threshold of 2 GiB: freed memory stays in the
heap and is reused, as jemalloc does with ``dirty_decay_ms:-1``. The price:
the process keeps its peak heap (its resident size does not fall after a
burst).

``FRAMEWATCH_MALLOC=system`` leaves malloc as it is. Nothing is changed where
another allocator is preloaded (jemalloc, tcmalloc) or the C library is not
glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Mapping

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
KEEP_ALL = 2**31 - 1  # the largest trim threshold mallopt takes (an int)

_state = "not set up"


def tune(environ: Mapping[str, str] = os.environ) -> str:
    """Set glibc malloc up for steady batches (see the module doc); returns what was done, in words.
    Call it first thing in the process: the one-arena setting only holds for threads started after it."""
    global _state
    choice = environ.get("FRAMEWATCH_MALLOC", "tuned").strip().lower()
    preload = environ.get("LD_PRELOAD", "")
    if choice == "system":
        _state = "system (FRAMEWATCH_MALLOC=system)"
    elif choice != "tuned":
        _state = f"system (FRAMEWATCH_MALLOC={choice!r} is neither 'tuned' nor 'system')"
    elif any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        _state = f"preloaded ({os.path.basename(preload.split(':')[0].split()[0])})"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = "system (not glibc)"
    else:
        libc = ctypes.CDLL(None)
        done = all(libc.mallopt(param, value) == 1 for param, value in
                   ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_ALL)))  # fmt: skip
        _state = "glibc, kept for reuse (one arena, no mmap, no trim)" if done else "system (mallopt refused)"
    return _state


def state() -> str:
    """What ``tune`` did in this process, in words (for logs and ``framewatch bench``)."""
    return _state
