r"""Cold compile time of the fused train step: this checkout against a commit,
or against itself under other XLA flags.

  python benchmarks/compile_time.py --against=COMMIT [--repeats=3]
  python benchmarks/compile_time.py --variant='level 1=--xla_backend_optimization_level=1'

Each measurement is a fresh process (no persistent compilation cache) that
builds configs/default.py's step exactly as benchmarks/train_step.py does,
times ``lower().compile()`` and then the compiled step itself (a flag that
compiles faster may run slower); the candidates alternate, so all meet the
same machine load, and the table gives each one's medians with the optimised
program's size.  A variant's flags are added to the caller's ``XLA_FLAGS``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
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
step_s = []
for i in range(STEPS + WARMUP):
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(state, batch))
    state = out[0] if isinstance(out, tuple) else out
    step_s.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"compile_s": seconds, "step_s": step_s[WARMUP:]}))
"""
STEPS, WARMUP = 10, 3     # steps timed after the compile, after a warm-up
MEASURE = f"STEPS, WARMUP = {STEPS}, {WARMUP}\n" + MEASURE


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


def measure(tree: str, data_dir: str, xla_flags: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = tree          # this tree's packages, not the installed ones
    env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), xla_flags]))
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


def variants(specs) -> list[tuple[str, str]]:
    """``NAME=FLAGS`` arguments as (name, flags); a bad one is a one-line error."""
    out = []
    for spec in specs:
        name, sep, flags = spec.partition("=")
        if not sep or not name or not flags.startswith("--"):
            raise ValueError(f"--variant={spec!r}: expected NAME=--xla_flag=value ...")
        out.append((name, flags))
    return out


def table(runs: dict, flags: dict, repeats: int) -> str:
    """The markdown table of every candidate's measurements."""
    lines = [f"Cold compile of the fused step (configs/default.py), {os.cpu_count()} "
             f"CPUs, load {os.getloadavg()[0]:.1f}, {repeats} alternating runs each "
             "(`lower().compile()`, no compilation cache), and the compiled step "
             f"(median of {STEPS} steps after {WARMUP}).", "",
             "| code | added XLA flags | compile s (median) | each run | step ms (median) "
             "| optimised HLO instructions | distinct fused kernels |",
             "|---|---|---|---|---|---|---|"]
    for name, results in runs.items():
        times = [r["compile_s"] for r in results]
        step_ms = 1000 * statistics.median(t for r in results for t in r["step_s"])
        added = f"`{flags[name]}`" if flags[name] else "-"
        lines.append(f"| {name} | {added} | {statistics.median(times):.2f} | "
                     + ", ".join(f"{t:.2f}" for t in times)
                     + f" | {step_ms:.1f} | {results[0]['hlo_instructions']} "
                     f"| {results[0]['distinct_kernels']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default="", help="a commit to compare with")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=FLAGS: this checkout with FLAGS added to XLA_FLAGS "
                        "(repeatable)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data_dir", default="", help="default: the config's")
    p.add_argument("--doc", default="", help="also write the table into this file")
    p.add_argument("--section", default="compile_time")
    args = p.parse_args(argv)
    candidates = [("this checkout", REPO, "")]
    try:
        candidates += [(name, REPO, flags) for name, flags in variants(args.variant)]
    except ValueError as error:
        p.error(str(error))
    if not args.against and len(candidates) == 1:
        p.error("give --against=COMMIT or at least one --variant")
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            label = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=REPO,
                                   capture_output=True, text=True, check=True).stdout.strip()
            baseline = os.path.join(tmp, label)
            subprocess.run(["git", "worktree", "add", "--detach", baseline, args.against],
                           cwd=REPO, check=True, capture_output=True)
            candidates.append((label, baseline, ""))
        try:
            runs = {name: [] for name, _, _ in candidates}
            for _ in range(args.repeats):
                for name, tree, flags in candidates:
                    runs[name].append(measure(tree, args.data_dir, flags))
        finally:
            if args.against:
                subprocess.run(["git", "worktree", "remove", "--force", baseline],
                               cwd=REPO, capture_output=True)
    text = table(runs, {name: flags for name, _, flags in candidates}, args.repeats)
    print(text)
    if args.doc:
        from benchmarks import cross_corpus
        command = " ".join(["python benchmarks/compile_time.py",
                            *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
        cross_corpus.write_section(args.doc, f"Reproduce: `{command}`\n\n{text}\n",
                                   args.section)


if __name__ == "__main__":
    main()
