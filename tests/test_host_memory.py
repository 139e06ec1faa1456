"""By default an XLA:CPU program's freed buffers are reused, not faulted in again."""

import json
import os
import platform
import subprocess
import sys

import pytest

from emodna_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A program with a 64 MB intermediate, freed after each run; the minor page
# faults of the later runs say whether malloc handed a run fresh pages.
RUNS = """
import json, resource
import emodna_jax
import jax, jax.numpy as jnp
running_total = jax.jit(lambda x: jnp.cumsum(x).sum())
x = jnp.ones(1 << 24, jnp.float32)
for _ in range(5):
    running_total(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    running_total(x).block_until_ready()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": emodna_jax.MALLOC_KEEPS_FREED_MEMORY, "faults": faults / 4}))
"""


def _run(**env):
    """The script's minor faults per run in a fresh process with ``env``."""
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV_VAR} | env
    out = subprocess.run([sys.executable, "-c", RUNS], cwd=REPO, env=env, text=True,
                         capture_output=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_a_freed_output_is_reused_instead_of_faulted_in_again():
    system, kept = _run(**{host_memory.ENV_VAR: "0"}), _run()
    assert kept["kept"] and not system["kept"]
    # 64 MB is 16,384 pages of 4 KiB: the system allocator faults in about
    # twice that per run (35,000 here), the kept heap about a quarter of it.
    assert system["faults"] > 16_000, system
    # Under load from other processes a kept run can still fault one buffer
    # in afresh (once seen in CI: 18,500); load only adds faults, so the
    # fewest of three fresh processes is the allocator's own figure.
    fewest = min([kept["faults"]] + [_run()["faults"] for _ in range(2)])
    assert fewest < system["faults"] / 2, (fewest, system)
