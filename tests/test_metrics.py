"""UAR / WAR / macro-F1 against hand-computed confusion matrices."""

import numpy as np
import pytest

from emodna_jax import metrics


def test_hand_worked_three_class_case():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 1, 2, 1, 0, 2, 2, 2, 1]
    report = metrics.classification_report(labels, preds, 3)
    np.testing.assert_array_equal(report["confusion"], [[2, 1, 1], [1, 1, 0], [0, 1, 3]])
    # Recalls 2/4, 1/2, 3/4 -> UAR 0.5833; accuracy 6/10.
    np.testing.assert_allclose(report["per_class_recall"], [0.5, 0.5, 0.75])
    assert report["uar"] == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert report["war"] == pytest.approx(0.6)
    # Precisions 2/3, 1/3, 3/4; F1 = 2PR/(P+R) per class.
    f1 = [2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5),
          2 * 0.75 * 0.75 / 1.5]
    assert report["macro_f1"] == pytest.approx(np.mean(f1))
    assert report["count"] == 10


def test_classes_absent_from_the_labels_do_not_count():
    # Class 2 is predicted once but never true: recall NaN, left out of UAR
    # and macro-F1 (F1s: class 0 2/3, class 1 1).
    report = metrics.classification_report([0, 0, 1], [0, 2, 1], 3)
    assert report["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert np.isnan(report["per_class_recall"][2])
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_uar_differs_from_war_on_imbalanced_data():
    report = metrics.classification_report([0] * 9 + [1], [0] * 10, 2)
    assert report["war"] == pytest.approx(0.9)
    assert report["uar"] == pytest.approx(0.5)


def test_weights_no_labels_and_bad_labels():
    weighted = metrics.classification_report([0, 1, 1], [0, 1, 0], 2, weights=[1, 1, 0])
    np.testing.assert_array_equal(weighted["confusion"], [[1, 0], [0, 1]])
    assert weighted["uar"] == weighted["war"] == 1.0
    empty = metrics.classification_report([], [], 2)
    assert np.isnan(empty["uar"]) and empty["count"] == 0
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="predictions must lie in"):
        metrics.classification_report([0, 1], [0, -1], 3)
