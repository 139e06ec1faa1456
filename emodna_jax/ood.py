"""Out-of-distribution scores and metrics for the reliability study.

Question: does the model know when an utterance's emotion lies outside its
classes? In-distribution (ID) = test utterances of the task's classes; OOD =
utterances of the same corpus whose emotions the task excludes (e.g. fear,
disgust, surprise).

Convention: EVERY score here is "higher = more in-distribution". The metrics
therefore treat ID as the positive class (AUPR-Out negates the scores and
makes OOD the positive class).

Numpy only, float64 throughout: it runs on host arrays of model outputs
(logits, penultimate features) collected after evaluation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from sklearn import metrics as sklearn_metrics


# ----------------------------------------------------------------------------
# Logit-based scores.


def _logits_2d(logits) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be [N, C] with C >= 1, got shape "
                         f"{logits.shape}")
    return logits


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp, shifted by the row max so nothing overflows."""
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def max_softmax_probability(logits) -> np.ndarray:
    """MSP (Hendrycks & Gimpel, 2017): the confidence of the predicted class.

    Computed as 1 / sum_j exp(l_j - max l), which never overflows.
    """
    logits = _logits_2d(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return 1.0 / np.exp(shifted).sum(axis=1)


def max_logit(logits) -> np.ndarray:
    """Largest unnormalised logit (Hendrycks et al., 2022): keeps the scale
    that softmax throws away."""
    return _logits_2d(logits).max(axis=1)


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy T * logsumexp(logits / T) (Liu et al., 2020).

    Higher = ID. As T -> 0 it tends to the max logit; at T = 1 it also counts
    the mass of the runner-up classes, which MSP saturates away.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = _logits_2d(logits)
    return temperature * _logsumexp(logits / temperature)


SCORES = {
    "msp": max_softmax_probability,
    "max_logit": max_logit,
    "energy": energy_score,
}


def checkpoint_ensemble_score(name: str, logits) -> np.ndarray:
    """[N]: the mean over checkpoints of logit score ``name`` of ``logits``
    [K, N, C] (one row of posterior logits per checkpoint).  The score of a
    checkpoint ensemble (emodna_jax/checkpoint_ensemble.py): not the score
    of the mean posterior, whose log is normalised, so that its energy is 0
    for every input; each checkpoint's own evidence is averaged instead."""
    if name not in SCORES:
        raise ValueError(f"ood_score={name!r}: a checkpoint ensemble is scored by a "
                         f"logit score, one of {', '.join(SCORES)}")
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 3:
        raise ValueError(f"logits must be [K, N, C], got shape {logits.shape}")
    return np.mean([SCORES[name](one) for one in logits], axis=0)


# ----------------------------------------------------------------------------
# Feature-based score: class-conditional Gaussians with a tied covariance.


@dataclasses.dataclass(frozen=True)
class GaussianClassModel:
    """Class means [C, D] and the shared precision (inverse covariance) [D, D]."""

    means: np.ndarray
    precision: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]


