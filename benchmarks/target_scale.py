r"""What the target's pseudo-labels cost as the target grows.

  python -m benchmarks.target_scale --out OUT [--sizes 1000,4000,10000]
      [--bank_sizes 100000] [--workers 2] [--doc docs/scale.md]

For each target size N of ``--sizes``, in one run:

* a synthetic pair (``data_prep.synthetic``): a 300-utterance source (6
  speakers) and an N-utterance target (40 speakers, another channel), clips
  of 1-2 s, prepared by data_prep with ``--workers`` (utterances/s of the
  build: features and shards);
* the recipe (``configs/cross_corpus.py``, 400 steps) trained twice, each
  in its own process: with the target's cluster pseudo-labels and with
  ``--config.loss.cluster_labels=False``.  Wall seconds of the whole run,
  steps/s after the compiling window, peak RSS, and from the training log
  the clusterings' seconds (the upkeep) and their share of the wall time;
* evaluation utterances/s over the target's training split (the final
  checkpoint, second pass);
* the full-pass design the target bank replaced, computed from the same
  runs: each clustering ran the model over the whole target, so its upkeep
  is clusterings x N / the evaluation rate, added to the run without
  clusters.

For each size of ``--bank_sizes`` (no corpus is built): the upkeep alone on
a bank of that size (drawn posteriors and statistics with class structure), a clustering's
seconds against the ``cluster_every`` steps between two clusterings at the
step time measured above, and the host bytes the bank and the statistics
hold per target utterance.  The tables are written to OUT/target_scale.md
(and into ``--doc``'s generated section); nothing in them is typed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from data_prep import builder
from data_prep import corpora
from data_prep import synthetic
from data_prep.features import FeatureConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = "scale_source"
FEATURES = FeatureConfig(kind="logmel_pitch", sample_rate=16000, n_mels=64)
TARGET_SPEAKERS = 40


def target_name(size: int) -> str:
    return f"scale_target_{size}"


def specs(size: int) -> tuple:
    """The source and an N-utterance target (1-2 s clips, 40 speakers)."""
    if size % TARGET_SPEAKERS:
        raise ValueError(f"--sizes: {size} is not a multiple of {TARGET_SPEAKERS} speakers")
    source = synthetic.CorpusSpec(name=SOURCE, sample_rate=16000, n_speakers=6,
                                  utterances_per_speaker=50, duration_s=(1.0, 2.0))
    target = synthetic.CorpusSpec(
        name=target_name(size), sample_rate=16000, n_speakers=TARGET_SPEAKERS,
        utterances_per_speaker=size // TARGET_SPEAKERS, duration_s=(1.0, 2.0),
        intensity=0.9, channel=synthetic.ChannelSpec(
            highpass_hz=150.0, lowpass_hz=6000.0, snr_db=(30.0, 40.0),
            rt60_s=(0.3, 0.6), drr_db=6.0))
    return source, target


def prepare(spec, raw_dir: str, data_dir: str, workers: int) -> dict:
    """Synthesises and prepares one corpus (reused when already prepared);
    the build's utterances/s, or None when reused."""
    manifest = synthetic.generate_corpus(spec, raw_dir)
    records = corpora.parse_csv(str(manifest), name=spec.name)[0]
    if builder.is_complete(builder.dataset_dir(data_dir, spec.name, FEATURES)):
        return {"utterances": len(records), "prep_per_s": None}
    started = time.perf_counter()
    builder.build_corpus(records, corpus=spec.name, root=os.path.dirname(str(manifest)),
                         data_dir=data_dir, feature_config=FEATURES, workers=workers,
                         progress=False)
    return {"utterances": len(records),
            "prep_per_s": len(records) / (time.perf_counter() - started)}


