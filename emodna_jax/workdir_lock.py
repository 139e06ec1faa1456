"""One training run per workdir, enforced by an OS lock.

Two runs in one workdir would interleave checkpoint writes and log lines.
``fcntl.flock`` is released by the kernel when its process dies, however it
dies, so a killed run never leaves a stale lock behind; the pid written into
the lock file only makes the refusal say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

LOCK_FILE = ".lock"


class WorkdirInUse(RuntimeError):
    """Another live process holds the workdir."""


@contextlib.contextmanager
def exclusive(workdir: str, process: int = 0):
    """Holds ``workdir`` for the duration of the block, or raises
    WorkdirInUse naming the pid that holds it.  ``process``: the index of
    this process in a multi-process run; each takes its own lock, so a
    second run is refused on every host."""
    os.makedirs(workdir, exist_ok=True)
    name = LOCK_FILE if process == 0 else f"{LOCK_FILE}.{process}"
    handle = open(os.path.join(workdir, name), "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise WorkdirInUse(f"workdir {workdir} is in use by pid {holder}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
