"""What each ``--mode`` of the entry point does, kept out of main.py."""

from __future__ import annotations

import os

from emodna_jax import config_variants
from emodna_jax import train


def _line(name: str, result: dict) -> str:
    return (f"{name:<12} target UAR {result['target_uar']:.3f}  "
            f"WAR {result['target_war']:.3f}   (source validation UAR "
            f"{result['source_val_uar']:.3f})")


def run(mode: str, config, workdir: str):
    if mode != "train":
        raise ValueError(f"unknown mode {mode!r}")
    result = train.train_and_evaluate(config, workdir)
    if result.get("preempted"):
        return result
    print(_line("emo-dna" if config_variants.adapts(config) else "this run",
                result), flush=True)
    if config.get("compare_source_only") and config_variants.adapts(config):
        baseline = train.train_and_evaluate(
            config_variants.source_only(config),
            os.path.join(workdir, "source_only"))
        print("\nfinal target figures (labels of the target read only here):")
        print(_line("emo-dna", result))
        print(_line("source-only", baseline), flush=True)
    return result
