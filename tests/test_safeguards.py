"""Safeguards against confirmation bias in the objective: a source-only
warm-up, a floor under the thresholds, classifier/prototype agreement."""

import jax.numpy as jnp
import numpy as np
import pytest

from emodna_jax import losses
from emodna_jax import objective as objective_lib
from tests.conftest import objective_settings


def test_adaptation_ramp_waits_for_the_warm_up_then_ramps_over_the_rest():
    cfg = objective_settings(2, 100, adapt_start=0.2)
    assert float(objective_lib.adaptation_ramp(cfg, 0)) == 0.0
    assert float(objective_lib.adaptation_ramp(cfg, 20)) == 0.0
    # Step 60 is half-way through the remaining 80 steps: r(0.5).
    np.testing.assert_allclose(objective_lib.adaptation_ramp(cfg, 60),
                               2 / (1 + np.exp(-5.0)) - 1, rtol=1e-6)
    plain = objective_settings(2, 100)
    np.testing.assert_allclose(objective_lib.adaptation_ramp(plain, 30),
                               losses.ramp(0.3), rtol=0)


def _batch(n=4, c=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"logits": jnp.asarray(rng.normal(size=(2 * n, c)) * 3, jnp.float32),
            "z_e": jnp.asarray(rng.normal(size=(2 * n, d)), jnp.float32),
            "z_c": jnp.asarray(rng.normal(size=(2 * n, d)), jnp.float32),
            "e": jnp.asarray(rng.normal(size=(2 * n, d)), jnp.float32),
            "corpus_logits": jnp.zeros((2 * n, 2))}, jnp.asarray(rng.integers(0, c, n))


@pytest.mark.parametrize("agreement", [False, True])
def test_objective_selects_with_the_safeguards(agreement):
    """The objective's confident rows are exactly those the thresholds (with
    the floor) and, when asked, the updated prototypes agree on."""
    outputs, labels = _batch(n=8, seed=3)
    n = labels.shape[0]
    cfg = objective_settings(3, 10, w_cor=0.0, w_cd=0.0, w_mmd=0.0,
                             threshold_momentum=0.5, threshold_floor=0.6,
                             pseudo_agreement=agreement)
    adapt = objective_lib.AdaptState.create(3, 4)
    _, (new, metrics) = objective_lib.objective(cfg, outputs, labels, adapt, jnp.int32(5))
    probs = np.asarray(jax_softmax(outputs["logits"][n:]))
    thresholds = np.maximum(np.asarray(losses.class_thresholds(new.tau_g, new.p_tilde)), 0.6)
    pseudo = probs.argmax(1)
    want = probs.max(1) >= thresholds[pseudo]
    if agreement:
        z = np.asarray(outputs["z_e"][n:])
        protos = np.asarray(new.prototypes)
        cosines = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ protos.T
        want &= cosines.argmax(1) == pseudo
    assert float(metrics["confident_fraction"]) == pytest.approx(want.mean())
    # This batch: the floor keeps 7 of 8 rows, agreement 2 of those.
    assert want.mean() == (0.25 if agreement else 0.875)


def jax_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _on_the_floor_batch(outputs, labels, **weights):
    """The objective on ``_batch(n=8, seed=3)`` with only the floor (0.6)
    selecting, and the numpy selection: (total, metrics, target
    posteriors, confident rows, pseudo-labels)."""
    n = labels.shape[0]
    cfg = objective_settings(3, 10, w_cor=0.0, w_cd=0.0, w_mmd=0.0,
                             threshold_momentum=0.5, threshold_floor=0.6,
                             use_ramp=False, **weights)
    adapt = objective_lib.AdaptState.create(3, 4)
    total, (_, metrics) = objective_lib.objective(cfg, outputs, labels, adapt,
                                                  jnp.int32(5))
    probs = jax_softmax(outputs["logits"][n:])
    confident = probs.max(1) >= 0.6  # this batch: the floor decides (above)
    return total, metrics, probs, confident, probs.argmax(1)


@pytest.mark.parametrize("w_pseudo", [0.0, 0.4])
def test_class_alignment_weighs_its_self_training_term(w_pseudo):
    """L_ca = L_proto + w_pseudo L_pseudo, with L_pseudo the cross-entropy of
    the confident target rows against their pseudo-labels (numpy here)."""
    outputs, labels = _batch(n=8, seed=3)
    total, metrics, probs, confident, pseudo = _on_the_floor_batch(
        outputs, labels, w_ca=1.0, w_pseudo=w_pseudo)
    l_pseudo = -np.mean(np.log(probs[confident, pseudo[confident]]))
    want = float(metrics["loss_proto"]) + w_pseudo * l_pseudo
    assert float(metrics["loss_ca"]) == pytest.approx(want, rel=1e-5)
    assert float(total) == pytest.approx(float(metrics["loss_cls"]) + want, rel=1e-5)


def test_consistency_and_diversity_against_numpy():
    """L_con: the pseudo-labels and the confident rows come from the plain
    target logits, the cross-entropy from the strong view's.  L_div: the KL
    of the plain view's mean target posterior from uniform."""
    outputs, labels = _batch(n=8, seed=3)
    strong = np.random.default_rng(7).normal(size=(8, 3)).astype(np.float32)
    outputs["strong_logits"] = jnp.asarray(strong)
    total, metrics, probs, confident, pseudo = _on_the_floor_batch(
        outputs, labels, w_ca=0.0, w_consistency=0.7, w_diversity=0.3)
    l_con = -np.mean(np.log(jax_softmax(strong)[confident, pseudo[confident]]))
    mean = probs.mean(0)
    l_div = float(np.sum(mean * np.log(3 * mean)))
    assert confident.sum() == 7
    assert float(metrics["loss_consistency"]) == pytest.approx(l_con, rel=1e-5)
    assert float(metrics["loss_diversity"]) == pytest.approx(l_div, rel=1e-4)
    assert float(total) == pytest.approx(
        float(metrics["loss_cls"]) + 0.7 * l_con + 0.3 * l_div, rel=1e-5)