def fit_mahalanobis(features, labels, num_classes: int, *,
                    shrinkage: float = 1e-6) -> GaussianClassModel:
    """Fits class means and one shared covariance (Lee et al., 2018).

    The covariance is the (1/N) scatter of the within-class centred features;
    sharing it across classes keeps it estimable on small SER training sets.
    It is regularised by ``shrinkage * trace / D`` on the diagonal (scale-free,
    so the same value works for any feature magnitude) because penultimate
    features are often rank-deficient (D > N, or collapsed directions).
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be [N] = [{features.shape[0]}], got "
                         f"shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values "
                         f"from {labels.min()} to {labels.max()}")
    counts = np.bincount(labels, minlength=num_classes)
    missing = np.flatnonzero(counts == 0).tolist()
    if missing:
        raise ValueError(f"classes {missing} have no training sample; their "
                         f"mean is undefined")

    num, dim = features.shape
    sums = np.zeros((num_classes, dim))
    np.add.at(sums, labels, features)
    means = sums / counts[:, None]
    centred = features - means[labels]
    covariance = centred.T @ centred / num
    # A zero trace (every sample on its class mean) would make the shrinkage
    # vanish; fall back to unit scale so the result is still invertible.
    trace = np.trace(covariance)
    scale = trace / dim if trace > 0 else 1.0
    covariance = covariance + shrinkage * scale * np.eye(dim)
    try:
        # Cholesky: P = L^-T L^-1 is symmetric by construction and cheaper
        # and stabler than a general inverse.
        lower_inv = np.linalg.inv(np.linalg.cholesky(covariance))
        precision = lower_inv.T @ lower_inv
    except np.linalg.LinAlgError:
        # Only reachable with shrinkage=0 on singular features.
        precision = np.linalg.pinv(covariance, hermitian=True)
    return GaussianClassModel(means=means, precision=precision)


def mahalanobis_score(model: GaussianClassModel, features) -> np.ndarray:
    """- min_c (x - mu_c)^T P (x - mu_c): higher (closer to 0) = more ID.

    Loops over the (few) classes and forms x - mu_c explicitly instead of
    expanding the quadratic, which would cancel catastrophically near a mean
    and cost an [N, C, D] temporary otherwise.
    """
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[1] != model.means.shape[1]:
        raise ValueError(f"features must be [N, {model.means.shape[1]}], got "
                         f"shape {features.shape}")
    best = np.full(features.shape[0], np.inf)
    for mean in model.means:
        diff = features - mean
        distance = np.einsum("nd,de,ne->n", diff, model.precision, diff)
        best = np.minimum(best, distance)
    return -best


def compute_scores(logits, features=None,
                   gaussian: GaussianClassModel | None = None) -> dict:
    """Every score by name; 'mahalanobis' too when features and a model are
    both given (one without the other is a mistake, so it raises)."""
    scores = {name: fn(logits) for name, fn in SCORES.items()}
    if (features is None) != (gaussian is None):
        raise ValueError("the Mahalanobis score needs both features and a "
                         "fitted gaussian model; got only one")
    if features is not None:
        num = np.shape(logits)[0]
        if np.shape(features)[0] != num:
            raise ValueError(f"features have {np.shape(features)[0]} rows but "
                             f"logits have {num}")
        scores["mahalanobis"] = mahalanobis_score(gaussian, features)
    return scores


# ----------------------------------------------------------------------------
# Metrics. ID is the positive class; scores are "higher = more ID".


def _scores_1d(scores, name: str) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} scores must be 1-D, got shape {scores.shape}")
    if scores.size == 0:
        raise ValueError(f"{name} scores are empty; the metrics need at least "
                         f"one {name} sample")
    if np.isnan(scores).any():
        raise ValueError(f"{name} scores contain NaN")
    return scores


def _labelled(positive, negative):
    positive = _scores_1d(positive, "positive")
    negative = _scores_1d(negative, "negative")
    return (np.concatenate([np.ones(positive.size), np.zeros(negative.size)]),
            np.concatenate([positive, negative]))


def auroc(positive, negative) -> float:
    """P(random positive score > random negative score), ties counting 1/2
    (sklearn's ``roc_auc_score``)."""
    return float(sklearn_metrics.roc_auc_score(*_labelled(positive, negative)))


def average_precision(positive, negative) -> float:
    """Step-wise AP over the distinct scores, tied samples entering together
    (sklearn's ``average_precision_score``)."""
    return float(sklearn_metrics.average_precision_score(*_labelled(positive, negative)))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """Fraction of OOD samples accepted when ``tpr`` of ID samples are.

    The threshold t is the LARGEST value with at least ``tpr`` of ID scores
    >= t: sort ID scores descending, t = sorted[ceil(tpr * n_id) - 1] (an
    order statistic, no interpolation). FPR = #(OOD >= t) / n_ood, so OOD
    scores tied with t count as accepted. With ties at t the realised TPR
    can exceed ``tpr``.
    """
    threshold = threshold_at_tpr(id_scores, tpr)
    ood_scores = _scores_1d(ood_scores, "OOD")
    return float(np.mean(ood_scores >= threshold))


def threshold_at_tpr(id_scores, tpr: float = 0.95) -> float:
    """The largest t with at least ``tpr`` of ID scores >= t (see fpr_at_tpr).

    Prediction flags an input as OOD when its score falls below this value.
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    id_scores = _scores_1d(id_scores, "ID")
    # Rounding first stops float error adding one: 0.07 * 100 is 7.000000000000001
    # in binary, and its ceil would be 8.
    k = math.ceil(round(tpr * id_scores.size, 9))
    return float(np.sort(id_scores)[::-1][k - 1])


def ood_metrics(id_scores, ood_scores) -> dict:
    """AUROC, AUPR-In, AUPR-Out and FPR at 95% TPR of one score.

    - auroc: P(ID score > OOD score) + P(tie) / 2.
    - aupr_in: average precision with ID positive, scores as they are.
    - aupr_out: average precision with OOD positive, scores negated.
    - fpr_at_95_tpr: see ``fpr_at_tpr``; lower is better.
    """
    id_scores = _scores_1d(id_scores, "ID")
    ood_scores = _scores_1d(ood_scores, "OOD")
    return {
        "auroc": auroc(id_scores, ood_scores),
        "aupr_in": average_precision(id_scores, ood_scores),
        "aupr_out": average_precision(-ood_scores, -id_scores),
        "fpr_at_95_tpr": fpr_at_tpr(id_scores, ood_scores, 0.95),
    }
