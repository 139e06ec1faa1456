"""Several processes, one run: JAX's multi-controller runtime.

A TPU slice larger than one host, or a multi-node GPU cluster, runs one
process per host.  Every process runs the same program on its own devices and
reads its own share of every batch; compiled steps then see one global
batch.  This module starts the runtime and holds the few exchanges between
processes the host code needs.  With one process each is a no-op.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def on_cluster() -> bool:
    """True where ``jax.distributed.initialize()`` can find its peers by
    itself: a SLURM job of several tasks, or a multi-host TPU slice."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins the runtime before anything touches a device.

    Explicit ``coordinator_address`` (with ``num_processes`` and
    ``process_id``): that; on a detectable cluster: auto-detection; else
    nothing (one process).  CPU processes exchange over gloo.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("--coordinator_address, --num_processes and --process_id "
                         "go together (or none of them, to auto-detect a cluster)")
    if all(given) and not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id}: must lie in [0, {num_processes})")
    if not any(given) and not on_cluster():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if all(given):
        jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()


def is_primary() -> bool:
    """Process 0 writes logs, reports and figures; every process computes."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. a SIGTERM
    that reached one host): all stop at the same step."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def gather_json(value) -> list:
    """``value`` (JSON-serialisable) of every process, in process order."""
    if jax.process_count() == 1:
        return [value]
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray(data.size, np.int32))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[:data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:size]).decode()) for row, size in zip(rows, sizes)]


def gather_rows(tree):
    """Host arrays of a batch-sharded output: every process's rows, in order
    (``jax.device_get`` cannot fetch rows held by another process)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
