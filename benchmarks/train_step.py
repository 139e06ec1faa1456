r"""What one Emo-DNA train step costs, as ratios against baselines.

  EMODNA_DATA_DIR=/tmp/emo_data python benchmarks/train_step.py --steps 30

One run measures, on whatever backend JAX finds:

1. the fused Emo-DNA step (configs/default.py, all four losses, built with
   step.make_train_step + Parallel('shard_map') over all local devices)
   against a plain cross-entropy step over the same 2B source+target rows
   (same backbone and optimizer): time per step, compile time, samples/s;
2. the input pipeline (host only) against what the fused step consumes;
3. an eager PyTorch twin of model, losses and optimizer (torch_twin.py);
4. the peak host RSS of a short default training run (a subprocess);
5. on GPU, the fused step's share of its roofline against ceilings measured
   on the device (roofline.py), at ``--compute_dtype``.

Timed windows of the contenders are interleaved (fused, plain, torch, fused,
...) and the median window is reported, so load from other jobs on a shared
machine hits all of them alike; the load average is printed.  Absolute times
depend on the machine: read the ratios.  On oversubscribed cores torch's
OpenMP threads stall far more than XLA's pool, which inflates the torch
ratio; ``taskset -c 0 python benchmarks/train_step.py ...`` compares the two
on one thread each, which load from other jobs cannot skew that way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default as default_config
import emodna_jax
from emodna_jax import host_memory
from emodna_jax import input_pipeline
from emodna_jax import experiment
from emodna_jax import step as step_lib
from emodna_jax import train
from benchmarks import roofline

TARGETS = {"fused_over_plain": 1.3, "pipeline_over_step": 3.0,
           "torch_over_jax_cpu": 1.5, "torch_over_jax_gpu": 3.0,
           "peak_rss_gib": 3.0}


def parse_args(argv=None):
    config = default_config.get_config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30,
                   help="timed steps per contender (split into windows)")
    p.add_argument("--windows", type=int, default=5,
                   help="timed windows per contender; the median is reported")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed steps per contender after compilation")
    p.add_argument("--batch_size", type=int, default=config.batch_size,
                   help="global batch per stream (source and target)")
    p.add_argument("--compute_dtype", default=config.model.compute_dtype,
                   choices=("float32", "bfloat16"),
                   help="model.compute_dtype of the JAX steps (params stay f32)")
    p.add_argument("--pipeline_batches", type=int, default=40,
                   help="batches timed from the input pipeline")
    p.add_argument("--fed_steps", type=int, default=40,
                   help="fused steps fed straight from the pipeline, train-loop "
                        "style (0 skips)")
    p.add_argument("--memory_steps", type=int, default=60,
                   help="--config.steps of the peak-RSS subprocess")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the fused step with each loss switched off")
    p.add_argument("--roofline", action="store_true",
                   help="the fused step's share of its roofline on CPU too "
                        "(always measured on GPU)")
    p.add_argument("--skip_torch", action="store_true")
    p.add_argument("--torch_compile", action="store_true",
                   help="also time torch.compile (subprocess, time-limited)")
    p.add_argument("--torch_compile_limit", type=int, default=120,
                   help="seconds the torch.compile subprocess may take")
    p.add_argument("--skip_memory", action="store_true")
    p.add_argument("--data_dir", default="",
                   help="prepared corpora; default $EMODNA_DATA_DIR or "
                        "~/emodna_data")
    p.add_argument("--json_out", default="")
    p.add_argument("--doc", default="",
                   help="also write the summary table into this markdown file")
    p.add_argument("--section", default="train_step",
                   help="--doc's generated section")
    return p.parse_args(argv)


def usable_cpus() -> int:
    """CPUs this process may run on: os.cpu_count() unless restricted with
    taskset, which XLA's thread pool also honours (so both frameworks get the
    same number of threads either way)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(msg: str):
    print(msg, flush=True)


# ----------------------------------------------------------------------------
# Steps.


