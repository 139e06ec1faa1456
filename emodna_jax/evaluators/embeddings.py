"""predictions/step_N.npz: every output of every evaluated utterance.

The target's and the source validation's logits, embeddings and labels (and
whatever the evaluators before this one added, such as the OOD scores),
from which the report draws its confusion matrix, embedding plot and
histograms and ``--rescore`` recomputes metrics.csv without the
checkpoints.  The largest file an evaluation writes: leave it out of
``config.evals`` to keep only the tables.
"""

from __future__ import annotations

import os

import numpy as np

from emodna_jax import distributed

STORED_SPLITS = ("target", "source_val")


def path(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, "predictions", f"step_{step}.npz")


def load(out_dir: str, step: int, names=None) -> dict:
    """split -> {array name -> array} of one evaluated step; with ``names``
    ("split/name" keys), those arrays alone: the file is compressed, so an
    array not read is not decompressed."""
    grouped = {}
    with np.load(path(out_dir, step)) as data:
        for key in data.files if names is None else names:
            split, name = key.split("/", 1)
            grouped.setdefault(split, {})[name] = data[key]
    return grouped


class Evaluator:
    splits = STORED_SPLITS

    def __init__(self, context):
        self.context = context

    def run(self, step: int, predictions: dict, state) -> None:
        if not distributed.is_primary():    # every process computes, one writes
            return
        os.makedirs(os.path.dirname(path(self.context.out_dir, step)), exist_ok=True)
        np.savez_compressed(
            path(self.context.out_dir, step),
            **{f"{split}/{k}": v for split in STORED_SPLITS
               for k, v in predictions[split].items()})
