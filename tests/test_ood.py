"""OOD scores and metrics against hand-worked cases and independent loops."""

import itertools
import math

import numpy as np
import pytest

from emodna_jax import ood

# The hand-worked case: ID [0.9, 0.8, 0.4], OOD [0.7, 0.4, 0.1] (one ID/OOD
# tie at 0.4).
HAND_ID = [0.9, 0.8, 0.4]
HAND_OOD = [0.7, 0.4, 0.1]


# ----------------------------------------------------------------------------
# Metrics: hand-worked.


def test_auroc_by_hand_with_a_tie():
    # 0.9 and 0.8 beat all three OOD scores: 3 + 3. 0.4 beats 0.1 (1), ties
    # 0.4 (1/2), loses to 0.7 (0): 1.5. Total 7.5 of 9 pairs.
    assert ood.ood_metrics(HAND_ID, HAND_OOD)["auroc"] == pytest.approx(7.5 / 9)


def test_aupr_in_by_hand():
    # Descending distinct thresholds (ID positive):
    #   0.9: TP 1 FP 0 -> P 1,   R 1/3  (dR 1/3)
    #   0.8: TP 2 FP 0 -> P 1,   R 2/3  (dR 1/3)
    #   0.7: TP 2 FP 1 -> P 2/3, R 2/3  (dR 0)
    #   0.4: TP 3 FP 2 -> P 3/5, R 1    (dR 1/3)  <- the tie enters at once
    #   0.1: TP 3 FP 3 -> dR 0
    # AP = 1/3 + 1/3 + 1/3 * 3/5 = 13/15.
    assert ood.ood_metrics(HAND_ID, HAND_OOD)["aupr_in"] == pytest.approx(13 / 15)


def test_aupr_out_by_hand():
    # OOD positive, negated scores, descending:
    #   -0.1: TP 1 FP 0 -> P 1,   R 1/3  (dR 1/3)
    #   -0.4: TP 2 FP 1 -> P 2/3, R 2/3  (dR 1/3)
    #   -0.7: TP 3 FP 1 -> P 3/4, R 1    (dR 1/3)
    # AP = 1/3 + 2/9 + 1/4 = 29/36.
    assert ood.ood_metrics(HAND_ID, HAND_OOD)["aupr_out"] == pytest.approx(29 / 36)


def test_fpr95_by_hand_threshold_on_a_tie():
    # n_id = 3: ceil(0.95 * 3) = 3, t = 3rd largest ID score = 0.4, which an
    # OOD score equals. OOD >= 0.4: {0.7, 0.4} -> 2/3 (the tie counts).
    assert ood.ood_metrics(HAND_ID, HAND_OOD)["fpr_at_95_tpr"] == pytest.approx(2 / 3)


def test_fpr95_by_hand_with_tied_id_scores():
    # 20 ID scores: 20, 19, ..., 4 (17 values), then 2, 2, 1. ceil(0.95 * 20)
    # = 19, so t = the 19th largest = 2 (tied with the 18th); the realised
    # TPR is 19/20. OOD >= 2: {2, 3} -> 2/4. A 20th-order statistic (t = 1)
    # would give 4/4, a strict ">" 1/4.
    id_scores = list(range(20, 3, -1)) + [2, 2, 1]
    assert len(id_scores) == 20
    assert ood.fpr_at_tpr(id_scores, [2, 1.9, 3, 1]) == 0.5


def test_fpr95_order_statistic_is_exact_for_every_size():
    # ID = OOD = 0..n-1: exactly k = ceil(95 n / 100) OOD scores reach the
    # threshold. Integer arithmetic here, so float 0.95 * n rounding (e.g.
    # 0.95 * 20) cannot hide an off-by-one.
    for n in range(1, 301):
        scores = np.arange(n, dtype=float)
        k = (95 * n + 99) // 100
        assert ood.fpr_at_tpr(scores, scores) == k / n, n


