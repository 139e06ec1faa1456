"""Target pseudo-labels from the target's own clusters (``loss.cluster_labels``).

Every ``loss.cluster_every`` steps from the start of adaptation, the train
loop runs the model over the whole target training split and clusters it:
k-means over each utterance's prosody statistics (standardised per speaker,
as the frames carry them) beside the model's standardised log-posteriors,
started from the posterior-weighted class centroids, so that cluster k
stays class k (SHOT's pseudo-labelling, Liang et al. 2020).  The pseudo-label
consumers (class alignment, decoupling, consistency) then read each target
row's cluster instead of the thresholded posterior.

Why: a threshold keeps the classifier's own mistakes, confidently made; the
clusters outvote mistakes scattered over a region the statistics hold
together.  docs/results.md ("What bounds adaptation here: the target's own
clusters") measured the same step after training.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn.cluster import KMeans


def refine(statistics: np.ndarray, logits: np.ndarray, keep: float = 1.0) -> np.ndarray:
    """[N] class of each row: k-means over ``statistics`` beside the
    standardised log-posteriors of ``logits`` (posterior logits, [N, C]),
    started from the posterior-weighted class centroids.  With ``keep`` < 1,
    only that share of each cluster keeps its class, the rows nearest their
    own centroid relative to the next one (the rest are -1): a clustering
    that is unsure of a row does not teach it."""
    log_posterior = log_softmax(np.asarray(logits, np.float64), axis=1)
    spread = np.maximum(log_posterior.std(0), 1e-6)
    features = np.hstack([np.asarray(statistics, np.float64),
                          (log_posterior - log_posterior.mean(0)) / spread])
    posterior = np.exp(log_posterior)
    centroids = (posterior.T @ features) / np.maximum(posterior.sum(0), 1e-12)[:, None]
    kmeans = KMeans(len(centroids), init=centroids, n_init=1, random_state=0)
    labels = kmeans.fit_predict(features).astype(np.int32)
    if keep < 1.0:
        distance = np.sort(kmeans.transform(features), axis=1)
        margin = distance[:, 1] - distance[:, 0]
        for k in np.unique(labels):
            rows = np.flatnonzero(labels == k)
            dropped = rows[np.argsort(-margin[rows], kind="stable")][
                int(np.ceil(keep * len(rows))):]
            labels[dropped] = -1
    return labels


def due(step: int, total_steps: int, adapt_start: float, every: int) -> bool:
    """Whether the clusters are recomputed after ``step``: at the first step
    of adaptation (the end of the source-only warm-up), then every
    ``every`` steps, never after the last."""
    first = max(int(np.ceil(adapt_start * total_steps)), 1)
    return first <= step < total_steps and (step - first) % every == 0


def cluster(predictions: dict, statistics: np.ndarray, num_target: int,
            keep: float = 1.0) -> np.ndarray:
    """[num_target] cluster classes by utterance index (-1: not kept, see
    ``refine``), from the model's ``predictions`` over the target training
    split (``logits`` as posterior logits, ``index``) and the split's
    ``statistics``."""
    index = predictions["index"]
    if len(index) != num_target or len(np.unique(index)) != num_target:
        raise ValueError(f"clustering needs every one of the {num_target} target "
                         f"training utterances once; got {len(index)} rows")
    labels = np.empty(num_target, np.int32)
    labels[index] = refine(statistics[index], predictions["logits"], keep)
    return labels
