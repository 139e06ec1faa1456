"""Label-free checkpoint selection (emodna_jax/selection.py) against direct
numpy computations, and evaluation's selection by those scores."""

import numpy as np
import pytest
from scipy.special import softmax

from emodna_jax import evaluate
from emodna_jax import selection


def test_snd_equals_a_loop_over_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 4)) * 2
    p = softmax(logits, axis=1)
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    entropies = []
    for i in range(len(p)):
        sims = np.array([unit[i] @ unit[j] / 0.05 for j in range(len(p)) if j != i])
        q = np.exp(sims - sims.max())
        q /= q.sum()
        entropies.append(-(q * np.log(q)).sum())
    assert selection.soft_neighborhood_density(logits) == pytest.approx(np.mean(entropies))


def test_snd_is_higher_for_dense_neighbourhoods():
    """Rows in two tight groups spread their soft neighbours over a whole group
    (high entropy); rows scattered at random each have one nearest row."""
    rng = np.random.default_rng(1)
    grouped = np.repeat(10.0 * np.eye(4)[:2], 10, axis=0) + 0.01 * rng.normal(size=(20, 4))
    scattered = 3.0 * rng.normal(size=(20, 4))
    assert (selection.soft_neighborhood_density(grouped)
            > selection.soft_neighborhood_density(scattered))
    with pytest.raises(ValueError, match="at least 2 target rows"):
        selection.soft_neighborhood_density(np.zeros((1, 4)))


def test_mean_entropy_closed_forms():
    assert selection.mean_entropy(np.zeros((5, 4))) == pytest.approx(np.log(4))
    assert selection.mean_entropy(np.array([[50.0, 0.0, 0.0]])) == pytest.approx(0.0, abs=1e-18)


def test_dev_control_variate_by_hand():
    w = np.array([0.5, 1.0, 1.5, 2.0])
    loss = np.array([1.0, 2.0, 0.5, 1.0])
    wl = w * loss
    eta = -np.cov(wl, w)[0, 1] / np.var(w, ddof=1)
    want = wl.mean() + eta * w.mean() - eta
    assert selection.deep_embedded_validation(w, loss) == pytest.approx(want)
    # Constant weights: the plain weighted mean, no control variate.
    assert selection.deep_embedded_validation(np.ones(4), loss) == pytest.approx(loss.mean())


def test_density_ratio_follows_the_target_and_averages_to_one_without_shift():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(400, 2))
    same = selection.density_ratio(source, rng.normal(size=(400, 2)))
    assert same.mean() == pytest.approx(1.0, abs=0.1)
    # Target shifted by +1 along x: the true ratio grows as exp(x - 1/2).
    ratio = selection.density_ratio(source, rng.normal(size=(400, 2)) + [1.0, 0.0])
    assert np.corrcoef(np.argsort(np.argsort(ratio)),
                       np.argsort(np.argsort(source[:, 0])))[0, 1] > 0.95


def test_per_row_nll():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    np.testing.assert_allclose(selection.per_row_nll([0, 2], logits),
                               [np.log(2), -np.log(0.8)])


def _table(tmp_path):
    table = evaluate.ResultTable(str(tmp_path / "metrics.csv"), "split")
    for step, snd, entropy, dev, target_uar in ((50, 1.0, 0.9, 2.0, 0.4),
                                                (100, 3.0, 0.2, 1.0, 0.5),
                                                (150, 2.0, 0.1, 3.0, 0.9)):
        table.put(step, "source_val", {"uar": 0.9 if step == 50 else 0.8, "nll": 0.5})
        table.put(step, "target", {"uar": target_uar, "nll": 0.1, "snd": snd,
                                   "entropy": entropy, "dev": dev})
    return table


def test_label_free_rules_pick_by_their_own_direction(tmp_path):
    table = _table(tmp_path)
    pick = lambda rule: evaluate.select_step(table, rule)["selected_step"]
    assert pick("target_snd") == 100       # higher is better
    assert pick("target_entropy") == 150   # lower is better
    assert pick("target_dev") == 100       # lower is better
    assert evaluate.select_step(table, "target_snd")["oracle_step"] == 150
    for rule in ("target_uar", "target_nll", "target_war"):
        with pytest.raises(ValueError, match="label-free target score"):
            evaluate.select_step(table, rule)


def test_label_free_ties_never_read_the_target_nll(tmp_path):
    table = evaluate.ResultTable(str(tmp_path / "metrics.csv"), "split")
    for step, nll in ((50, 0.1), (100, 0.9)):
        table.put(step, "source_val", {"uar": 0.8, "nll": 0.5})
        table.put(step, "target", {"uar": 0.5, "nll": nll, "snd": 1.0,
                                   "entropy": 1.0, "dev": 1.0})
    # A tie goes to the later step, whatever the target's labels say.
    assert evaluate.select_step(table, "target_snd")["selected_step"] == 100


def test_summary_reports_every_rule_and_skips_tables_without_the_scores(tmp_path):
    from configs import default
    config = default.get_config()
    empty = evaluate.ResultTable(str(tmp_path / "ood.csv"), "score")
    summary = evaluate.summarize(_table(tmp_path), empty, config)
    assert summary["selections"] == {
        "source_val_uar": {"step": 50, "target_uar": 0.4},
        "target_snd": {"step": 100, "target_uar": 0.5},
        "target_entropy": {"step": 150, "target_uar": 0.9},
        "target_dev": {"step": 100, "target_uar": 0.5}}
    old = evaluate.ResultTable(str(tmp_path / "old.csv"), "split")
    old.put(50, "source_val", {"uar": 0.8, "nll": 0.5})
    old.put(50, "target", {"uar": 0.4})
    assert list(evaluate.summarize(old, empty, config)["selections"]) == ["source_val_uar"]
