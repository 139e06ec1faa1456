"""A per-utterance memory of the target's posteriors, filled by training itself.

The cluster pseudo-labels (``cluster_labels.py``) need the model's posterior
of every target training utterance.  Running the model over the whole target
for every clustering costs a pass over N utterances each ``cluster_every``
steps: at 10k utterances that is several times the training between two
clusterings, at 100k dozens of times.  But every training step already runs
the model on its own target rows.  Their posterior logits come back with the
step's metrics, and the bank keeps the newest one of each utterance (ATDOC,
Liang et al. 2021, keeps such a memory).  A clustering is then k-means over
the bank, with no forward pass, so its cost is k-means' alone.

What goes stale, and the bound: an utterance's entry is from the last step
that drew it, so at most one target epoch (N / batch steps) old, and it is
the posterior of that step's crop under dropout rather than of the whole
utterance.  ``age`` reports it at every clustering.  An utterance not drawn
yet has no entry and no cluster label until it is drawn and a clustering
follows.

The bank and the labels live on the host, outside the train state, whose
shape therefore does not depend on N; every checkpoint saves them
(``arrays``/``from_arrays``), so a resumed run clusters exactly as an
uninterrupted one.  Every process holds the same bank: the step's metrics
carry the whole global batch's rows.
"""

from __future__ import annotations

import numpy as np

from emodna_jax import cluster_labels as cluster_lib

NEVER = -1   # ``seen`` of an utterance no step has drawn


class TargetBank:
    """Newest posterior logits [N, C] of every target training utterance,
    the step that wrote each, and the cluster labels [N] of the last
    clustering (-1: none)."""

    def __init__(self, num_target: int, num_classes: int):
        self.logits = np.zeros((num_target, num_classes), np.float32)
        self.seen = np.full(num_target, NEVER, np.int32)
        self.labels = np.full(num_target, -1, np.int32)

    def record(self, step: int, index: np.ndarray, logits: np.ndarray) -> None:
        """Step ``step``'s posterior logits of the target rows ``index``."""
        index = np.asarray(index)
        if index.min(initial=0) < 0 or index.max(initial=0) >= len(self.seen):
            raise ValueError(f"target index out of range [0, {len(self.seen)}) "
                             f"at step {step}")
        self.logits[index] = logits
        self.seen[index] = step

    def cluster(self, statistics: np.ndarray) -> np.ndarray:
        """[N] cluster classes of the utterances drawn so far (-1 for the
        rest) from their ``statistics`` [N, S] and banked logits; None when
        fewer utterances than twice the classes were drawn."""
        drawn = np.flatnonzero(self.seen != NEVER)
        if len(drawn) < 2 * self.logits.shape[1]:
            return None
        labels = np.full(len(self.seen), -1, np.int32)
        labels[drawn] = cluster_lib.refine(statistics[drawn], self.logits[drawn])
        return labels

    def pseudo_labels(self, index: np.ndarray) -> np.ndarray:
        """The cluster labels of the target rows ``index`` (-1: none)."""
        return self.labels[np.asarray(index)]

    def age(self, step: int) -> dict:
        """How stale the bank is after ``step``: the share of utterances
        drawn, and the mean and largest age in steps of their entries."""
        drawn = self.seen != NEVER
        ages = step - self.seen[drawn]
        return {"bank_drawn_fraction": float(drawn.mean()),
                "bank_mean_age": float(ages.mean()) if ages.size else float("nan"),
                "bank_max_age": float(ages.max()) if ages.size else float("nan")}

    def arrays(self) -> dict:
        """What a checkpoint stores."""
        return {"logits": self.logits, "seen": self.seen, "labels": self.labels}

    @classmethod
    def from_arrays(cls, stored: dict) -> "TargetBank":
        logits = np.asarray(stored["logits"], np.float32)
        bank = cls(*logits.shape)
        bank.logits[:] = logits
        bank.seen[:] = np.asarray(stored["seen"])
        bank.labels[:] = np.asarray(stored["labels"])
        return bank
