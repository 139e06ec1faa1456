r"""Where the fused train step's time goes: a jax.profiler trace, by kernel kind.

  python benchmarks/profile_step.py --steps 5
  taskset -c 0 python benchmarks/profile_step.py --steps 5   # one core

Builds the default config's fused step exactly as benchmarks/train_step.py
does, traces ``--steps`` steps after a warm-up, and prints the milliseconds
per step of each kind of XLA kernel (the trace event's name without its
number: ``transpose_copy_fusion``, ``ynn_fusion``, ``conv_general_dilated``,
...), with how many ran per step.  On several cores kernels overlap, so the
rows can add up to more than the step.  ``--hlo`` also writes the optimised
HLO, to look a kernel up by name.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax

from configs import default as default_config
import emodna_jax
from emodna_jax import experiment
from emodna_jax import step as step_lib
from benchmarks import train_step

# Events of the runtime and the profiler around the kernels, not kernels.
NOT_KERNELS = ("ThunkExecutor", "$", "PjitFunction", "CommonPjRt", "end: ",
               "ParseArguments", "SlinkyThreadPool")


def kernel_kind(name: str) -> str:
    return name.split(".")[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="traced steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--top", type=int, default=25, help="rows printed")
    p.add_argument("--hlo", default="", help="write the optimised HLO here")
    args = p.parse_args(argv)

    config = default_config.get_config()
    built = experiment.build(config, parallel=step_lib.Parallel("shard_map"))
    parallel = built.parallel
    it = train_step.train_iterator(built.source, built.target, config,
                                   config.batch_size, config.seed)
    batches = [parallel.put_batch(next(it)) for _ in range(4)]
    runner = train_step.JaxRunner("fused", parallel, step_lib.make_train_step(
        built.model, built.optimizer, built.objective, axis_name=step_lib.AXIS,
        sum_gradients=parallel.sum_gradients),
        parallel.put_replicated(built.init_state()), batches)
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(runner.compiled.as_text())
    runner.run(args.warmup)
    start = time.perf_counter()
    runner.run(args.steps)
    step_ms = (time.perf_counter() - start) / args.steps * 1e3

    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        runner.run(args.steps)
        jax.profiler.stop_trace()
        trace, = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"),
                           recursive=True)
        with gzip.open(trace) as f:
            events = json.load(f)["traceEvents"]

    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or "dur" not in e or e["name"].startswith(NOT_KERNELS):
            continue
        kind = kernel_kind(e["name"])
        total[kind] += e["dur"] / 1e3 / args.steps
        count[kind] += 1
    print(f"fused step {step_ms:.1f} ms untraced; {jax.device_count()} device(s), "
          f"{train_step.usable_cpus()} usable cores, malloc keeping freed memory: "
          f"{emodna_jax.MALLOC_KEEPS_FREED_MEMORY}; load {train_step.loadavg()}")
    print(f"{'ms/step':>8} {'per step':>9}  kernel kind")
    for kind, ms in total.most_common(args.top):
        print(f"{ms:8.2f} {count[kind] // args.steps:9d}  {kind}")


if __name__ == "__main__":
    main()
