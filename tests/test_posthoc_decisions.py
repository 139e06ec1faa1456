"""The post-hoc balanced decision of benchmarks/posthoc_decisions.py,
against the closed form of its fixed point."""

import numpy as np
import pytest
from scipy.optimize import brentq

from benchmarks import posthoc_decisions

P = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])


def test_balancing_reaches_the_rescaling_that_gives_each_class_an_equal_share():
    # With two classes the balanced posterior is q_i1 = p_i1 v / (p_i0 + p_i1 v)
    # for the one factor v that makes sum_i q_i1 = N / 2.
    v = brentq(lambda v: np.sum(P[:, 1] * v / (P[:, 0] + P[:, 1] * v)) - 2, 1e-6, 1e6)
    want = P[:, 1] * v / (P[:, 0] + P[:, 1] * v)
    q = posthoc_decisions.balanced(P)
    np.testing.assert_allclose(q[:, 1], want, atol=1e-6)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-12)
    # Every row preferred class 0; balanced, the two that lean most to 1 take it.
    assert list(q.argmax(1)) == [0, 0, 1, 1]


def test_balancing_by_speaker_balances_each_speaker_alone():
    posterior = np.vstack([P, P[:, ::-1]])
    groups = np.array([0] * 4 + [1] * 4)
    q = posthoc_decisions.balanced_by(posterior, groups)
    np.testing.assert_allclose(q[:4], posthoc_decisions.balanced(P), atol=1e-12)
    np.testing.assert_allclose(q[4:], posthoc_decisions.balanced(P[:, ::-1]), atol=1e-12)
    for g in (0, 1):
        np.testing.assert_allclose(q[groups == g].sum(0), [2.0, 2.0], atol=1e-6)
    # Pooled, the two speakers already balance each other: nothing moves.
    assert list(posthoc_decisions.balanced(posterior).argmax(1)) == [0] * 4 + [1] * 4


def test_a_posterior_that_is_already_balanced_is_left_as_it_is():
    even = np.array([[0.7, 0.3], [0.3, 0.7]])
    np.testing.assert_allclose(posthoc_decisions.balanced(even), even, atol=1e-12)
    assert posthoc_decisions.balanced(even).shape == even.shape
    with pytest.raises(ValueError, match="1 group labels for 2 posterior rows"):
        posthoc_decisions.balanced_by(even, np.array([0]))
