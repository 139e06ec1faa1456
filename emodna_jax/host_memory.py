"""Keeps glibc's malloc from handing each XLA:CPU step fresh pages.

XLA:CPU allocates the buffers of every execution with malloc and frees them
when it ends: about 140 MB for the default train step.  glibc serves
allocations that large with a fresh ``mmap`` and returns them with
``munmap``; in the per-thread arenas of XLA's worker threads it always does
so above 64 MB.  Every step then page-faults its whole working set back in,
zero-filled by the kernel: 35,000 minor faults per default step.

:func:`keep_freed_memory` makes malloc serve every thread from one heap that
it never trims, so a step reuses the pages the previous one freed.  It is
opt-in (``EMODNA_JAX_KEEP_HOST_MEMORY=1``) because it is a trade, measured
in the README ("Speed"): the step gets faster, but XLA's compiler threads
then contend for that one heap, and on two cores a compile takes longer;
over a 400-step default run the two about cancel, over longer runs the step
wins.  The process also keeps its peak heap until it exits.  It must run
before JAX starts its threads (a thread keeps the arena it first used), so
the package runs it on import.  Only glibc has these settings; elsewhere
the variable does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
OPT_IN = "EMODNA_JAX_KEEP_HOST_MEMORY"


def keep_freed_memory() -> bool:
    """One arena, no mmap'd chunks, no trimming; True if glibc took all three."""
    if os.environ.get(OPT_IN, "") in ("", "0"):
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