def make_plain_step(model, tx, num_devices: int):
    """The baseline: cross-entropy on all 2B rows (random labels), nothing else.

    Same model call (dropout, BatchNorm over the device axis) and optimizer as
    the fused step, so the difference between the two is what the Emo-DNA
    losses, the gather, the thresholds/prototypes and the finiteness guard cost.
    """

    def step_fn(state, batch):
        frames = jnp.concatenate([batch["src_frames"], batch["tgt_frames"]])
        mask = jnp.concatenate([batch["src_mask"], batch["tgt_mask"]])
        labels = jnp.concatenate([batch["src_label"], batch["tgt_label"]])
        rows = (jax.lax.axis_index(step_lib.AXIS) * frames.shape[0]
                + jnp.arange(frames.shape[0]))
        keys = step_lib.row_keys(jax.random.fold_in(state.rng, state.step),
                                 step_lib.DROPOUT_STREAM, 0, rows)

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, frames,
                mask, train=True, mutable=["batch_stats"], row_keys=keys)
            loss = optax.softmax_cross_entropy_with_integer_labels(
                outputs["logits"], labels).mean()
            # shard_map sums parameter cotangents over devices: divide so the
            # update is that of the global mean.
            return loss / num_devices, updates

        grads, updates = jax.grad(loss_fn, has_aux=True)(state.params)
        step_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, step_updates),
            opt_state=opt_state, batch_stats=updates["batch_stats"]), {}

    return step_fn


class JaxRunner:
    """A compiled step with its own (donated) state, cycling over batches."""

    def __init__(self, name, parallel, step_fn, state, batches):
        self.name = name
        self.state = state
        self.batches = batches
        jitted = parallel.compile_train(step_fn)
        start = time.perf_counter()
        self.compiled = jitted.lower(state, batches[0]).compile()
        self.compile_s = time.perf_counter() - start
        cost = roofline.cost(self.compiled)
        self.flops, self.bytes = cost["flops"], cost["bytes"]
        # Size of the optimised program: a load-independent proxy for
        # compile time on a shared machine.
        self.hlo_instructions = len(re.findall(
            r"^\s+(?:ROOT )?%\S+ = ", self.compiled.as_text(), re.M))
        self.i = 0

    def run(self, n: int):
        out = None
        for _ in range(n):
            self.state, out = self.compiled(
                self.state, self.batches[self.i % len(self.batches)])
            self.i += 1
        jax.block_until_ready((self.state, out))


class TorchRunner:
    name = "torch eager"

    def __init__(self, trainer, batches):
        self.trainer = trainer
        self.batches = batches
        self.i = 0

    def run(self, n: int):
        for _ in range(n):
            self.trainer.step(self.batches[self.i % len(self.batches)])
            self.i += 1
        self.trainer.sync()


def timed_windows(runners, steps: int, windows: int, warmup: int) -> dict:
    """Median seconds per step of each runner, windows interleaved."""
    for r in runners:
        r.run(warmup)
    per_window = max(1, steps // windows)
    times = {r.name: [] for r in runners}
    for _ in range(windows):
        for r in runners:
            start = time.perf_counter()
            r.run(per_window)
            times[r.name].append((time.perf_counter() - start) / per_window)
    return {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)),
                   "max_s": float(np.max(t)), "windows": len(t),
                   "steps_per_window": per_window}
            for name, t in times.items()}


# ----------------------------------------------------------------------------
# Input pipeline and memory.


def train_iterator(source, target, config, batch_size: int, seed: int):
    """An iterator over the training input exactly as train.py builds it."""
    return iter(input_pipeline.train_dataset(
        source, target, global_batch_size=batch_size,
        num_frames=config.data.num_frames, seed=seed,
        cache_mib=config.data.cache_mib))


def pipeline_rate(source, target, config, batch_size: int, num_batches: int,
                  warmup: int = 3) -> dict:
    """Source+target samples/s of a fresh train_dataset iterator (host only)."""
    start = time.perf_counter()
    it = train_iterator(source, target, config, batch_size, config.seed)
    for _ in range(warmup):
        next(it)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - start
    return {"samples_per_s": 2 * batch_size * num_batches / elapsed,
            "batch_s": elapsed / num_batches, "first_batches_s": first_s,
            "batches": num_batches}


