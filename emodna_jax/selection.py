"""Label-free scores for choosing a checkpoint of an adaptation run.

Target labels must never choose the model, yet source validation alone
cannot see what adaptation did to the target.  Each score here reads the
target without its labels (and, for DEV, the labelled source validation
split), so it can rank every checkpoint of a run, the source-only warm-up's
included:

* ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): the mean
  entropy of each target row's softmax-weighted similarity to the other
  rows, on its class posterior.  Higher when the target's predictions form
  dense, consistent neighbourhoods.
* ``entropy``: the mean entropy of the target posteriors (lower is surer).
  The classic degenerate criterion, kept as the baseline every paper beats.
* ``dev``: deep embedded validation (You et al., ICML 2019): the source
  validation loss, each utterance weighted by how target-like its
  embedding is (a domain classifier's density ratio), with the control
  variate that bounds its variance.  Lower is better.

``RULES`` names each with the direction that is better; evaluate.py stores
them per checkpoint in ``metrics.csv`` (target rows) and selects with them.
Numpy and scikit-learn, float64: they run on the stored predictions.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SND_TEMPERATURE = 0.05   # Saito et al.'s default, for cosine similarities


def _entropy_rows(log_p: np.ndarray) -> np.ndarray:
    """Entropy of each row of log-probabilities (a -inf entry counts 0)."""
    finite = np.isfinite(log_p)
    return -np.sum(np.where(finite, np.exp(log_p) * np.where(finite, log_p, 0.0), 0.0),
                   axis=1)


def soft_neighborhood_density(posterior_logits, temperature: float = SND_TEMPERATURE
                              ) -> float:
    """SND of the target: rows are the L2-normalised class posteriors, each
    row's similarities to the others (itself left out) go through a softmax
    at ``temperature``, and the score is the mean entropy of those rows."""
    probs = softmax(np.asarray(posterior_logits, np.float64), axis=1)
    if len(probs) < 2:
        raise ValueError(f"SND needs at least 2 target rows, got {len(probs)}")
    unit = probs / np.linalg.norm(probs, axis=1, keepdims=True)
    similarity = unit @ unit.T / temperature
    np.fill_diagonal(similarity, -np.inf)
    return float(_entropy_rows(log_softmax(similarity, axis=1)).mean())


def mean_entropy(posterior_logits) -> float:
    """Mean entropy (nats) of the target's class posteriors."""
    return float(_entropy_rows(log_softmax(
        np.asarray(posterior_logits, np.float64), axis=1)).mean())


def density_ratio(source_features, target_features, *, folds: int = 5,
                  seed: int = 0) -> np.ndarray:
    """[N_source] p_target(x) / p_source(x) of each source row, from a
    logistic domain classifier on standardised features, cross-fitted so
    that no row is scored by a classifier that saw it."""
    source = np.asarray(source_features, np.float64)
    target = np.asarray(target_features, np.float64)
    x = np.concatenate([source, target])
    domain = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    folds = min(folds, len(source), len(target))
    if folds < 2:
        raise ValueError("a density ratio needs at least 2 rows of each domain, "
                         f"got {len(source)} source and {len(target)} target")
    classifier = make_pipeline(StandardScaler(),
                               LogisticRegression(C=1.0, max_iter=1000))
    p_target = cross_val_predict(
        classifier, x, domain, method="predict_proba",
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed))[:len(source), 1]
    p_target = np.clip(p_target, 1e-6, 1 - 1e-6)
    return p_target / (1 - p_target) * len(source) / len(target)


def deep_embedded_validation(weights, losses) -> float:
    """DEV risk of source validation rows with density ratios ``weights``
    and losses ``losses``: mean(w l) + eta mean(w) - eta, where
    eta = -Cov(w l, w) / Var(w) is the control variate (You et al. 2019)."""
    weights = np.asarray(weights, np.float64)
    weighted = weights * np.asarray(losses, np.float64)
    variance = weights.var(ddof=1)
    eta = (-np.cov(weighted, weights)[0, 1] / variance) if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def per_row_nll(labels, posterior_logits) -> np.ndarray:
    """Negative log-likelihood of each row's true class."""
    log_p = log_softmax(np.asarray(posterior_logits, np.float64), axis=1)
    return -log_p[np.arange(len(log_p)), np.asarray(labels)]


# Selection rules on target rows: score column -> True when higher is better.
RULES = {"snd": True, "entropy": False, "dev": False}


def scores(target_logits, target_features, source_logits, source_features,
           source_labels) -> dict:
    """Every label-free score of one checkpoint: ``target_*`` are the
    posterior logits and embeddings of every target row training reads (its
    excluded emotions too: without labels nobody knows which they are),
    ``source_*`` the labelled source validation rows'."""
    return {
        "snd": soft_neighborhood_density(target_logits),
        "entropy": mean_entropy(target_logits),
        "dev": deep_embedded_validation(
            density_ratio(source_features, target_features),
            per_row_nll(source_labels, source_logits)),
    }