@pytest.mark.parametrize("tpr, k", [(0.07, 7), (0.14, 14), (0.55, 55),
                                    (0.57, 57), (1.0, 100)])
def test_fpr_at_other_tpr_survives_float_error(tpr, k):
    # tpr * 100 is 7.000000000000001, 14.000000000000002, 55.00000000000001 in
    # float: a bare ceil would take one ID sample too many.
    scores = np.arange(100, dtype=float)
    assert ood.fpr_at_tpr(scores, scores, tpr) == k / 100


def test_perfect_separation():
    metrics = ood.ood_metrics([5.0, 4.0, 3.5], [1.0, 2.0, 3.0, 0.0])
    assert metrics == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0,
                       "fpr_at_95_tpr": 0.0}


def test_reversed_separation():
    metrics = ood.ood_metrics([1.0, 2.0, 3.0], [5.0, 4.0, 3.5, 6.0])
    assert metrics["auroc"] == 0.0
    assert metrics["fpr_at_95_tpr"] == 1.0
    # Every ID sample ranks below every OOD one: AUPR-In is the mean of the
    # precisions i / (4 + i) for i = 1..3.
    assert metrics["aupr_in"] == pytest.approx(np.mean([1 / 5, 2 / 6, 3 / 7]))


def test_all_tied_scores_are_chance():
    metrics = ood.ood_metrics([1.0] * 3, [1.0] * 5)
    assert metrics["auroc"] == 0.5
    assert metrics["aupr_in"] == pytest.approx(3 / 8)
    assert metrics["aupr_out"] == pytest.approx(5 / 8)
    assert metrics["fpr_at_95_tpr"] == 1.0


@pytest.mark.parametrize("id_scores, ood_scores, which",
                         [([], [1.0], "ID"), ([1.0], [], "OOD")])
def test_empty_sets_raise_naming_which(id_scores, ood_scores, which):
    with pytest.raises(ValueError, match=rf"^{which} scores are empty"):
        ood.ood_metrics(id_scores, ood_scores)


def test_nan_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="NaN"):
        ood.ood_metrics([1.0, np.nan], [0.0])
    with pytest.raises(ValueError, match="1-D"):
        ood.ood_metrics([[1.0]], [0.0])


# ----------------------------------------------------------------------------
# Metrics: independent implementations.


def _auroc_pairs(id_scores, ood_scores):
    wins = 0.0
    for a, b in itertools.product(id_scores, ood_scores):
        wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(id_scores) * len(ood_scores))


def _tied_scores(rng):
    """Integer-valued scores of random sizes: many ties within and across."""
    n_id, n_ood = rng.integers(1, 40, size=2)
    id_scores = rng.integers(0, 8, n_id).astype(float) + 1.0
    ood_scores = rng.integers(0, 8, n_ood).astype(float)
    return id_scores, ood_scores


def test_auroc_matches_a_double_loop_over_pairs():
    rng = np.random.default_rng(0)
    for _ in range(50):
        id_scores, ood_scores = _tied_scores(rng)
        assert ood.ood_metrics(id_scores, ood_scores)["auroc"] == pytest.approx(
            _auroc_pairs(id_scores, ood_scores), abs=1e-12)


def test_fpr95_matches_a_search_over_thresholds():
    # Independent reading of the definition: scan every candidate threshold,
    # keep the largest with TPR >= 0.95 (counted exactly in integers).
    rng = np.random.default_rng(2)
    for _ in range(50):
        id_scores, ood_scores = _tied_scores(rng)
        n = id_scores.size
        best = max(t for t in np.r_[id_scores, ood_scores]
                   if 100 * np.sum(id_scores >= t) >= 95 * n)
        assert ood.fpr_at_tpr(id_scores, ood_scores) == np.mean(ood_scores >= best)


# ----------------------------------------------------------------------------
# Logit scores.


