"""Target pseudo-labels from the target's own clusters (``loss.cluster_labels``).

Every ``loss.cluster_every`` steps from the start of adaptation, the train
loop clusters the target bank (``target_bank.py``: the newest posterior the
training step itself computed for each target training utterance, so no
pass over the target is made): k-means over each utterance's prosody statistics (standardised per speaker,
as the frames carry them) beside the model's standardised log-posteriors,
started from the posterior-weighted class centroids, so that cluster k
stays class k (SHOT's pseudo-labelling, Liang et al. 2020).  The pseudo-label
consumers (class alignment, decoupling, consistency) then read each target
row's cluster instead of the thresholded posterior.

Why: a threshold keeps the classifier's own mistakes, confidently made; the
clusters outvote mistakes scattered over a region the statistics hold
together.  docs/results.md ("What bounds adaptation here: the target's own
clusters") measured the same step after training.

``loss.cluster_agreement`` (``agreement``) checks the clusters against
the classifier once, at the first clustering, before any pseudo-label has
taught: a cluster on whose utterances the classifier puts more than half of
its posterior mass on one other class contradicts its own class.  Between corpora whose
actors swap two emotions that is what the target looks like, and no
label-free method can tell which of the two names is right, so such a class
is not adapted: its cluster gives no pseudo-label, and the diversity term
counts it with the class the classifier gives it (docs/losses.md, section 4).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn.cluster import KMeans


# k-means is fitted on at most this many rows and then assigns every row
# (HuBERT fits its k-means on a tenth of the data), so that a clustering's
# cost stops growing with the target beyond it; a smaller target is fitted whole.
FIT_ROWS = 20_000


def refine(statistics: np.ndarray, logits: np.ndarray,
           fit_rows: int = FIT_ROWS) -> np.ndarray:
    """[N] class of each row: k-means over ``statistics`` beside the
    standardised log-posteriors of ``logits`` (posterior logits, [N, C]),
    started from the posterior-weighted class centroids, fitted on a fixed
    draw of ``fit_rows`` rows when there are more."""
    log_posterior = log_softmax(np.asarray(logits, np.float64), axis=1)
    spread = np.maximum(log_posterior.std(0), 1e-6)
    features = np.hstack([np.asarray(statistics, np.float64),
                          (log_posterior - log_posterior.mean(0)) / spread])
    posterior = np.exp(log_posterior)
    centroids = (posterior.T @ features) / np.maximum(posterior.sum(0), 1e-12)[:, None]
    kmeans = KMeans(len(centroids), init=centroids, n_init=1, random_state=0)
    if len(features) <= fit_rows:
        return kmeans.fit_predict(features).astype(np.int32)
    sample = np.random.default_rng(0).choice(len(features), fit_rows, replace=False)
    return kmeans.fit(features[sample]).predict(features).astype(np.int32)


def first_step(total_steps: int, adapt_start: float) -> int:
    """The step after which the target is first clustered: the first step of
    adaptation (the end of the source-only warm-up)."""
    return max(int(np.ceil(adapt_start * total_steps)), 1)


def due(step: int, total_steps: int, adapt_start: float, every: int) -> bool:
    """Whether the clusters are recomputed after ``step``: at ``first_step``,
    then every ``every`` steps, never after the last."""
    first = first_step(total_steps, adapt_start)
    return first <= step < total_steps and (step - first) % every == 0


def votes(labels: np.ndarray, posteriors: np.ndarray) -> np.ndarray:
    """[cluster, class] the classifier's posterior mass summed over each
    cluster's rows (``posteriors`` [N, C], rows of -1 left out): soft votes,
    so that a near tie between two classes on many rows counts as one."""
    posteriors = np.asarray(posteriors, np.float64)
    num_classes = posteriors.shape[1]
    counts = np.zeros((num_classes, num_classes))
    clustered = labels >= 0
    np.add.at(counts, labels[clustered], posteriors[clustered])
    return counts


def agreement(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(agrees [C] bool, groups [C] int32)`` from ``votes``' counts.

    Cluster k contradicts its class when the classifier gives one other
    class a strict majority of the cluster's posterior mass; otherwise it
    agrees (a minority is what the clusters are there to outvote).  A contradicted class shares a
    group with the class that took its majority (the diversity term counts
    their posterior mass together); every group is named by its smallest
    class, so with no contradiction ``groups`` is ``arange(C)``.
    """
    num_classes = len(counts)
    parent = np.arange(num_classes)

    def root(c):
        while parent[c] != c:
            c = parent[c]
        return c

    agrees = np.ones(num_classes, bool)
    for k in range(num_classes):
        others = counts[k].copy()
        others[k] = 0
        winner = int(np.argmax(others))
        if others[winner] * 2 > counts[k].sum():
            agrees[k] = False
            a, b = sorted((root(k), root(winner)))
            parent[b] = a
    return agrees, np.array([root(c) for c in range(num_classes)], np.int32)


def without_contradicted(labels: np.ndarray, agrees: np.ndarray) -> np.ndarray:
    """``labels`` with the rows of every contradicted cluster set to -1."""
    agrees = np.asarray(agrees, bool)
    return np.where((labels >= 0) & agrees[np.maximum(labels, 0)], labels,
                    -1).astype(np.int32)
