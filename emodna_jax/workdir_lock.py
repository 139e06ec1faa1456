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
import time

LOCK_FILE = ".lock"
# is_held() holds a shared lock for an instant; a run starting in that
# instant tries again this many times, 50 ms apart, before it is refused.
_ATTEMPTS = 5


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
        if not _take(handle):
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise WorkdirInUse(f"workdir {workdir} is in use by pid {holder}")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def _take(handle) -> bool:
    """Takes the exclusive lock; False when another process holds it."""
    for attempt in range(_ATTEMPTS):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _ATTEMPTS:
                time.sleep(0.05)
    return False


def is_held(workdir: str) -> bool:
    """Whether a run holds ``workdir`` now (how ``--mode=watch`` tells a
    run that stopped from one still training).  Reads only: a workdir
    without a lock file has never been trained in."""
    try:
        handle = open(os.path.join(workdir, LOCK_FILE))
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
