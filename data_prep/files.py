"""Writing files so that a reader, or a run killed half-way, never sees half of one."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs):
    """Opens a temporary sibling of ``path`` for writing; when the block ends
    without an error it is renamed over ``path`` (atomic on POSIX), and on an
    error it is removed and ``path`` keeps its old content."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
