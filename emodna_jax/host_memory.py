"""Keeps glibc's malloc from handing each XLA:CPU step fresh pages.

XLA:CPU allocates the buffers of every execution with malloc and frees them
when it ends: about 140 MB for the default train step.  glibc serves
allocations that large with a fresh ``mmap`` and returns them with
``munmap``; in the per-thread arenas of XLA's worker threads it always does
so above 64 MB.  Every step then page-faults its whole working set back in,
zero-filled by the kernel: 35,000 minor faults per default step.

:func:`keep_freed_memory` makes malloc serve every thread from one heap that
it never trims, so a step reuses the pages the previous one freed.  It is
on by default because the step is the cost that grows with a run: measured
in docs/speed.md, the default step ran 1.2x faster with it on two
cores and 1.6x on one.
The price is a slower compile (a few seconds: malloc serves XLA's compiler
from one heap too) and a process that keeps its peak heap until it exits;
``EMODNA_JAX_KEEP_HOST_MEMORY=0`` opts out (the test suite, which compiles
hundreds of short programs, does).  It must run before JAX starts its
threads (a thread keeps the arena it first used), so the package runs it on
import.  Only glibc has these settings; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
ENV_VAR = "EMODNA_JAX_KEEP_HOST_MEMORY"   # "0" opts out


def keep_freed_memory() -> bool:
    """One arena, no mmap'd chunks, no trimming; True if glibc took all three."""
    if os.environ.get(ENV_VAR, "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
