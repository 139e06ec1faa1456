"""What each ``--mode`` of the entry point does, kept out of main.py."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from emodna_jax import config_variants
from emodna_jax import evaluate
from emodna_jax import input_pipeline
from emodna_jax import predict
from emodna_jax import train

MODES = ("train", "evaluate", "watch", "predict", "export")


def _line(name: str, result: dict) -> str:
    return (f"{name:<12} target UAR {result['target_uar']:.3f}  "
            f"WAR {result['target_war']:.3f}   (source validation UAR "
            f"{result['source_val_uar']:.3f})")


def _method_name(config) -> str:
    """'emo-dna', or the baseline a config names (configs/cross_corpus.py)."""
    method = config.method
    return "emo-dna" if method == "emodna" else method


def _train_folds(config, workdir: str) -> int:
    """Single-corpus protocol, every fold: per-fold and mean +- std UAR/WAR."""
    source, _ = input_pipeline.open_task(config_variants.with_fold(config, 0))
    num_folds = len(source.corpus.metadata["fold_speakers"])
    results = []
    for fold in range(num_folds):
        print(f"--- fold {fold} of {num_folds}", flush=True)
        result = train.train_and_evaluate(config_variants.with_fold(config, fold),
                                          os.path.join(workdir, f"fold{fold}"))
        if result.get("preempted"):
            return 0
        results.append(result)
    table = {"folds": [{"fold": k, "uar": r["target_uar"], "war": r["target_war"]}
                       for k, r in enumerate(results)]}
    for key in ("uar", "war"):
        values = np.array([r[key] for r in table["folds"]])
        table[key] = {"mean": float(values.mean()), "std": float(values.std())}
    with open(os.path.join(workdir, "folds.json"), "w") as f:
        json.dump(table, f, indent=2)
    print(f"\n{source.corpus.name}, speaker-independent folds (held-out speakers):")
    for row in table["folds"]:
        print(f"  fold {row['fold']}: UAR {row['uar']:.3f}  WAR {row['war']:.3f}")
    print(f"  mean +- std: UAR {table['uar']['mean']:.3f} +- {table['uar']['std']:.3f}"
          f"  WAR {table['war']['mean']:.3f} +- {table['war']['std']:.3f}", flush=True)
    return 0


def _train(config, workdir: str) -> int:
    if config.data.protocol == "single_corpus" and config.data.fold < 0:
        return _train_folds(config, workdir)
    result = train.train_and_evaluate(config, workdir)
    if result.get("preempted"):
        return 0
    name = _method_name(config) if config_variants.adapts(config) else "this run"
    print(_line(name, result), flush=True)
    if config.compare_source_only and config_variants.adapts(config):
        baseline = train.train_and_evaluate(
            config_variants.source_only(config),
            os.path.join(workdir, "source_only"))
        if baseline.get("preempted"):  # saved; a rerun resumes the comparison
            return 0
        print("\nfinal target figures (labels of the target read only here):")
        print(_line(_method_name(config), result))
        print(_line("source-only", baseline), flush=True)
    print(LAST_STEP_NOTE.format(rule=config.select_by, report=os.path.join(
        workdir, evaluate.EVAL_DIR, "report.md")), flush=True)
    return 0


# Training prints its last step's figures, evaluation those of the step it
# selects: the two differ, and a first run should be told why.
LAST_STEP_NOTE = ("(the last step's figures; the same command with --mode=evaluate "
                  "scores every kept checkpoint, selects one by {rule}, and writes "
                  "{report})")


def _print_summary(summary: dict, workdir: str):
    chosen, last = summary["selected"], summary["last"]
    print(f"selected step {chosen['step']} ({summary['selection_rule']}): target "
          f"UAR {chosen['target']['uar']:.3f}  WAR {chosen['target']['war']:.3f}")
    # The last evaluated step is what training printed unless the newest
    # checkpoints could not be read.
    said = ("what training printed" if not summary.get("unreadable_checkpoints")
            else "the newest readable checkpoint")
    print(f"last step {last['step']} ({said}): target UAR "
          f"{last['target']['uar']:.3f}  WAR {last['target']['war']:.3f}")
    print(f"report: {os.path.join(workdir, evaluate.EVAL_DIR, 'report.md')}",
          flush=True)


def run(mode: str, config, workdir: str, *, force: bool = False, inputs=(),
        checkpoint: int | None = None, as_json: bool = False,
        export_dir: str | None = None) -> int:
    """Runs ``mode``; returns the process exit code."""
    config, note = config_variants.for_feature_kind(config)
    if note:  # on stderr: --json output stays parseable
        print(note, file=sys.stderr, flush=True)
    config = config_variants.with_task_classes(config)
    if mode == "train":
        return _train(config, workdir)
    if mode == "evaluate":
        if config.data.protocol == "single_corpus" and config.data.fold < 0:
            fold_dirs = sorted(d for d in os.listdir(workdir) if d.startswith("fold")
                               and os.path.isdir(os.path.join(workdir, d)))
            for name in fold_dirs:
                fold_dir = os.path.join(workdir, name)
                _print_summary(evaluate.evaluate_checkpoints(
                    config_variants.with_fold(config, int(name[4:])), fold_dir,
                    force=force), fold_dir)
            return 0
        _print_summary(evaluate.evaluate_checkpoints(config, workdir, force=force),
                       workdir)
        return 0
    if mode == "watch":
        _print_summary(evaluate.watch(config, workdir), workdir)
        return 0
    if mode == "predict":
        if not inputs:
            raise ValueError("--mode=predict needs --inputs=FILES_OR_DIRS")
        results = predict.predict_files(config, workdir, inputs,
                                        checkpoint=checkpoint)
        print(predict.format_predictions(results, as_json), flush=True)
        return 1 if any(r.error for r in results) else 0
    if mode == "export":
        from emodna_jax import export  # jax.export, jax2onnx: only here
        written = export.export(config, workdir, export_dir or os.path.join(workdir, "export"),
                                checkpoint)
        steps = written["steps"]
        what = (f"checkpoint {steps[0]}" if len(steps) == 1 else
                f"the mean posterior of checkpoints {', '.join(map(str, steps))}")
        print(f"exported {what} to {written['export_dir']} "
              f"(model.jax for {', '.join(written['platforms'])}; model.onnx; "
              "preprocess.json)", flush=True)
        caveat = export.describe_adaptation(written["adaptation"])
        if caveat:
            print(caveat, flush=True)
        return 0
    raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
