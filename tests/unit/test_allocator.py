"""framewatch keeps freed memory for reuse (glibc set up at start), so a batch's buffers are not faulted in anew.

Each check runs in a fresh interpreter: the setting must be made before any thread exists.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

# A thread allocates, touches and frees a 64 MB buffer (a forward pass's largest activation is about as big),
# twice; the minor page faults of the second round are what every batch would pay.
PROBE = textwrap.dedent(
    """
    import ctypes, json, resource, sys, threading
    from framewatch import allocator
    state = allocator.tune()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 64 * 1024 * 1024
    faults = []
    def batches():
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            buf = libc.malloc(SIZE)
            ctypes.memset(buf, 1, SIZE)
            libc.free(buf)
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    thread = threading.Thread(target=batches)
    thread.start()
    thread.join()
    print(json.dumps({"state": state, "faults": faults}))
    """
)

PAGES = 64 * 1024 * 1024 // 4096

needs_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's"
)


def probe(env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    inherited = {k: v for k, v in os.environ.items() if k not in ("FRAMEWATCH_MALLOC", "LD_PRELOAD", "GLIBC_TUNABLES")}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         env={**inherited, **env})  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


@needs_glibc
def test_a_buffer_freed_by_one_batch_is_reused_by_the_next_without_page_faults():
    tuned = probe({})
    assert tuned["state"].startswith("glibc, kept for reuse")
    first, second = tuned["faults"]
    assert first > PAGES // 2  # the first batch faults its pages in: the probe does measure faults
    assert second < PAGES // 20, tuned


@needs_glibc
def test_framewatch_malloc_system_leaves_glibc_as_it_is():
    system = probe({"FRAMEWATCH_MALLOC": "system"})
    assert system["state"] == "system (FRAMEWATCH_MALLOC=system)"
    assert system["faults"][1] > PAGES // 2, system  # glibc's default: mmap, unmapped on free, faulted again


def test_nothing_is_changed_under_a_preloaded_allocator_or_an_unknown_choice():
    from framewatch import allocator

    assert allocator.tune({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}) == "preloaded (libjemalloc.so.2)"
    assert allocator.tune({"FRAMEWATCH_MALLOC": "fast"}).startswith("system (FRAMEWATCH_MALLOC='fast' is neither")
