r"""How the fused Emo-DNA step scales with the batch and the crop length.

  python benchmarks/scaling.py --batches=32,64,128,256 --frames=160,300,800 \
      --doc=docs/speed.md --section=scaling

For every global batch B (per stream: B source + B target utterances) and
training crop T, on configs/default.py otherwise: the fused step's time
(median of interleaved windows, as benchmarks/train_step.py), the same for
a plain cross-entropy step over the same 2B rows, and XLA's memory plan of
the fused step (arguments + temporaries + outputs; exact for the compiled
program, unlike a process's RSS).  fused / plain is what the Emo-DNA losses
add: the O(B^2) contrastive and MMD terms show where that ratio grows with B.
Last, evaluation throughput (utterances/s over the target split, whole
utterances up to ``data.eval_num_frames``).  The table is written by this
program: never edit it by hand.  ``--json_out`` keeps every measurement,
rewritten after each row, so a run stopped part-way keeps what it measured;
benchmarks/gpu_suite.py renders the GPU table from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax
import numpy as np

from benchmarks import cross_corpus
from benchmarks import train_step as bench
from configs import default as default_config
from data_prep import files
from emodna_jax import evaluate
from emodna_jax import experiment
from emodna_jax import step as step_lib


def plan_bytes(compiled) -> int:
    """Bytes XLA's buffer plan holds at once for one call (arguments,
    temporaries and outputs, less the outputs aliased onto donated inputs)."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.temp_size_in_bytes
               + m.output_size_in_bytes - m.alias_size_in_bytes)


def measure(config, batch_size: int, num_frames: int, with_plain: bool,
            steps: int, windows: int) -> dict:
    """One grid point: the fused step (and the plain one) compiled and timed."""
    config.batch_size, config.data.num_frames = batch_size, num_frames
    built = experiment.build(config, parallel=step_lib.Parallel("shard_map"))
    parallel = built.parallel
    it = bench.train_iterator(built.source, built.target, config, batch_size, config.seed)
    batch = next(it)
    batch["tgt_label"] = batch["src_label"]      # the plain step's labels
    runners = [bench.JaxRunner("fused", parallel, step_lib.make_train_step(
        built.model, built.optimizer, built.objective, axis_name=step_lib.AXIS,
        sum_gradients=parallel.sum_gradients),
        parallel.put_replicated(built.init_state()),
        [parallel.put_batch({k: v for k, v in batch.items() if k != "tgt_label"})])]
    if with_plain:
        runners.append(bench.JaxRunner("plain", parallel, bench.make_plain_step(
            built.model, built.optimizer, parallel.num_devices),
            parallel.put_replicated(built.init_state()), [parallel.put_batch(batch)]))
    timing = bench.timed_windows(runners, steps, windows, warmup=1)
    fused = runners[0]
    return {"batch": batch_size, "frames": num_frames,
            "fused_s": timing["fused"]["median_s"],
            "plain_s": timing["plain"]["median_s"] if with_plain else None,
            "compile_s": fused.compile_s, "plan_gib": plan_bytes(fused.compiled) / 2**30,
            "gflop": fused.flops / 1e9, "gbytes": fused.bytes / 1e9}


EVAL_PASSES = 3


def eval_throughput(config, passes: int = EVAL_PASSES) -> float:
    """Utterances/s of batch evaluation over the target split: the median of
    ``passes`` timed passes after a compiling one (one pass swung from 360
    to 640 utterances/s between runs)."""
    built = experiment.build(config, parallel=step_lib.Parallel("shard_map"))
    evaluator = evaluate.Evaluator(built.model, built.parallel, config)
    state = built.parallel.put_replicated(built.init_state())
    evaluator.predict(state, built.target, built.target.eval_split)   # compiles
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        n = len(evaluator.predict(state, built.target, built.target.eval_split)["label"])
        rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates))


def describe_machine() -> dict:
    """What a table names: the devices, the backend and the host's load."""
    return {"device_kind": jax.devices()[0].device_kind,
            "num_devices": jax.device_count(), "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(), "load": bench.loadavg()[0]}


def table(results: dict) -> str:
    """The markdown table of one run's measurements (``--json_out``'s dict)."""
    m = results["machine"]
    lines = [f"Reproduce: `{results['command']}`", "",
             f"{m['num_devices']} x {m['device_kind']} ({m['backend']}), "
             f"load average at the start {m['load']:.2f} on {m['cpu_count']} CPUs.",
             "", "| global batch (per stream) | crop (frames) | fused step (ms) | "
             "plain CE step (ms) | fused / plain | samples/s | XLA memory plan (GiB) | "
             "GFLOP/step | compile (s) |", "|---|---|---|---|---|---|---|---|---|"]
    ms = "{:.0f}" if min(r["fused_s"] for r in results["rows"]) > 0.02 else "{:.2f}"
    for r in results["rows"]:
        lines.append(
            f"| {r['batch']} | {r['frames']} | {ms.format(1e3 * r['fused_s'])} | "
            + ("- | - | " if r["plain_s"] is None else
               f"{ms.format(1e3 * r['plain_s'])} | {r['fused_s'] / r['plain_s']:.2f} | ")
            + f"{2 * r['batch'] / r['fused_s']:.0f} | {r['plan_gib']:.2f} | "
            f"{r['gflop']:.1f} | {r['compile_s']:.1f} |")
    if results.get("eval_utterances_per_s"):
        lines += ["", f"Evaluation: {results['eval_utterances_per_s']:.0f} utterances/s "
                      "(target split, whole utterances up to the evaluation crop; median of "
                      f"{EVAL_PASSES} passes)."]
    return "\n".join(lines) + "\n"


def _save(results: dict, path: str | None):
    if path:
        with files.atomic_write(path) as f:
            json.dump(results, f, indent=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,64,128,256")
    parser.add_argument("--frames", default="160,300,800")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per step kind")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--doc", default=None)
    parser.add_argument("--section", default="scaling")
    parser.add_argument("--json_out", default=None,
                        help="Every measurement as JSON, rewritten after each row.")
    parser.add_argument("--no_plain", action="store_true",
                        help="Time the fused step alone (the plain step's compile "
                             "dominates a GPU run).")
    args = parser.parse_args(argv)
    config = default_config.get_config()
    results = {"command": cross_corpus.reproduce_command(
                   "scaling.py", argv, drop=[a for a in (argv or sys.argv[1:])
                                             if a.startswith("--json_out")]),
               "machine": describe_machine(), "rows": []}
    grid = [(batch, frames) for frames in map(int, args.frames.split(","))
            for batch in map(int, args.batches.split(","))]
    for batch, frames in grid:
        r = measure(default_config.get_config(), batch, frames, not args.no_plain,
                    args.steps, args.windows)
        results["rows"].append(r)
        _save(results, args.json_out)
        plain = "" if r["plain_s"] is None else f", plain {1e3 * r['plain_s']:.1f} ms"
        print(f"B={batch} T={frames}: fused {1e3 * r['fused_s']:.1f} ms{plain}, plan "
              f"{r['plan_gib']:.2f} GiB, compile {r['compile_s']:.1f} s", flush=True)
    results["eval_utterances_per_s"] = eval_throughput(config)
    _save(results, args.json_out)
    text = table(results)
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
