"""Linear attribute probes: how much speaker (or gender) information the
emotion features of a trained model still hold.

This is how Multiple Speech Attribute Control is checked: a suppressed
attribute should be harder to read off the backbone embedding ``h`` (the
features every emotion head is built on) than with control off.  The probe
is a logistic regression on the standardised ``h`` of the source training
split, scored by stratified k-fold cross-validation over utterances, so it
measures information present in the features, not what the model's own
attribute head learnt.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from emodna_jax import evaluate
from emodna_jax import experiment

PROBED_ATTRIBUTES = ("speaker", "gender")


def probe_accuracy(features: np.ndarray, labels: np.ndarray, *, folds: int = 5,
                   seed: int = 0) -> float:
    """Mean cross-validated accuracy of a linear probe of ``labels`` on ``features``."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"features must be [N, D] with one label per row; got "
                         f"{features.shape} and {labels.shape}")
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < folds:
        raise ValueError(f"a {folds}-fold probe needs 2+ classes with {folds}+ "
                         f"examples each; got counts {sorted(counts.tolist())}")
    standardised = (features - features.mean(0)) / (features.std(0) + 1e-6)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(max_iter=5000), standardised,
                             labels, cv=splits)
    return float(scores.mean())


def attribute_probe(config, workdir: str, attribute: str = "speaker", *,
                    step: int | None = None, folds: int = 5, seed: int = 0) -> float:
    """Probe accuracy of ``attribute`` on ``h`` of a checkpoint (latest by default),
    over the utterances of the source training split."""
    if attribute not in PROBED_ATTRIBUTES:
        raise ValueError(f"attribute must be one of {PROBED_ATTRIBUTES}, got {attribute!r}")
    built, state, _ = experiment.restore(config, workdir, step)
    source = built.source
    outputs = evaluate.Evaluator(built.model, built.parallel, config).predict(
        state, source, source.train_split)
    split = source.corpus.source(source.train_split)
    labels = np.array([split[int(i)][attribute] for i in outputs["index"]])
    return probe_accuracy(outputs["h"], labels, folds=folds, seed=seed)