def train(size: int, data_dir: str, workdir: str, clusters: bool) -> dict:
    """One recipe run in its own process: wall seconds, peak RSS (MiB) and
    what its training log says of speed and upkeep."""
    command = [sys.executable, "-m", "emodna_jax.main",
               f"--config=configs/cross_corpus.py:{SOURCE},{target_name(size)}",
               f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
    if not clusters:
        command += ["--config.loss.cluster_labels=False",
                    "--config.loss.cluster_agreement=False"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    errors = process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"training {workdir} failed: {errors[-2000:]}")
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    windows = [r["steps_per_second"] for r in lines if r["split"] == "train"]
    upkeep = [r["cluster_seconds"] for r in lines if r["split"] == "pseudo"]
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
            "steps_per_s": statistics.median(windows[1:] or windows),
            "clusterings": len(upkeep), "upkeep_s": float(sum(upkeep))}


def evaluation_rate(size: int, data_dir: str, workdir: str) -> float:
    """Target utterances/s of the eval step over the target's training split
    (what the full-pass design ran at every clustering), second pass."""
    from configs import cross_corpus
    from emodna_jax import checkpointing
    from emodna_jax import config_variants
    from emodna_jax import evaluate
    config = cross_corpus.get_config(f"{SOURCE},{target_name(size)}")
    config.data.data_dir = data_dir
    config = config_variants.with_task_classes(config)
    built, evaluator = evaluate.evaluation_setup(config)
    reader = checkpointing.Checkpointer(workdir, read_only=True)
    state = reader.restore_state(reader.latest_step(), built.abstract_state())
    reader.close()
    target = built.target
    evaluator.predict(state, target, target.train_split, include_excluded=True)
    started = time.perf_counter()
    rows = evaluator.predict(state, target, target.train_split, include_excluded=True)
    return len(rows["index"]) / (time.perf_counter() - started)


