r"""Cold compile time of the fused train step: this checkout against a commit.

  python benchmarks/compile_time.py --against=COMMIT [--repeats=3]

Each measurement is a fresh process (no persistent compilation cache) that
builds configs/default.py's step exactly as benchmarks/train_step.py does and
times ``lower().compile()``; the checkout and ``COMMIT`` (checked out into a
temporary git worktree) alternate, so both meet the same machine load, and
the table gives each one's median with the optimised program's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = r"""
import json, sys, time
import jax
from configs import default
from emodna_jax import experiment, input_pipeline, step as step_lib
config = default.get_config()
if sys.argv[1]:
    config.data.data_dir = sys.argv[1]
built = experiment.build(config, parallel=step_lib.Parallel("shard_map"))
parallel = built.parallel
batch = next(iter(input_pipeline.train_dataset(
    built.source, built.target, global_batch_size=config.batch_size,
    num_frames=config.data.num_frames, seed=config.seed, cache_mib=config.data.cache_mib)))
step_fn = step_lib.make_train_step(built.model, built.optimizer, built.objective,
                                   axis_name=step_lib.AXIS,
                                   sum_gradients=parallel.sum_gradients)
jitted = parallel.compile_train(step_fn)
state, batch = parallel.put_replicated(built.init_state()), parallel.put_batch(batch)
start = time.perf_counter()
compiled = jitted.lower(state, batch).compile()
seconds = time.perf_counter() - start
with open(sys.argv[2], "w") as f:
    f.write(compiled.as_text())
print("RESULT " + json.dumps({"compile_s": seconds}))
"""


def hlo_instructions(text: str) -> int:
    """Instructions of an optimised HLO module's text."""
    return len(re.findall(r"^\s+(?:ROOT )?%\S+ = ", text, re.M))


def distinct_kernels(text: str) -> int:
    """Fused computations of an optimised HLO module that differ once names
    and metadata are set aside.  XLA:CPU emits and compiles one kernel per
    distinct fusion, so this count, not the program's length, is what its
    LLVM time follows (docs/speed.md); unlike a time it does not move with
    the machine's load."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(
        r"^%?([\w.\-]+) (\(.*?\) -> .*? \{\n.*?\n\})", text, re.M | re.S)}
    fused = set(re.findall(r" fusion\(.*?calls=%?([\w.\-]+)", text))

    def shape_only(body: str) -> str:
        body = re.sub(r", metadata=\{[^}]*\}", "", body)
        body = re.sub(r"%[\w.\-]+", "%", body)
        return re.sub(r"\b(param_\d+)\.\d+", r"\1", body)
    return len({shape_only(bodies[name]) for name in fused if name in bodies})


def measure(tree: str, data_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = tree          # this tree's packages, not the installed ones
    with tempfile.TemporaryDirectory() as tmp:
        hlo = os.path.join(tmp, "step.hlo")
        done = subprocess.run([sys.executable, "-c", MEASURE, data_dir, hlo], cwd=tree,
                              env=env, capture_output=True, text=True)
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                with open(hlo) as f:
                    text = f.read()
                return dict(json.loads(line[len("RESULT "):]),
                            hlo_instructions=hlo_instructions(text),
                            distinct_kernels=distinct_kernels(text))
    raise RuntimeError(f"measuring {tree} failed:\n{done.stdout[-2000:]}"
                       f"{done.stderr[-3000:]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, help="the commit to compare with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data_dir", default="", help="default: the config's")
    p.add_argument("--doc", default="", help="also write the table into this file")
    p.add_argument("--section", default="compile_time")
    args = p.parse_args(argv)
    label = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = os.path.join(tmp, label)
        subprocess.run(["git", "worktree", "add", "--detach", baseline, args.against],
                       cwd=REPO, check=True, capture_output=True)
        try:
            runs = {"this checkout": [], label: []}
            for _ in range(args.repeats):
                runs["this checkout"].append(measure(REPO, args.data_dir))
                runs[label].append(measure(baseline, args.data_dir))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", baseline], cwd=REPO,
                           capture_output=True)
    lines = [f"Cold compile of the fused step (configs/default.py), {os.cpu_count()} "
             f"CPUs, load {os.getloadavg()[0]:.1f}, {args.repeats} alternating runs each "
             "(`lower().compile()`, no compilation cache).", "",
             "| code | compile s (median) | each run | optimised HLO instructions "
             "| distinct fused kernels |", "|---|---|---|---|---|"]
    for name, results in runs.items():
        times = [r["compile_s"] for r in results]
        lines.append(f"| {name} | {statistics.median(times):.2f} | "
                     + ", ".join(f"{t:.2f}" for t in times)
                     + f" | {results[0]['hlo_instructions']} "
                     f"| {results[0]['distinct_kernels']} |")
    text = "\n".join(lines)
    print(text)
    if args.doc:
        from benchmarks import cross_corpus
        command = " ".join(["python benchmarks/compile_time.py", *(argv or sys.argv[1:])])
        cross_corpus.write_section(args.doc, f"Reproduce: `{command}`\n\n{text}\n",
                                   args.section)

if __name__ == "__main__":
    main()
