"""Classification metrics of SER: UAR (the headline), WAR, macro-F1, confusion.

UAR (unweighted average recall, the mean of per-class recalls) is the field's
headline because emotion corpora are imbalanced and WAR (plain accuracy)
rewards predicting the majority class.  The arithmetic is sklearn's; this
module fixes the conventions: classes absent from the labels do not count.
"""

from __future__ import annotations

import numpy as np
from scipy import special
from sklearn import metrics as sklearn_metrics


def _class_indices(values, name: str, num_classes: int) -> np.ndarray:
    values = np.asarray(values, np.int64)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got "
                         f"values from {values.min()} to {values.max()}")
    return values


def confusion_matrix(labels, predictions, num_classes: int,
                     weights=None) -> np.ndarray:
    """[true, predicted] counts (weighted when ``weights`` is given)."""
    labels = _class_indices(labels, "labels", num_classes)
    predictions = _class_indices(predictions, "predictions", num_classes)
    if not labels.size:
        return np.zeros((num_classes, num_classes))
    return sklearn_metrics.confusion_matrix(
        labels, predictions, labels=np.arange(num_classes),
        sample_weight=weights).astype(np.float64)


def classification_report(labels, predictions, num_classes: int,
                          weights=None) -> dict:
    """UAR, WAR, macro-F1 (both over the classes present in the labels; NaN
    with no labels), per-class recall (NaN for an absent class), confusion."""
    confusion = confusion_matrix(labels, predictions, num_classes, weights)
    support = confusion.sum(axis=1)
    present = np.flatnonzero(support > 0)
    recall = np.full(num_classes, np.nan)
    uar = war = f1 = float("nan")
    if present.size:
        labels, predictions = np.asarray(labels), np.asarray(predictions)
        recall = sklearn_metrics.recall_score(
            labels, predictions, labels=np.arange(num_classes), average=None,
            sample_weight=weights, zero_division=np.nan)
        uar = float(np.nanmean(recall))
        war = float(sklearn_metrics.accuracy_score(labels, predictions,
                                                   sample_weight=weights))
        f1 = float(sklearn_metrics.f1_score(labels, predictions, labels=present,
                                            average="macro", sample_weight=weights,
                                            zero_division=0.0))
    return {"uar": uar, "war": war, "macro_f1": f1,
            "per_class_recall": np.asarray(recall, np.float64).tolist(),
            "confusion": confusion.tolist(), "count": float(confusion.sum())}


def negative_log_likelihood(labels, posterior_logits) -> float:
    """Mean -log p(true class) under softmax(``posterior_logits``) [N, C];
    NaN with no labels.  A proper score: unlike UAR it moves with every
    change of confidence, so it separates checkpoints of equal UAR."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    logits = np.asarray(posterior_logits, np.float64)
    return float(sklearn_metrics.log_loss(
        labels, special.softmax(logits, axis=-1),
        labels=np.arange(logits.shape[-1])))
