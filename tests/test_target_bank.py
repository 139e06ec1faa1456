"""emodna_jax/target_bank.py: the host memory of the target's posteriors that
the cluster pseudo-labels are computed from, with no pass over the target."""

import numpy as np
import pytest

from emodna_jax import cluster_labels
from emodna_jax import target_bank


def test_each_utterance_keeps_the_newest_posterior_of_the_step_that_drew_it():
    bank = target_bank.TargetBank(5, 2)
    bank.record(1, np.array([0, 3]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    bank.record(2, np.array([3, 4]), np.array([[5.0, 6.0], [7.0, 8.0]]))
    np.testing.assert_array_equal(bank.seen, [1, -1, -1, 2, 2])
    np.testing.assert_array_equal(bank.logits[[0, 3, 4]], [[1, 0], [5, 6], [7, 8]])
    np.testing.assert_array_equal(bank.logits[[1, 2]], 0.0)
    # After step 4: three of five drawn, written at steps 1, 2, 2.
    assert bank.age(4) == {"bank_drawn_fraction": 0.6, "bank_mean_age": pytest.approx(7 / 3),
                           "bank_max_age": 3.0}


def test_an_index_outside_the_target_is_refused_by_step():
    with pytest.raises(ValueError, match=r"target index out of range \[0, 5\) at step 9"):
        target_bank.TargetBank(5, 2).record(9, np.array([5]), np.zeros((1, 2)))


def test_clusters_cover_the_drawn_utterances_only_and_equal_refine_on_them():
    rng = np.random.default_rng(0)
    statistics = rng.normal(size=(30, 3))
    logits = rng.normal(size=(30, 3))
    bank = target_bank.TargetBank(30, 3)
    assert bank.cluster(statistics) is None            # nothing drawn yet
    drawn = rng.permutation(30)[:20]
    bank.record(1, drawn, logits[drawn])
    labels = bank.cluster(statistics)
    assert (labels[np.setdiff1d(np.arange(30), drawn)] == -1).all()
    order = np.sort(drawn)
    np.testing.assert_array_equal(labels[order],
                                  cluster_labels.refine(statistics[order], logits[order]))
    bank.labels = labels
    np.testing.assert_array_equal(bank.pseudo_labels(drawn[:4]), labels[drawn[:4]])


def test_too_few_drawn_utterances_give_no_clusters():
    bank = target_bank.TargetBank(10, 3)
    bank.record(1, np.arange(5), np.zeros((5, 3)))     # fewer than 2 x 3 classes
    assert bank.cluster(np.zeros((10, 2))) is None


def test_the_arrays_a_checkpoint_stores_give_the_same_bank_back():
    bank = target_bank.TargetBank(4, 2)
    bank.record(3, np.array([1, 2]), np.array([[0.5, -1.0], [2.0, 0.0]]))
    bank.labels = np.array([-1, 1, 0, -1], np.int32)
    again = target_bank.TargetBank.from_arrays(
        {k: v.copy() for k, v in bank.arrays().items()})
    for key, value in bank.arrays().items():
        np.testing.assert_array_equal(again.arrays()[key], value)
        assert again.arrays()[key].dtype == value.dtype


def test_k_means_fitted_on_a_sample_assigns_every_row_as_a_whole_fit_does():
    """Beyond ``fit_rows`` the clusters are fitted on a fixed draw and applied
    to every row: on separated classes, the same labels as fitting them all."""
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(3), 40)
    statistics = 6.0 * np.eye(3)[truth] + rng.normal(size=(120, 3))
    logits = 2.0 * np.eye(3)[truth] + rng.normal(size=(120, 3))
    whole = cluster_labels.refine(statistics, logits)
    np.testing.assert_array_equal(whole, truth)
    np.testing.assert_array_equal(cluster_labels.refine(statistics, logits, fit_rows=30),
                                  whole)
