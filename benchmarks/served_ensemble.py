r"""What an export serves, checked on real audio: the selected checkpoint
and the checkpoint ensemble, exported from trained runs and run by the
Predictor on the target corpus's own files, against what evaluation
reported for the same runs.

  python benchmarks/served_ensemble.py --data_dir=DATA --out=OUT \
      --runs=hi_festival:en_subdued:emodna:0,... \
      [--doc=docs/serving.md --section=served_ensemble]

Each run ``SRC:TGT:METHOD:SEED`` is a workdir benchmarks/cross_corpus.py
trained and evaluated under ``OUT`` (with the ``embeddings`` evaluator).
For ``config.serve`` = 'selected' and 'checkpoint_ensemble' the run is
exported, and the export's Predictor reads every target wav
from disk, one speaker's files together (as evaluation normalised them).
The table gives the target UAR of those predictions beside the figure
evaluation wrote into ``eval/summary.json``, and the share of utterances
whose served emotion is the one evaluation's stored posteriors name.
Nothing in it is typed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.cross_corpus import reproduce_command, run_dir, write_section
from configs import cross_corpus
from emodna_jax import checkpoint_ensemble
from emodna_jax import config_variants
from emodna_jax import evaluate
from emodna_jax import export
from emodna_jax import input_pipeline
from emodna_jax import metrics as metrics_lib
from emodna_jax import serving

SERVED = ("selected", "checkpoint_ensemble")


def run_config(workdir: str, data_dir: str):
    with open(os.path.join(workdir, "result.json")) as f:
        result = json.load(f)
    source, target = result["task"].split(":")
    config = cross_corpus.get_config(f"{source},{target},{result['method']}")
    config.seed = int(result["seed"])
    config.data.data_dir = data_dir
    return config_variants.with_task_classes(config), result


def stored_mean_posterior(workdir: str, config, steps=None):
    """``(steps, index, label, mean posterior)`` of the target from a run's
    stored predictions of ``steps`` (default: the checkpoint ensemble its
    evaluation scored); a one-line error where they are not all stored."""
    out_dir = os.path.join(workdir, evaluate.EVAL_DIR)
    if steps is None:
        with open(os.path.join(out_dir, "summary.json")) as f:
            steps = json.load(f)["checkpoint_ensemble"]["steps"]
    stored = checkpoint_ensemble.stored_posteriors(
        out_dir, steps, lambda outputs: evaluate._posterior(config, outputs))
    if stored is None:
        raise FileNotFoundError(f"{workdir}: its checkpoints' predictions are not all "
                                "stored; evaluate it with the embeddings evaluator")
    index, label, posteriors = stored
    return steps, index, label, checkpoint_ensemble.mean_posterior(posteriors)


def target_files(config):
    """Evaluation's target utterances: ``{speaker: [(index, wav path)]}``."""
    _, target = input_pipeline.open_task(config)
    corpus = target.corpus
    rows = corpus.source(target.train_split)
    root = corpus.metadata["source"]
    by_speaker = {}
    for i in range(len(rows)):
        name = corpus.metadata["speakers"][int(rows[i]["speaker"])]
        by_speaker.setdefault(name, []).append(
            (i, os.path.join(root, rows[i]["path"].decode())))
    return by_speaker


def check_run(workdir: str, data_dir: str, scratch: str) -> list[str]:
    config, result = run_config(workdir, data_dir)
    with open(os.path.join(workdir, evaluate.EVAL_DIR, "summary.json")) as f:
        summary = json.load(f)
    files = target_files(config)
    lines = []
    for serve in SERVED:
        config.serve = serve
        folder = os.path.join(scratch, f"{os.path.basename(workdir)}_{serve}")
        written = export.export(config, workdir, folder)
        predictor = serving.Predictor.load(folder)
        served = {}
        for speaker, items in files.items():
            for (i, _), prediction in zip(items, predictor.predict_batch(
                    [p for _, p in items], speaker=speaker)):
                served[i] = predictor.classes.index(prediction.emotion)
        _, index, label, posterior = stored_mean_posterior(workdir, config,
                                                           written["steps"])
        keep = label != input_pipeline.EXCLUDED
        predicted = np.array([served[int(i)] for i in index])
        uar = metrics_lib.classification_report(label[keep], predicted[keep],
                                                len(config.data.classes))["uar"]
        reported = (summary["checkpoint_ensemble"]["uar"] if serve == "checkpoint_ensemble"
                    else summary["selected"]["target"]["uar"])
        agree = float(np.mean(predicted == posterior.argmax(1)))
        steps = written["steps"]
        what = (f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} checkpoints "
                f"({steps[0]}-{steps[-1]})")
        lines.append(f"| {result['task'].replace(':', ' → ')} | {result['method']} | "
                     f"{result['seed']} | {serve} ({what}) | {reported:.3f} | {uar:.3f} | "
                     f"{agree:.3f} ({len(index)}) |")
        print(lines[-1], flush=True)
    return lines


def parse_runs(parser, text: str) -> list[tuple[str, str, int]]:
    """``--runs`` as (SRC:TGT, METHOD, SEED), every entry checked before the
    first export, so a typo late in the list wastes no export."""
    runs = []
    for entry in text.split(","):
        parts = entry.strip().split(":")
        if len(parts) != 4 or not all(parts) or not parts[3].isdigit():
            parser.error(f"--runs: {entry.strip()!r} is not SRC:TGT:METHOD:SEED")
        runs.append((f"{parts[0]}:{parts[1]}", parts[2], int(parts[3])))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True, help="benchmarks/cross_corpus.py's --out")
    parser.add_argument("--runs", required=True, help="comma-separated SRC:TGT:METHOD:SEED")
    parser.add_argument("--doc", default="")
    parser.add_argument("--section", default="served_ensemble")
    args = parser.parse_args(argv)
    runs = parse_runs(parser, args.runs)
    lines = ["Target UAR as evaluation reported it and as the exported folder "
             "predicts it from the target's wav files (the jax backend, one "
             "speaker's files together); agreement: the share of target "
             "utterances whose served emotion is the argmax of evaluation's "
             "stored posteriors (of the same checkpoints).", "",
             "| task | method | seed | served | evaluation's UAR | served UAR "
             "| agreement (utterances) |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        for task, method, seed in runs:
            lines += check_run(run_dir(args.out, task, method, seed), args.data_dir,
                               scratch)
    command = reproduce_command("served_ensemble.py", argv)
    text = "\n".join([f"Reproduce: `{command}`", ""] + lines)
    print(text)
    if args.doc:
        write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