def bank_upkeep(size: int, num_classes: int, batch: int, repeats: int = 3) -> dict:
    """A clustering's seconds (median of ``repeats``) and a step's recording
    seconds on a bank of ``size`` utterances, and its host bytes per
    utterance with the statistics."""
    from emodna_jax import target_bank
    from emodna_jax import utterance_stats
    rng = np.random.default_rng(0)
    # Classes as a target has them: statistics whose class means lie about
    # one std apart, posteriors that lean to the true class.
    truth = rng.integers(0, num_classes, size)
    means = rng.normal(size=(num_classes, utterance_stats.NUM_STATS))
    stats = (means[truth] + rng.normal(size=(size, utterance_stats.NUM_STATS))
             ).astype(np.float32)
    logits = 2.0 * np.eye(num_classes)[truth] + rng.normal(size=(size, num_classes))
    bank = target_bank.TargetBank(size, num_classes)
    order = rng.permutation(size)
    started = time.perf_counter()
    for step, rows in enumerate(np.array_split(order, max(size // batch, 1))):
        bank.record(step, rows, logits[rows])
    record_s = (time.perf_counter() - started) / max(size // batch, 1)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        bank.cluster(stats)
        seconds.append(time.perf_counter() - started)
    held = sum(a.nbytes for a in bank.arrays().values())
    # SpeakerStats keeps the raw statistics (float64) and of_split gives them
    # standardised (float32): both stay on the host for the run.
    held += size * utterance_stats.NUM_STATS * (8 + 4)
    return {"size": size, "cluster_s": statistics.median(seconds), "record_s": record_s,
            "bytes_per_utterance": held / size}


def markdown(rows: list, banks: list, command: str, every: int, step_s: float) -> str:
    lines = ["<!-- Written by benchmarks/target_scale.py; do not edit by hand. -->", "",
             f"Reproduce: `{command}`", "",
             "| target utterances | data_prep utt/s | with clusters: wall s | steps/s | "
             "upkeep s (clusterings) | upkeep share | peak RSS MiB | without clusters: "
             "wall s | steps/s | peak RSS MiB | ratio | eval utt/s | full-pass design: "
             "upkeep s | share | ratio |", "|" + "---|" * 15]
    for r in rows:
        on, off = r["on"], r["off"]
        old = r["clusterings_full_pass_s"]
        prep = "reused" if r["prep_per_s"] is None else f"{r['prep_per_s']:.0f}"
        lines.append(
            f"| {r['size']} | {prep} | {on['wall_s']:.0f} | {on['steps_per_s']:.2f} | "
            f"{on['upkeep_s']:.2f} ({on['clusterings']}) | "
            f"{on['upkeep_s'] / on['wall_s']:.1%} | {on['peak_rss_mib']:.0f} | "
            f"{off['wall_s']:.0f} | {off['steps_per_s']:.2f} | {off['peak_rss_mib']:.0f} | "
            f"**{on['wall_s'] / off['wall_s']:.2f}** | {r['eval_per_s']:.0f} | {old:.0f} | "
            f"{old / (off['wall_s'] + old):.1%} | {(off['wall_s'] + old) / off['wall_s']:.2f} |")
    if banks:
        lines += ["", f"The upkeep alone on larger banks, against {every} steps of "
                  f"{step_s * 1000:.0f} ms (the largest run above without clusters):", "",
                  "| bank utterances | one clustering s | recording one step's rows ms | "
                  f"share of {every} steps | host bytes per utterance |", "|---|---|---|---|---|"]
        for b in banks:
            share = b["cluster_s"] / (b["cluster_s"] + every * (step_s + b["record_s"]))
            lines.append(f"| {b['size']} | {b['cluster_s']:.2f} | {b['record_s'] * 1000:.3f} "
                         f"| **{share:.1%}** | {b['bytes_per_utterance']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Corpora, runs and the table.")
    parser.add_argument("--sizes", default="1000,4000,10000")
    parser.add_argument("--bank_sizes", default="100000")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--doc", default=None)
    parser.add_argument("--tables_only", action="store_true",
                        help="Write the tables from OUT's finished runs (rows.json); "
                             "only the bank sizes are measured again.")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows_path = os.path.join(args.out, "rows.json")
    rows = (json.load(open(rows_path)) if args.tables_only
            else measure_runs(args, sizes, rows_path))
    sizes = [row["size"] for row in rows] or sizes
    from configs import cross_corpus as preset
    config = preset.get_config(f"{SOURCE},{target_name(sizes[-1] if sizes else 1000)}")
    step_s = 1.0 / rows[-1]["off"]["steps_per_s"] if rows else 0.1
    banks = [bank_upkeep(int(s), len(synthetic.DEFAULT_EMOTIONS), config.batch_size)
             for s in args.bank_sizes.split(",") if s]
    from benchmarks import cross_corpus
    text = markdown(rows, banks, cross_corpus.reproduce_command(
        "target_scale.py", argv, drop=("--tables_only",)), config.loss.cluster_every, step_s)
    with open(os.path.join(args.out, "target_scale.md"), "w") as f:
        f.write(text)
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, "target_scale")
    return 0


def measure_runs(args, sizes: list, rows_path: str) -> list:
    """Every size's corpora, runs and evaluation rate; rows.json after each."""
    raw_dir, data_dir = (os.path.join(args.out, d) for d in ("raw", "data"))
    rows = []
    for size in sizes:
        source, target = specs(size)
        prepare(source, raw_dir, data_dir, args.workers)
        row = dict(prepare(target, raw_dir, data_dir, args.workers), size=size)
        for key, clusters in (("on", True), ("off", False)):
            workdir = os.path.join(args.out, "runs", f"{size}_{key}")
            if os.path.exists(workdir):
                raise FileExistsError(f"{workdir}: a run of an earlier measurement; "
                                      "remove it or use another --out")
            row[key] = train(size, data_dir, workdir, clusters)
            print(f"{size} utterances, clusters {key}: {row[key]['wall_s']:.0f} s", flush=True)
        row["eval_per_s"] = evaluation_rate(size, data_dir,
                                            os.path.join(args.out, "runs", f"{size}_off"))
        row["clusterings_full_pass_s"] = row["on"]["clusterings"] * size / row["eval_per_s"]
        rows.append(row)
        with open(rows_path, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(main())
