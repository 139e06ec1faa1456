"""Per-bin normalisation statistics, kept per speaker so any split can use them.

Corpora differ in level and channel; the trainer standardises each corpus
with the mean and std of its own *training* frames.  Because speaker-
independent folds each have a different training set, the shards keep exact
per-speaker sums (count, sum, sum of squares, in float64) and any set of
speakers combines them.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


class GroupSums:
    """Accumulates per-bin frame sums per group (a speaker, a split)."""

    def __init__(self):
        self.sums = {}

    def add(self, group: str, frames: int, total: np.ndarray,
            squares: np.ndarray):
        count, old_total, old_squares = self.sums.get(group, (0, 0.0, 0.0))
        self.sums[group] = (count + frames, old_total + total,
                            old_squares + squares)

    def to_json(self) -> dict:
        return {group: {"frames": int(count),
                        "sum": np.asarray(total, np.float64).tolist(),
                        "sum_sq": np.asarray(squares, np.float64).tolist()}
                for group, (count, total, squares) in sorted(self.sums.items())}


def mean_std(group_sums: dict, groups: Iterable[str]):
    """Per-bin mean and std over all frames of ``groups``.

    ``group_sums`` is the JSON form written by :meth:`GroupSums.to_json`.
    """
    groups = list(groups)
    missing = [g for g in groups if g not in group_sums]
    if missing:
        raise KeyError(f"no normalisation sums for {missing}")
    if not groups:
        raise ValueError("normalisation statistics need at least one group")
    count = sum(group_sums[g]["frames"] for g in groups)
    total = sum(np.asarray(group_sums[g]["sum"]) for g in groups)
    squares = sum(np.asarray(group_sums[g]["sum_sq"]) for g in groups)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return mean, std
