"""benchmarks/target_clusters.py: the cluster bound and the guard against
predictions of a re-prepared corpus (the refinement: test_cluster_labels.py)."""

import numpy as np
import pytest

from benchmarks import target_clusters


def _blobs(per_class=30, seed=0):
    """Four tight blobs 10 apart in 3-d (three axes and the origin); blob k
    holds class k."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(4, 3)
    labels = np.repeat(np.arange(4), per_class)
    return centres[labels] + 0.1 * rng.normal(size=(len(labels), 3)), labels


def test_cluster_bound_reads_clusters_through_the_best_matching():
    x, labels = _blobs()
    # k-means numbers its clusters arbitrarily; the matching undoes any order.
    assert target_clusters.cluster_bound(x, labels, 4) == pytest.approx(1.0)
    # Two classes sharing one blob: at best one of them is recalled, so
    # UAR = (1 + 1 + 1 + 0) / 4 whichever clustering splits the other blobs.
    merged = x.copy()
    merged[labels == 3] = x[labels == 2]
    assert target_clusters.cluster_bound(merged, labels, 4) == pytest.approx(0.75)


def test_predictions_of_a_reprepared_corpus_are_a_clear_error():
    table = {"emotion": np.array(["angry", "sad", "happy", "neutral"])}
    stored = {"index": np.array([3, 0, 1]), "label": np.array([0, 1, 3])}
    classes = ["neutral", "angry", "happy", "sad"]
    np.testing.assert_array_equal(
        target_clusters.task_labels(table, stored, classes, "RUN"), [0, 1, 3])
    with pytest.raises(ValueError, match="RUN: stored target labels do not match"):
        target_clusters.task_labels(table, dict(stored, label=np.array([0, 1, 2])),
                                    classes, "RUN")


def test_missing_evaluation_names_the_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.json: missing; run --mode=evaluate"):
        target_clusters.selected_predictions(str(tmp_path))


def test_target_statistics_are_the_ones_training_clusters(toy_data_dir):
    """The diagnostic reads each utterance's statistics as training's
    clusters do (SpeakerStats, floored per-speaker std), in 'all' order."""
    from data_prep.dataset import PreparedCorpus
    from data_prep.features import FeatureConfig
    from emodna_jax.utterance_stats import SpeakerStats
    corpus = PreparedCorpus.find(toy_data_dir, "toy_tgt", FeatureConfig(n_mels=16))
    table = target_clusters.target_statistics(corpus)
    rows = corpus.source("all")
    stats = SpeakerStats.of_corpus(corpus)
    want = np.stack([stats.standardised(rows[i]["features"], rows[i]["speaker"])
                     for i in range(len(rows))])
    np.testing.assert_allclose(table["x"], want, rtol=1e-6)
    assert list(table["emotion"]) == [corpus.emotions[int(rows[i]["emotion"])]
                                      for i in range(len(rows))]
