"""Classification metrics of SER: UAR (the headline), WAR, macro-F1, confusion.

UAR (unweighted average recall, the mean of per-class recalls) is the field's
headline because emotion corpora are imbalanced and WAR (plain accuracy)
rewards predicting the majority class.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int,
                     weights=None) -> np.ndarray:
    """[true, predicted] counts (weighted when ``weights`` is given)."""
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    weights = np.ones(labels.shape) if weights is None else np.asarray(weights)
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got "
                             f"values from {values.min()} to {values.max()}")
    matrix = np.zeros((num_classes, num_classes))
    np.add.at(matrix, (labels, predictions), weights)
    return matrix


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no true examples."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / support, np.nan)


def uar(confusion: np.ndarray) -> float:
    """Mean recall over the classes present in the labels."""
    recalls = per_class_recall(confusion)
    return float(np.nanmean(recalls)) if np.any(~np.isnan(recalls)) else float("nan")


def war(confusion: np.ndarray) -> float:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes present in the labels (absent ones skipped)."""
    true_positive = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    denominator = support + predicted
    f1 = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1e-12), 0.0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else float("nan")


def classification_report(labels, predictions, num_classes: int,
                          weights=None) -> dict:
    confusion = confusion_matrix(labels, predictions, num_classes, weights)
    return {"uar": uar(confusion), "war": war(confusion),
            "macro_f1": macro_f1(confusion),
            "per_class_recall": per_class_recall(confusion).tolist(),
            "confusion": confusion.tolist(), "count": float(confusion.sum())}
