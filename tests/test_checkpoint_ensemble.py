"""The mean posterior over a run's checkpoints, on hand-worked predictions."""

import os

import numpy as np
import pytest

from emodna_jax import checkpoint_ensemble
from emodna_jax import ood
from emodna_jax.evaluators import embeddings

CLASSES = ("neutral", "angry", "happy")


def _logits(probabilities):
    """Logits whose softmax is ``probabilities`` (rows with no zero)."""
    return np.log(np.asarray(probabilities, np.float64))


def test_the_mean_of_posteriors_can_name_a_class_neither_checkpoint_names():
    # Checkpoint 1 says neutral (0.6), checkpoint 2 says happy (0.55); both
    # give angry 0.4-0.45, so their mean (0.3, 0.425, 0.275) says angry.
    first = _logits([[0.6, 0.39, 0.01]])
    second = _logits([[0.01, 0.44, 0.55]])
    mean = checkpoint_ensemble.mean_posterior([first, second])
    np.testing.assert_allclose(mean, [[0.305, 0.415, 0.28]], rtol=1e-12)
    assert mean.argmax() == 1 != first.argmax() and mean.argmax() != second.argmax()
    with pytest.raises(ValueError, match="at least one checkpoint"):
        checkpoint_ensemble.mean_posterior([])
    with pytest.raises(ValueError, match="different shapes"):
        checkpoint_ensemble.mean_posterior([first, _logits([[0.5, 0.5]])])


def _store(out_dir, step, probabilities, labels, index=None):
    path = embeddings.path(str(out_dir), step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    index = np.arange(len(labels)) if index is None else np.asarray(index)
    np.savez_compressed(path, **{"target/logits": _logits(probabilities).astype(np.float32),
                                 "target/label": np.asarray(labels, np.int32),
                                 "target/index": index.astype(np.int32),
                                 "source_val/logits": np.zeros((1, 3), np.float32)})


def test_target_figures_of_the_ensemble_hand_worked(tmp_path):
    # Four target rows, the last of an excluded emotion (label -1).
    labels = [0, 1, 2, -1]
    _store(tmp_path, 50, [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.4, 0.5],
                          [0.1, 0.1, 0.8]], labels)
    _store(tmp_path, 100, [[0.25, 0.65, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7],
                           [0.8, 0.1, 0.1]], labels)
    # Means: row 0 (0.475, 0.425, 0.1) neutral, row 1 (0.35, 0.55, 0.1)
    # angry, row 2 (0.1, 0.3, 0.6) happy: every in-task row right, where
    # step 50 alone gets row 1 wrong and step 100 alone row 0.
    figures = checkpoint_ensemble.target_figures(
        str(tmp_path), [50, 100], CLASSES, lambda outputs: outputs["logits"])
    assert figures["steps"] == [50, 100]
    assert figures["uar"] == pytest.approx(1.0) and figures["war"] == pytest.approx(1.0)
    assert [figures[f"recall_{c}"] for c in CLASSES] == pytest.approx([1.0, 1.0, 1.0])
    alone = checkpoint_ensemble.target_figures(
        str(tmp_path), [50], CLASSES, lambda outputs: outputs["logits"])
    assert alone["uar"] == pytest.approx(2 / 3)
    assert alone["recall_angry"] == 0.0
    # The posterior function is applied to each checkpoint's outputs: with
    # the classes reversed, the means of rows 0-2 say happy, angry, neutral.
    reversed_ = checkpoint_ensemble.target_figures(
        str(tmp_path), [50, 100], CLASSES, lambda outputs: outputs["logits"][:, ::-1])
    assert [reversed_[f"recall_{c}"] for c in CLASSES] == pytest.approx([0.0, 1.0, 0.0])


def test_the_ensemble_s_ood_study_is_the_mean_of_its_checkpoints_scores(tmp_path):
    labels = [0, 1, 2, -1]      # the last row is of an excluded emotion: OOD
    _store(tmp_path, 50, [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.4, 0.5],
                          [0.1, 0.1, 0.8]], labels)
    _store(tmp_path, 100, [[0.25, 0.65, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7],
                           [0.8, 0.1, 0.1]], labels)
    read = lambda outputs: outputs["logits"]   # noqa: E731
    figures = checkpoint_ensemble.target_figures(str(tmp_path), [50, 100], CLASSES, read,
                                                 ood_score="msp")
    # MSP per checkpoint: (0.7, 0.6, 0.5, 0.8) and (0.65, 0.8, 0.7, 0.8);
    # their means (0.675, 0.7, 0.6 | 0.8).  95% of three ID rows is all
    # three, so the threshold is the lowest, 0.6; the OOD row scores above
    # every ID row, so AUROC is 0.
    study = figures["ood"]["msp"]
    assert study["threshold_at_95_tpr"] == pytest.approx(0.6)
    assert study["auroc"] == pytest.approx(0.0)
    assert (study["n_id"], study["n_ood"]) == (3, 1)
    # Energy of the logits log(p): log(sum p) = 0 for every checkpoint.
    energy = checkpoint_ensemble.target_figures(str(tmp_path), [50, 100], CLASSES, read,
                                                ood_score="energy")["ood"]["energy"]
    assert energy["threshold_at_95_tpr"] == pytest.approx(0.0, abs=1e-6)
    # Not a logit score, or no excluded rows: no study.
    assert "ood" not in checkpoint_ensemble.target_figures(
        str(tmp_path), [50, 100], CLASSES, read, ood_score="mahalanobis")
    _store(tmp_path / "in_task", 50, [[0.7, 0.2, 0.1]], [0])
    assert "ood" not in checkpoint_ensemble.target_figures(
        str(tmp_path / "in_task"), [50], CLASSES, read, ood_score="msp")


def test_the_ensemble_score_averages_each_checkpoint_s_score_and_refuses_others():
    first, second = _logits([[0.5, 0.25, 0.25]]), _logits([[0.1, 0.1, 0.8]])
    got = ood.checkpoint_ensemble_score("msp", np.stack([first, second]))
    np.testing.assert_allclose(got, [0.65], rtol=1e-12)
    raw = np.array([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 3.0]]])
    want = np.mean([np.log(np.exp(row).sum()) for row in raw[:, 0]])
    np.testing.assert_allclose(ood.checkpoint_ensemble_score("energy", raw), [want])
    with pytest.raises(ValueError, match="ood_score='mahalanobis': a checkpoint ensemble "
                                         "is scored by a logit score"):
        ood.checkpoint_ensemble_score("mahalanobis", raw)
    with pytest.raises(ValueError, match=r"must be \[K, N, C\]"):
        ood.checkpoint_ensemble_score("msp", raw[0])


def test_a_missing_or_mismatched_checkpoint_is_no_ensemble_or_a_clear_error(tmp_path):
    _store(tmp_path, 50, [[0.6, 0.3, 0.1]], [0])
    read = lambda outputs: outputs["logits"]   # noqa: E731
    assert checkpoint_ensemble.target_figures(str(tmp_path), [50, 100], CLASSES, read) is None
    assert checkpoint_ensemble.target_figures(str(tmp_path), [], CLASSES, read) is None
    _store(tmp_path, 100, [[0.6, 0.3, 0.1]], [0], index=[7])
    with pytest.raises(ValueError, match=r"step_100\.npz: its target utterances are "
                                         r"not those of step 50"):
        checkpoint_ensemble.target_figures(str(tmp_path), [50, 100], CLASSES, read)
