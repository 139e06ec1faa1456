"""What each ``--mode`` of the entry point does, kept out of main.py."""

from __future__ import annotations

import os

from emodna_jax import config_variants
from emodna_jax import evaluate
from emodna_jax import predict
from emodna_jax import train

MODES = ("train", "evaluate", "watch", "predict")


def _line(name: str, result: dict) -> str:
    return (f"{name:<12} target UAR {result['target_uar']:.3f}  "
            f"WAR {result['target_war']:.3f}   (source validation UAR "
            f"{result['source_val_uar']:.3f})")


def _train(config, workdir: str) -> int:
    result = train.train_and_evaluate(config, workdir)
    if result.get("preempted"):
        return 0
    print(_line("emo-dna" if config_variants.adapts(config) else "this run",
                result), flush=True)
    if config.get("compare_source_only") and config_variants.adapts(config):
        baseline = train.train_and_evaluate(
            config_variants.source_only(config),
            os.path.join(workdir, "source_only"))
        print("\nfinal target figures (labels of the target read only here):")
        print(_line("emo-dna", result))
        print(_line("source-only", baseline), flush=True)
    return 0


def _print_summary(summary: dict, workdir: str):
    chosen = summary["selected"]
    print(f"selected step {chosen['step']} ({summary['selection_rule']}): target "
          f"UAR {chosen['target']['uar']:.3f}  WAR {chosen['target']['war']:.3f}")
    print(f"report: {os.path.join(workdir, evaluate.EVAL_DIR, 'report.md')}",
          flush=True)


def run(mode: str, config, workdir: str, *, force: bool = False, inputs=(),
        checkpoint: int | None = None, as_json: bool = False) -> int:
    """Runs ``mode``; returns the process exit code."""
    if mode == "train":
        return _train(config, workdir)
    if mode == "evaluate":
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
    raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
