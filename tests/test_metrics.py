"""UAR / WAR / macro-F1 against hand-computed confusion matrices."""

import numpy as np
import pytest

from emodna_jax import metrics


def test_hand_worked_three_class_case():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 1, 2, 1, 0, 2, 2, 2, 1]
    confusion = metrics.confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(confusion, [[2, 1, 1], [1, 1, 0], [0, 1, 3]])
    # Recalls 2/4, 1/2, 3/4 -> UAR 0.5833; accuracy 6/10.
    assert metrics.uar(confusion) == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert metrics.war(confusion) == pytest.approx(0.6)
    # Precisions 2/3, 1/3, 3/4; F1 = 2PR/(P+R) per class.
    f1 = [2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5),
          2 * 0.75 * 0.75 / 1.5]
    assert metrics.macro_f1(confusion) == pytest.approx(np.mean(f1))


def test_uar_ignores_classes_absent_from_the_labels():
    confusion = metrics.confusion_matrix([0, 0, 1], [0, 1, 1], 3)
    assert metrics.uar(confusion) == pytest.approx((0.5 + 1.0) / 2)
    assert np.isnan(metrics.per_class_recall(confusion)[2])


def test_uar_differs_from_war_on_imbalanced_data():
    labels = [0] * 9 + [1]
    preds = [0] * 10  # the majority class every time
    confusion = metrics.confusion_matrix(labels, preds, 2)
    assert metrics.war(confusion) == pytest.approx(0.9)
    assert metrics.uar(confusion) == pytest.approx(0.5)


def test_weights_and_bad_labels():
    confusion = metrics.confusion_matrix([0, 1, 1], [0, 1, 0], 2, weights=[1, 1, 0])
    np.testing.assert_array_equal(confusion, [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="labels must lie in"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