def fed_step_time(parallel, runner, source, target, config, batch_size: int,
                  steps: int, windows: int = 4) -> dict:
    """The fused step fed from a live iterator in the two orders of
    train.py's loop: read ahead (the next batch read and put on the devices
    while a step runs, then the step's metrics fetched; on accelerators) and
    read between steps (read, put, step, fetch; on CPU, train.reads_ahead),
    beside the step on prefetched batches, in interleaved windows: what the
    pipeline and the step sharing the machine actually cost, measured
    against the same moments' prefetched step.  ``step_s`` is the order
    train.py uses on this backend."""
    it = train_iterator(source, target, config, batch_size, config.seed + 7)
    batch = parallel.put_batch(next(it))

    def read_ahead(n):
        nonlocal batch
        for _ in range(n):
            runner.state, m = runner.compiled(runner.state, batch)
            batch = parallel.put_batch(next(it))
            parallel.get_metrics(m)

    def sequential(n):
        for _ in range(n):
            runner.state, m = runner.compiled(runner.state, parallel.put_batch(next(it)))
            parallel.get_metrics(m)

    read_ahead(3)  # let the prefetch threads start
    per_window = max(1, steps // windows)
    variants = (("prefetched", runner.run), ("read_ahead", read_ahead),
                ("sequential", sequential))
    times = {name: [] for name, _ in variants}
    for _ in range(windows):
        for name, run in variants:
            start = time.perf_counter()
            run(per_window)
            times[name].append((time.perf_counter() - start) / per_window)
    loop, other = (("read_ahead", "sequential") if train.reads_ahead()
                   else ("sequential", "read_ahead"))
    step_s = float(np.median(times[loop]))
    return {"step_s": step_s, "samples_per_s": 2 * batch_size / step_s,
            "loop_order": loop, "other_order": other,
            "other_order_step_s": float(np.median(times[other])),
            "prefetched_step_s": float(np.median(times["prefetched"])),
            "steps": per_window * windows}


# Forks the command from a small process and reports the child's own peak
# RSS.  Linux carries a process's peak RSS across fork+exec, so a child forked
# straight from this (GiB-sized) benchmark would report at least our own size.
_RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_of_default_run(args, data_dir: str, batch_size: int) -> dict:
    """Peak RSS of `python -m emodna_jax.main` on the default config, for
    ``args.memory_steps`` steps (compile, training, checkpoint, final eval)."""
    workdir = tempfile.mkdtemp(prefix="emodna_bench_")
    cmd = [sys.executable, "-m", "emodna_jax.main", "--config=configs/default.py",
           f"--workdir={workdir}", f"--config.steps={args.memory_steps}",
           "--config.compare_source_only=False", "--config.eval_every=0"]
    if batch_size != default_config.get_config().batch_size:
        cmd.append(f"--config.batch_size={batch_size}")
    env = dict(os.environ, EMODNA_DATA_DIR=data_dir)
    rss_path = os.path.join(workdir, "maxrss_kib")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _RSS_LAUNCHER, rss_path]
                            + cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher and the run it forked
        output, _ = proc.communicate()
    wall_s = time.perf_counter() - start
    try:
        with open(rss_path) as f:
            peak_gib = int(f.read()) * 1024 / 2**30  # ru_maxrss is KiB on Linux
    except (OSError, ValueError):
        peak_gib = float("nan")
    shutil.rmtree(workdir, ignore_errors=True)
    result = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
              "peak_rss_gib": peak_gib, "wall_s": wall_s,
              "steps": args.memory_steps}
    if proc.returncode != 0:
        result["output_tail"] = output[-1500:]
    return result