def test_logit_scores_match_direct_formulas():
    logits = np.random.default_rng(3).normal(size=(7, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ood.max_softmax_probability(logits),
                               probs.max(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ood.max_logit(logits), logits.max(axis=1))
    np.testing.assert_allclose(ood.energy_score(logits),
                               np.log(np.exp(logits).sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(ood.energy_score(logits, temperature=2.5),
                               2.5 * np.log(np.exp(logits / 2.5).sum(axis=1)),
                               rtol=1e-12)


def test_large_logits_stay_finite_and_exact():
    logits = np.array([[1e4, 1e4 - 1.0, 0.0], [-1e4, -1e4, -1e4]])
    msp = ood.max_softmax_probability(logits)
    energy = ood.energy_score(logits)
    assert np.all(np.isfinite(msp)) and np.all(np.isfinite(energy))
    # Row 0: only the top two matter; row 1: three equal logits.
    np.testing.assert_allclose(msp, [1 / (1 + math.exp(-1)), 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(
        energy, [1e4 + math.log1p(math.exp(-1)), -1e4 + math.log(3)], rtol=1e-12)
    np.testing.assert_array_equal(ood.max_logit(logits), [1e4, -1e4])


def test_energy_tends_to_max_logit_as_temperature_vanishes():
    logits = np.random.default_rng(4).normal(size=(6, 4)) * 2
    cold = ood.energy_score(logits, temperature=1e-3)
    # T * logsumexp(l / T) lies in [max, max + T log C].
    gap = cold - ood.max_logit(logits)
    assert np.all(gap >= 0) and np.all(gap <= 1e-3 * math.log(4) + 1e-12)
    # At T = 1 the runner-up classes add visibly more.
    assert np.all(ood.energy_score(logits) - ood.max_logit(logits) > 1e-2)


def test_msp_shift_invariant_energy_shift_equivariant():
    logits = np.random.default_rng(5).normal(size=(4, 3))
    np.testing.assert_allclose(ood.max_softmax_probability(logits + 50.0),
                               ood.max_softmax_probability(logits), rtol=1e-12)
    np.testing.assert_allclose(ood.energy_score(logits + 50.0),
                               ood.energy_score(logits) + 50.0, rtol=1e-12)


def test_logit_score_argument_checks():
    with pytest.raises(ValueError, match="temperature"):
        ood.energy_score(np.zeros((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        ood.max_logit(np.zeros(3))


# ----------------------------------------------------------------------------
# Mahalanobis.


def _mahalanobis_loop(features, labels, num_classes, shrinkage):
    """Reference: explicit loops, covariance by summed outer products, inv."""
    dim = features.shape[1]
    means = np.array([features[labels == c].mean(axis=0)
                      for c in range(num_classes)])
    cov = np.zeros((dim, dim))
    for x, y in zip(features, labels):
        cov += np.outer(x - means[y], x - means[y])
    cov /= len(features)
    cov += shrinkage * np.trace(cov) / dim * np.eye(dim)
    precision = np.linalg.inv(cov)

    def score(queries):
        return np.array([-min((q - m) @ precision @ (q - m) for m in means)
                         for q in queries])
    return means, precision, score


def test_mahalanobis_matches_a_loop_with_inv():
    rng = np.random.default_rng(6)
    num_classes, dim = 3, 5
    labels = np.r_[np.arange(num_classes), rng.integers(0, num_classes, 37)]
    mixing = rng.normal(size=(dim, dim))  # correlated, anisotropic features
    features = rng.normal(size=(labels.size, dim)) @ mixing + 2.0 * labels[:, None]
    queries = rng.normal(size=(11, dim)) * 3
    means, precision, score = _mahalanobis_loop(features, labels, num_classes,
                                                1e-2)
    model = ood.fit_mahalanobis(features, labels, num_classes, shrinkage=1e-2)
    np.testing.assert_allclose(model.means, means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.precision, precision, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ood.mahalanobis_score(model, queries),
                               score(queries), rtol=1e-8)


def test_mahalanobis_two_classes_by_hand():
    # Class 0: (1, 0), (-1, 0) -> mean (0, 0). Class 1: (4, 1), (4, -1) ->
    # mean (4, 0). Centred: (+-1, 0), (0, +-1) -> covariance = 2 I / 4 =
    # I / 2, precision = 2 I.
    features = np.array([[1.0, 0.0], [-1.0, 0.0], [4.0, 1.0], [4.0, -1.0]])
    labels = np.array([0, 0, 1, 1])
    model = ood.fit_mahalanobis(features, labels, 2, shrinkage=0.0)
    np.testing.assert_allclose(model.means, [[0, 0], [4, 0]])
    np.testing.assert_allclose(model.precision, 2 * np.eye(2), atol=1e-12)
    queries = np.array([[1.0, 1.0],   # d0 = 2 * 2 = 4,  d1 = 2 * 10 = 20
                        [3.0, 0.0],   # d0 = 18,         d1 = 2
                        [2.0, 0.0]])  # midpoint: 8 and 8
    np.testing.assert_allclose(ood.mahalanobis_score(model, queries),
                               [-4.0, -2.0, -8.0], atol=1e-12)
    # shrinkage 1: covariance I/2 + 1 * (1/2) I = I, precision I.
    shrunk = ood.fit_mahalanobis(features, labels, 2, shrinkage=1.0)
    np.testing.assert_allclose(ood.mahalanobis_score(shrunk, queries),
                               [-2.0, -1.0, -4.0], atol=1e-12)


def test_class_means_score_exactly_zero_and_others_below():
    rng = np.random.default_rng(7)
    labels = np.r_[0, 1, 2, 3, rng.integers(0, 4, 40)]
    features = rng.normal(size=(labels.size, 6)) + labels[:, None]
    model = ood.fit_mahalanobis(features, labels, 4)
    # At a mean x - mu_c is exactly 0, so the min distance is exactly 0.
    np.testing.assert_array_equal(ood.mahalanobis_score(model, model.means),
                                  np.zeros(4))
    off = model.means + 1e-3 * rng.normal(size=model.means.shape)
    assert np.all(ood.mahalanobis_score(model, off) < 0)


def test_rank_deficient_features_stay_finite():
    # D > N: the raw covariance is singular; the shrinkage keeps it invertible.
    rng = np.random.default_rng(8)
    labels = np.array([0, 1, 0, 1, 0])
    features = rng.normal(size=(5, 12))
    model = ood.fit_mahalanobis(features, labels, 2)
    np.testing.assert_allclose(model.precision, model.precision.T)
    assert np.all(np.isfinite(ood.mahalanobis_score(model, rng.normal(size=(3, 12)))))


def test_missing_class_raises_naming_it():
    with pytest.raises(ValueError, match=r"classes \[1, 3\] have no training"):
        ood.fit_mahalanobis(np.zeros((3, 2)), np.array([0, 0, 2]), 4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ood.fit_mahalanobis(np.zeros((2, 2)), np.array([0, 2]), 2)


def test_compute_scores():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(5, 3))
    features = rng.normal(size=(5, 2))
    assert set(ood.compute_scores(logits)) == {"msp", "max_logit", "energy"}
    model = ood.fit_mahalanobis(features, np.array([0, 1, 2, 0, 1]), 3)
    scores = ood.compute_scores(logits, features, model)
    assert set(scores) == {"msp", "max_logit", "energy", "mahalanobis"}
    np.testing.assert_array_equal(scores["mahalanobis"],
                                  ood.mahalanobis_score(model, features))
    np.testing.assert_array_equal(scores["energy"], ood.energy_score(logits))
    with pytest.raises(ValueError, match="both"):
        ood.compute_scores(logits, features=features)
    with pytest.raises(ValueError, match="rows"):
        ood.compute_scores(logits, features[:4], model)
