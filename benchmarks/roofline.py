"""A device's two ceilings, measured on it, and a compiled step's roofline.

A step cannot run faster than the larger of its FLOPs over the matrix rate
and its bytes over the memory bandwidth; its *share of the roofline* is
that floor over the measured step time.  Both ceilings are measured here
(a large matrix product at the step's compute dtype and JAX's default
precision, a large elementwise pass counting bytes read plus written)
rather than taken from a datasheet, so the share is against what this
device actually delivers through XLA.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def _median_seconds(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))       # compile
    jax.block_until_ready(fn(*args))       # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_ceilings(dtype: str = "float32", *, matmul_size: int = 8192,
                     copy_mib: int = 2048, repeats: int = 10) -> dict:
    """Matrix TFLOP/s at ``dtype`` and elementwise TB/s, both through XLA.

    Random inputs, never zeros (zeros can run faster than real data)."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    n = matmul_size
    a = jax.random.normal(key_a, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(key_b, (n, n), jnp.dtype(dtype))
    matmul_s = _median_seconds(jax.jit(jnp.matmul), a, b, repeats=repeats)
    elements = copy_mib * 2**20 // 4
    x = jax.random.normal(key_a, (elements,), jnp.float32)
    pass_s = _median_seconds(jax.jit(lambda v: v * 1.0009765625 + 0.5), x,
                             repeats=repeats)
    return {"dtype": dtype, "matmul_size": n,
            "matmul_tflops": 2 * n**3 / matmul_s / 1e12,
            "bandwidth_tbps": 2 * 4 * elements / pass_s / 1e12,
            "elementwise_mib": copy_mib}


def cost(compiled) -> dict:
    """XLA's cost analysis of a compiled program: FLOPs and bytes accessed."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):    # older jax: one dict per module
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return {"flops": float(analysis.get("flops", float("nan"))),
            "bytes": float(analysis.get("bytes accessed", float("nan")))}


def share(flops: float, bytes_accessed: float, step_s: float,
          ceilings: dict) -> dict:
    """The roofline floor of one step and the share of it the step reaches."""
    compute_s = flops / (ceilings["matmul_tflops"] * 1e12)
    memory_s = bytes_accessed / (ceilings["bandwidth_tbps"] * 1e12)
    floor_s = max(compute_s, memory_s)
    return {"compute_floor_s": compute_s, "memory_floor_s": memory_s,
            "floor_s": floor_s, "bound": "memory" if memory_s >= compute_s else "compute",
            "intensity_flop_per_byte": flops / bytes_accessed,
            "share": floor_s / step_s}