def torch_compile_subprocess(batch_size: int, steps: int, limit_s: int):
    """torch.compile timing in a child with a time limit (inductor may be slow
    or missing a compiler); reported apart from the eager figures."""
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "torch_twin.py"),
           "--compile", f"--steps={steps}", f"--batch_size={batch_size}"]
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=limit_s)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {limit_s} s"}
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout)[-600:]}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    config = default_config.get_config()
    if args.data_dir:
        config.data.data_dir = args.data_dir
    data_dir = config.data.data_dir or os.environ.get(
        "EMODNA_DATA_DIR", os.path.join(os.path.expanduser("~"), "emodna_data"))
    B = args.batch_size
    config.batch_size = B
    config.model.compute_dtype = args.compute_dtype
    results = {"argv": sys.argv, "loadavg_start": loadavg(),
               "backend": jax.default_backend(),
               "device_kind": jax.devices()[0].device_kind,
               "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
               "usable_cpus": usable_cpus(),
               "batch_size_per_stream": B, "num_frames": config.data.num_frames,
               "compute_dtype": args.compute_dtype,
               "keep_host_memory": emodna_jax.MALLOC_KEEPS_FREED_MEMORY}
    if os.getloadavg()[0] > 0.5 * os.cpu_count():
        log(f"WARNING: load average {loadavg()} on {os.cpu_count()} CPUs: other "
            "jobs share the cores; absolute times are inflated and ratios "
            "noisier (windows are interleaved to keep them comparable). "
            "Oversubscribed cores hurt multi-threaded torch far more than XLA; "
            "`taskset -c 0` gives a load-robust one-thread comparison.")
    log(f"backend {results['backend']} ({results['device_kind']}) x "
        f"{results['num_devices']}, {os.cpu_count()} CPUs ({usable_cpus()} "
        f"usable), load {loadavg()}, "
        f"batch {B} source + {B} target, {config.data.num_frames} frames, "
        f"data {data_dir}")

    # Data (builds the synthetic shards when missing) and the pieces every
    # entry point builds; the two JAX steps run over all local devices.
    start = time.perf_counter()
    built = experiment.build(config, parallel=step_lib.Parallel("shard_map"))
    results["open_task_s"] = time.perf_counter() - start
    source, target, parallel = built.source, built.target, built.parallel
    model, tx, obj_cfg = built.model, built.optimizer, built.objective
    num_classes, num_bins = len(built.classes), built.num_bins

    pipe = pipeline_rate(source, target, config, B, args.pipeline_batches)
    results["pipeline"] = pipe
    log(f"input pipeline: {pipe['samples_per_s']:.0f} samples/s "
        f"({pipe['batch_s'] * 1e3:.1f} ms per batch), load {loadavg()}")

    def fresh_state():  # each step gets its own (the steps donate it)
        return parallel.put_replicated(built.init_state())

    it = train_iterator(source, target, config, B, config.seed)
    host_batches = [next(it) for _ in range(4)]
    del it
    label_rng = np.random.default_rng(0)
    for b in host_batches:
        b["tgt_label"] = label_rng.integers(0, num_classes, B).astype(np.int32)
    fused_batches = [parallel.put_batch({k: v for k, v in b.items()
                                         if k != "tgt_label"})
                     for b in host_batches]
    plain_batches = [parallel.put_batch(b) for b in host_batches]

    fused = JaxRunner("jax fused", parallel, step_lib.make_train_step(
        model, tx, obj_cfg, axis_name=step_lib.AXIS,
        sum_gradients=parallel.sum_gradients), fresh_state(), fused_batches)
    plain = JaxRunner("jax plain CE", parallel,
                      make_plain_step(model, tx, parallel.num_devices),
                      fresh_state(), plain_batches)
    jax_params = sum(x.size for x in jax.tree.leaves(fused.state.params))
    results["jax_params"] = int(jax_params)
    results["compile_s"] = {"fused": fused.compile_s, "plain": plain.compile_s}
    results["flops_per_step"] = {"fused": fused.flops, "plain": plain.flops}
    results["bytes_per_step"] = {"fused": fused.bytes, "plain": plain.bytes}
    results["hlo_instructions"] = {"fused": fused.hlo_instructions,
                                   "plain": plain.hlo_instructions}
    log(f"compile (lower().compile()): fused {fused.compile_s:.1f} s, plain "
        f"{plain.compile_s:.1f} s; optimised HLO instructions fused "
        f"{fused.hlo_instructions}, plain {plain.hlo_instructions}")

    runners = [fused, plain]
    if not args.skip_torch:
        import torch
        import torch_twin
        torch.set_num_threads(usable_cpus())
        device = "cuda" if (jax.default_backend() == "gpu"
                            and torch.cuda.is_available()) else "cpu"
        trainer = torch_twin.TwinTrainer(
            config, num_classes=num_classes, num_bins=num_bins, device=device)
        torch_params = torch_twin.num_params(trainer.model)
        results["torch"] = {"version": torch.__version__, "device": device,
                            "mode": "eager nn.Module (no torch.compile)",
                            "threads": torch.get_num_threads(),
                            "interop_threads": torch.get_num_interop_threads(),
                            "params": torch_params}
        if device == "cuda":  # what "f32" means for torch's kernels there
            results["torch"]["tf32"] = {
                "cudnn": torch.backends.cudnn.allow_tf32,
                "matmul": torch.backends.cuda.matmul.allow_tf32}
        log(f"params: jax {jax_params}, torch twin {torch_params}")
        assert torch_params == jax_params, (torch_params, jax_params)
        runners.append(TorchRunner(trainer, [trainer.to_device(
            {k: v for k, v in b.items() if k != "tgt_label"})
            for b in host_batches]))
    results["threads"] = (
        f"JAX: XLA's default CPU thread pool ({usable_cpus()} usable cores)"
        + (f" with XLA_FLAGS={os.environ['XLA_FLAGS']}"
           if os.environ.get("XLA_FLAGS") else ", no XLA_FLAGS")
        + ("" if args.skip_torch else
           f"; torch: set_num_threads({usable_cpus()}) -> "
           f"{results['torch']['threads']} intra-op, "
           f"{results['torch']['interop_threads']} inter-op"))
    log("threads: " + results["threads"])
    log("malloc (both in this process): " + (
        "one heap keeping freed memory (emodna_jax's default)"
        if results["keep_host_memory"] else
        f"the system's defaults ({host_memory.ENV_VAR}=0 or not glibc)"))

    results["loadavg_before_timing"] = loadavg()
    timing = timed_windows(runners, args.steps, args.windows, args.warmup)
    results["loadavg_after_timing"] = loadavg()
    results["timing"] = timing
    for name, t in timing.items():
        t["samples_per_s"] = 2 * B / t["median_s"]

    if args.breakdown:
        results["breakdown"] = loss_breakdown(args, parallel, model, tx, obj_cfg,
                                              fresh_state, fused_batches,
                                              fused, plain)

    if args.fed_steps:
        results["fed"] = fed_step_time(parallel, fused, source, target, config,
                                       B, args.fed_steps)
    if args.torch_compile and not args.skip_torch:
        log("torch.compile (subprocess) ...")
        results["torch_compile"] = torch_compile_subprocess(
            B, args.steps, args.torch_compile_limit)

    if jax.default_backend() == "gpu" or args.roofline:
        results["roofline"] = roofline_figures(
            fused, timing["jax fused"]["median_s"], args.compute_dtype,
            small=jax.default_backend() == "cpu")

    if not args.skip_memory:
        log(f"peak RSS: running the default config for {args.memory_steps} "
            "steps in a subprocess ...")
        results["memory"] = peak_rss_of_default_run(args, data_dir, B)
        results["memory"]["benchmark_process_peak_rss_gib"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30)
    results["loadavg_end"] = loadavg()

    report(results, args)
    if args.doc:
        from benchmarks import cross_corpus
        text = markdown(results, cross_corpus.reproduce_command(
            "train_step.py", argv, drop=[a for a in (argv or sys.argv[1:])
                                         if a.startswith("--json_out")]))
        cross_corpus.write_section(args.doc, text, args.section)
        log(f"wrote section {args.section!r} of {args.doc}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2, default=str)
        log(f"wrote {args.json_out}")


def loss_breakdown(args, parallel, model, tx, obj_cfg, fresh_state, batches,
                   fused, plain) -> dict:
    """Fused step time with one loss switched off at a time (zero weights are
    removed from the graph), against the same fused and plain runners."""
    import dataclasses
    variants = {"no MMD": dict(w_mmd=0.0), "no L_cd": dict(w_cd=0.0),
                "no L_ca": dict(w_ca=0.0), "no L_cor": dict(w_cor=0.0),
                "source-only CE": dict(w_mmd=0.0, w_cd=0.0, w_ca=0.0, w_cor=0.0)}
    runners = [fused, plain]
    for name, weights in variants.items():
        cfg = dataclasses.replace(obj_cfg, **weights)
        runners.append(JaxRunner(f"fused, {name}", parallel,
                                 step_lib.make_train_step(
                                     model, tx, cfg, axis_name=step_lib.AXIS,
                                     sum_gradients=parallel.sum_gradients),
                                 fresh_state(), batches))
    timing = timed_windows(runners, args.steps, args.windows, args.warmup)
    return {r.name: dict(timing[r.name], compile_s=r.compile_s, flops=r.flops)
            for r in runners}


def roofline_figures(fused: JaxRunner, step_s: float, compute_dtype: str,
                     small: bool) -> dict:
    """Achieved TFLOP/s, the measured ceilings and the fused step's share of
    its roofline (benchmarks/roofline.py), and the device's peak memory.
    ``small``: ceilings from smaller problems (a CPU takes minutes over the
    GPU-sized ones)."""
    out = {"device_kind": jax.devices()[0].device_kind}
    try:   # before the ceilings' own large buffers raise the peak
        stats = jax.devices()[0].memory_stats() or {}
        out["step_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
    except Exception as error:  # not every backend has memory_stats
        out["memory_stats_error"] = repr(error)
    ceilings = roofline.measure_ceilings(
        compute_dtype, **(dict(matmul_size=1024, copy_mib=256, repeats=3)
                          if small else {}))
    out.update(flops_per_step=fused.flops, bytes_per_step=fused.bytes,
               achieved_tflops=fused.flops / step_s / 1e12,
               achieved_tbps=fused.bytes / step_s / 1e12, ceilings=ceilings,
               roofline=roofline.share(fused.flops, fused.bytes, step_s, ceilings))
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def markdown(r: dict, command: str) -> str:
    """The summary as a markdown table (measure, result, target, verdict)."""
    t, s = r["timing"], r["summary"]
    fused, plain = t["jax fused"], t["jax plain CE"]
    gpu = r["backend"] == "gpu"

    def verdict(ok):
        return "ok" if ok else "**missed**"

    rows = [("fused Emo-DNA step / plain cross-entropy step over the same rows",
             f"{s['fused_over_plain']:.2f}x ({1e3 * fused['median_s']:.1f} vs "
             f"{1e3 * plain['median_s']:.1f} ms)",
             f"<= {TARGETS['fused_over_plain']}",
             verdict(s["fused_over_plain"] <= TARGETS["fused_over_plain"])),
            ("input pipeline samples/s / samples/s the fused step consumes",
             f"{s['pipeline_over_step']:.1f}x ({r['pipeline']['samples_per_s']:,.0f} vs "
             f"{fused['samples_per_s']:,.0f})", f">= {TARGETS['pipeline_over_step']:.0f}x",
             verdict(s["pipeline_over_step"] >= TARGETS["pipeline_over_step"]))]
    if "fed_over_prefetched" in s:
        rows.append(("fused step fed by the input pipeline / on prefetched batches",
                     f"{s['fed_over_prefetched']:.2f}x", "<= 1.1x",
                     verdict(s["fed_over_prefetched"] <= 1.1)))
    if "torch_over_jax" in s:
        target = TARGETS["torch_over_jax_gpu" if gpu else "torch_over_jax_cpu"]
        rows.append((f"eager PyTorch {r['torch']['version']} twin / JAX fused step "
                     f"({r['jax_params']:,} parameters in both)",
                     f"{s['torch_over_jax']:.2f}x (best windows "
                     f"{s['torch_over_jax_best']:.2f}x)", f">= {target}x",
                     verdict(s["torch_over_jax"] >= target)
                     if s["torch_ratio_reliable"] else "unreliable: cores oversubscribed"))
    # The program's size beside its compile time: a load-independent measure
    # of what compiling costs, which a busy machine cannot inflate.
    sizes = r.get("hlo_instructions", {})

    def compiled(name):
        return (f"{r['compile_s'][name]:.1f} s" + (
            f" ({sizes[name]:,} optimised HLO instructions)" if name in sizes else ""))

    rows.append(("compile time of the fused step (lower().compile())",
                 compiled("fused"), "<= 5 s", verdict(r["compile_s"]["fused"] <= 5)))
    # The floor under it: the same backbone, optimizer and dropout with no
    # Emo-DNA loss, so what the losses add to the compile reads off the two.
    rows.append(("compile time of the plain cross-entropy step (no Emo-DNA loss)",
                 compiled("plain"), "-", ""))
    if "peak_rss_gib" in s:
        rows.append(("peak RSS of the default run", f"{s['peak_rss_gib']:.2f} GiB",
                     f"< {TARGETS['peak_rss_gib']:.0f} GiB",
                     verdict(s["peak_rss_gib"] < TARGETS["peak_rss_gib"])))
    where = (r["device_kind"] if gpu else
             f"{cpu_model()}, {r['usable_cpus']} of {r['cpu_count']} cores")
    if not r.get("keep_host_memory"):
        command = f"{host_memory.ENV_VAR}=0 {command}"
        where += ", the system's malloc settings"
    lines = [f"Reproduce: `{command}`", "",
             f"{where}; jax {jax.__version__}; batch {r['batch_size_per_stream']} + "
             f"{r['batch_size_per_stream']} utterances of {r['num_frames']} frames, "
             f"{r['compute_dtype']}; load average {r['loadavg_before_timing'][0]} "
             f"before timing, {r['loadavg_after_timing'][0]} after.", "",
             "| measure | result | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def report(r: dict, args):
    B = r["batch_size_per_stream"]
    t = r["timing"]
    fused_s = t["jax fused"]["median_s"]
    plain_s = t["jax plain CE"]["median_s"]
    log("")
    log(f"{'step':<28}{'median ms':>10}{'min..max ms':>16}{'samples/s':>11}"
        f"{'compile s':>11}")
    compile_s = {"jax fused": r["compile_s"]["fused"],
                 "jax plain CE": r["compile_s"]["plain"]}
    rows = dict(t)
    for name, row in r.get("breakdown", {}).items():
        rows.setdefault(name, row)
        compile_s.setdefault(name, row["compile_s"])
    for name, row in rows.items():
        c = compile_s.get(name)
        log(f"{name:<28}{row['median_s'] * 1e3:>10.1f}"
            f"{row['min_s'] * 1e3:>8.1f}..{row['max_s'] * 1e3:<6.1f}"
            f"{2 * B / row['median_s']:>11.0f}"
            f"{'' if c is None else f'{c:.1f}':>11}")
    if "breakdown" in r:
        bd = r["breakdown"]
        log("  (breakdown rows were timed in a second interleaved run: "
            f"fused {bd['jax fused']['median_s'] * 1e3:.1f} ms, plain "
            f"{bd['jax plain CE']['median_s'] * 1e3:.1f} ms there)")
    if "fed" in r:
        log(f"{'jax fused, fed by pipeline':<28}{r['fed']['step_s'] * 1e3:>10.1f}"
            f"{'':>16}{r['fed']['samples_per_s']:>11.0f}   (train.py's loop: "
            f"{r['fed']['loop_order']})")
        log(f"{'  the same, ' + r['fed']['other_order']:<28}"
            f"{r['fed']['other_order_step_s'] * 1e3:>10.1f}")
    log(f"{'input pipeline (host)':<28}{r['pipeline']['batch_s'] * 1e3:>10.1f}"
        f"{'':>16}{r['pipeline']['samples_per_s']:>11.0f}   (per batch of "
        f"{B}+{B})")
    if "torch_compile" in r:
        tc = r["torch_compile"]
        if "error" in tc:
            log(f"torch.compile: failed/skipped: {tc['error']}")
        else:
            log(f"{'torch.compile (separate run)':<28}{tc['step_s'] * 1e3:>10.1f}"
                f"{'':>16}{2 * B / tc['step_s']:>11.0f}"
                f"{tc['first_step_s']:>11.1f}")
    fl, hi = r["flops_per_step"], r["hlo_instructions"]
    log(f"flops/step (XLA cost analysis): fused {fl['fused']:.3g}, plain "
        f"{fl['plain']:.3g} (ratio {fl['fused'] / fl['plain']:.2f}); optimised "
        f"HLO instructions fused {hi['fused']}, plain {hi['plain']} (ratio "
        f"{hi['fused'] / hi['plain']:.1f}); compile ratio "
        f"{r['compile_s']['fused'] / r['compile_s']['plain']:.1f}")
    log(f"threads: {r['threads']}")
    if "torch" in r:
        log(f"torch {r['torch']['version']} on {r['torch']['device']}: "
            f"{r['torch']['mode']}; params torch {r['torch']['params']} == "
            f"jax {r['jax_params']}")
    if "roofline" in r:
        g, c, roof = r["roofline"], r["roofline"]["ceilings"], r["roofline"]["roofline"]
        log(f"{g['device_kind']} ({r['compute_dtype']}): "
            f"{g['achieved_tflops']:.3f} TFLOP/s and {g['achieved_tbps']:.3f} TB/s "
            f"achieved; measured ceilings {c['matmul_tflops']:.3g} TFLOP/s "
            f"({c['dtype']} matmul), {c['bandwidth_tbps']:.2f} TB/s")
        log(f"  roofline floor {roof['floor_s'] * 1e3:.3f} ms ({roof['bound']}-bound, "
            f"{roof['intensity_flop_per_byte']:.1f} FLOP/byte): "
            f"{100 * roof['share']:.1f}% of the roofline")
        if g.get("step_peak_bytes_in_use"):
            log(f"  device peak_bytes_in_use before the ceilings: "
                f"{g['step_peak_bytes_in_use'] / 2**30:.2f} GiB")
    if "memory" in r:
        m = r["memory"]
        log(f"memory run: `{m['command']}` rc={m['returncode']}, "
            f"{m['wall_s']:.0f} s")
        if m["returncode"] != 0:
            log(m.get("output_tail", ""))
    log(f"load average: start {r['loadavg_start']}, timing "
        f"{r['loadavg_before_timing']} -> {r['loadavg_after_timing']}, end "
        f"{r['loadavg_end']} ({r['cpu_count']} CPUs)")

    gpu = r["backend"] == "gpu"
    oversubscribed = r["usable_cpus"] > 1 and max(
        r["loadavg_before_timing"][0],
        r["loadavg_after_timing"][0]) > 1.5 * r["cpu_count"]
    summary = {"compile_fused_over_plain":
               r["compile_s"]["fused"] / r["compile_s"]["plain"]}
    summary["fused_over_plain"] = fused_s / plain_s
    # Best windows: the least disturbed by other jobs on a shared machine.
    summary["fused_over_plain_best"] = (t["jax fused"]["min_s"]
                                        / t["jax plain CE"]["min_s"])
    summary["pipeline_over_step"] = (r["pipeline"]["samples_per_s"]
                                     / t["jax fused"]["samples_per_s"])
    log("")
    log("summary")

    def line(text, ok):
        verdict = ok if isinstance(ok, str) else ("ok" if ok else "MISSED")
        log(f"{text}  [{verdict}]")

    line(f"fused/plain step time ratio: {summary['fused_over_plain']:.2f} "
         f"(target <= {TARGETS['fused_over_plain']}; best windows "
         f"{summary['fused_over_plain_best']:.2f})",
         summary["fused_over_plain"] <= TARGETS["fused_over_plain"])
    line(f"input pipeline / step consumption: {summary['pipeline_over_step']:.1f}x "
         f"(target >= {TARGETS['pipeline_over_step']:.0f}x)",
         summary["pipeline_over_step"] >= TARGETS["pipeline_over_step"])
    if "fed" in r:
        prefetched_s = r["fed"]["prefetched_step_s"]
        summary["fed_over_prefetched"] = r["fed"]["step_s"] / prefetched_s
        log(f"fused step fed by the pipeline / on pre-fetched batches (interleaved): "
            f"{summary['fed_over_prefetched']:.2f}x (target <= 1.1x; train.py's "
            f"order here: {r['fed']['loop_order']}; "
            f"{r['fed']['other_order']} {r['fed']['other_order_step_s'] / prefetched_s:.2f}x)")
    if "torch eager" in t:
        summary["torch_over_jax"] = t["torch eager"]["median_s"] / fused_s
        summary["torch_over_jax_best"] = (t["torch eager"]["min_s"]
                                          / t["jax fused"]["min_s"])
        target = TARGETS["torch_over_jax_gpu" if gpu else "torch_over_jax_cpu"]
        # Oversubscribed, even torch's best windows may hold OpenMP stalls.
        line(f"torch eager / jax step time: {summary['torch_over_jax']:.2f}x "
             f"(target >= {target}x on {'GPU' if gpu else 'CPU'}; best windows "
             f"{summary['torch_over_jax_best']:.2f}x)",
             "UNRELIABLE: cores oversubscribed" if oversubscribed
             else summary["torch_over_jax"] >= target)
        summary["torch_ratio_reliable"] = not oversubscribed
    if "memory" in r and r["memory"]["returncode"] == 0:
        summary["peak_rss_gib"] = r["memory"]["peak_rss_gib"]
        line(f"peak RSS of the default run: {summary['peak_rss_gib']:.2f} GiB "
             f"(target < {TARGETS['peak_rss_gib']:.0f} GiB)",
             summary["peak_rss_gib"] < TARGETS["peak_rss_gib"])
    if oversubscribed:
        log("NOTE: the cores were oversubscribed while timing; the torch ratio "
            "is inflated by OpenMP stalls, rerun when the machine is quieter "
            "or under `taskset -c 0`")
    log(f"(compile time fused/plain: {summary['compile_fused_over_plain']:.1f}x; "
        f"load average during timing {r['loadavg_before_timing'][0]} -> "
        f"{r['loadavg_after_timing'][0]} on {r['cpu_count']} CPUs)")
    if "roofline" in r:
        summary["share_of_roofline"] = r["roofline"]["roofline"]["share"]
        log(f"fused step on {r['roofline']['device_kind']} ({r['compute_dtype']}): "
            f"{t['jax fused']['samples_per_s']:.0f} samples/s, "
            f"{100 * summary['share_of_roofline']:.1f}% of its roofline")
    r["summary"] = summary


if __name__ == "__main__":
    main()
