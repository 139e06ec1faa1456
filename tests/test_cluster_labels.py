"""Pseudo-labels from the target's clusters (loss.cluster_labels): the
clustering against hand-worked cases, its schedule, the objective reading
it, and the train loop (label blindness, resume equality)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cross_corpus
from emodna_jax import checkpointing
from emodna_jax import cluster_labels
from emodna_jax import config_validation
from emodna_jax import input_pipeline
from emodna_jax import objective as objective_lib
from emodna_jax import train
from tests.conftest import objective_settings
from tests.test_cross_corpus import _build

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow


def _blobs(per_class=30, seed=0):
    """Four tight blobs 10 apart in 3-d (three axes and the origin); blob k
    holds class k."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_class)
    return 10.0 * np.eye(4, 3)[labels] + 0.1 * rng.normal(size=(len(labels), 3)), labels


def test_refine_fixes_scattered_errors_and_keeps_class_order():
    x, labels = _blobs()
    rng = np.random.default_rng(1)
    logits = 2.0 * np.eye(4)[labels] + rng.normal(size=(len(labels), 4))
    wrong = rng.random(len(labels)) < 0.3          # 30% of the rows point elsewhere
    logits[wrong] = 2.0 * np.eye(4)[(labels[wrong] + 1) % 4]
    assert (logits.argmax(1) != labels).mean() > 0.2
    # The blobs outvote the posteriors' scattered errors, and cluster k starts
    # (and stays) at class k's posterior-weighted centroid: no relabelling.
    np.testing.assert_array_equal(cluster_labels.refine(x, logits), labels)


def test_refine_follows_the_posteriors_where_the_statistics_carry_nothing():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 25)
    flat = rng.normal(size=(len(labels), 3)) * 1e-3   # one cloud, no classes
    np.testing.assert_array_equal(
        cluster_labels.refine(flat, 5.0 * np.eye(4)[labels]), labels)


def test_agreement_hand_worked():
    """Rows: clusters; columns: the classifier's predictions of their rows."""
    counts = np.array([[10, 0, 0, 2],    # agrees
                       [0, 3, 8, 0],     # 8 of 11 predicted class 2: contradicted
                       [0, 1, 9, 0],     # agrees
                       [5, 0, 0, 5]])    # half is no strict majority: agrees
    agrees, groups = cluster_labels.agreement(counts)
    np.testing.assert_array_equal(agrees, [True, False, True, True])
    np.testing.assert_array_equal(groups, [0, 1, 1, 3])
    # Nothing contradicted: every class alone.
    agrees, groups = cluster_labels.agreement(np.diag([5, 6, 7, 8]))
    assert agrees.all() and list(groups) == [0, 1, 2, 3]
    # Two clusters that take each other's majority, and a chain into them:
    # one group, named by its smallest class.
    counts = np.array([[1, 9, 0], [9, 1, 0], [0, 7, 1]])
    agrees, groups = cluster_labels.agreement(counts)
    assert not agrees.any() and list(groups) == [0, 0, 0]


def test_soft_votes_and_contradicted_rows():
    labels = np.array([0, 0, 1, 1, 1, -1, 2])
    posteriors = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0.4, 0.6], [0, 0.4, 0.6],
                           [0.2, 0.8, 0], [1.0, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(cluster_labels.votes(labels, posteriors),
                               [[1.5, 0.5, 0], [0.2, 1.6, 1.2], [0, 0, 1.0]])
    # Cluster 1: class 2 holds 1.2 of 3.0, no majority; as hard votes it
    # would have 2 of 3.
    agrees, _ = cluster_labels.agreement(cluster_labels.votes(labels, posteriors))
    assert agrees.all()
    np.testing.assert_array_equal(
        cluster_labels.without_contradicted(labels, np.array([True, False, True])),
        [0, 0, -1, -1, -1, -1, 2])


def test_clusters_are_recomputed_from_the_end_of_the_warm_up_on():
    due = [s for s in range(1, 401) if cluster_labels.due(s, 400, 0.3, 50)]
    assert due == [120, 170, 220, 270, 320, 370]       # never after the last step
    assert [s for s in range(1, 8) if cluster_labels.due(s, 7, 0.0, 3)] == [1, 4]


def test_the_objective_reads_each_target_row_s_cluster():
    """Class alignment's pseudo-label cross-entropy over exactly the clustered
    rows, against their clusters' labels (numpy), whatever the posteriors."""
    n, c = 6, 3
    rng = np.random.default_rng(0)
    outputs = {"logits": jnp.asarray(rng.normal(size=(2 * n, c)) * 3, jnp.float32),
               "z_e": jnp.asarray(rng.normal(size=(2 * n, 4)), jnp.float32),
               "z_c": jnp.asarray(rng.normal(size=(2 * n, 4)), jnp.float32),
               "e": jnp.asarray(rng.normal(size=(2 * n, 4)), jnp.float32),
               "corpus_logits": jnp.zeros((2 * n, 2))}
    source_labels = jnp.asarray(rng.integers(0, c, n))
    cfg = objective_settings(c, 10, w_cor=0.0, w_cd=0.0, w_mmd=0.0, w_ca=1.0,
                             w_pseudo=1.0, label_smoothing=0.0, threshold_floor=0.99,
                             cluster_labels=True)
    labels = np.array([2, -1, 0, 1, -1, 0], np.int32)   # the batch's rows' clusters
    adapt = objective_lib.AdaptState.create(c, 4)
    _, (_, metrics) = objective_lib.objective(cfg, outputs, source_labels, adapt,
                                              jnp.int32(5), None, jnp.asarray(labels))
    keep = labels >= 0
    logits = np.asarray(outputs["logits"][n:], np.float64)[keep]
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = -log_p[np.arange(keep.sum()), labels[keep]].mean()
    assert float(metrics["loss_pseudo"]) == pytest.approx(want, rel=1e-5)
    assert float(metrics["confident_fraction"]) == pytest.approx(keep.mean())


@pytest.fixture(scope="module")
def pitch_pair(tmp_path_factory):
    """Two small corpora with prosody tracks and four shared emotions."""
    root = tmp_path_factory.mktemp("pair")
    data_dir = str(root / "data")
    emotions = ("neutral", "angry", "happy", "sad")
    _build(data_dir, str(root / "raw"), "src", emotions, per_emotion=3)
    _build(data_dir, str(root / "raw"), "tgt", emotions, speakers=3)
    return data_dir


def _config(data_dir, **overrides):
    config = cross_corpus.get_config("src,tgt")
    config.data.data_dir = data_dir
    config.data.n_mels = 16
    config.data.num_frames = 24
    config.data.eval_num_frames = 56
    config.data.classes = ("neutral", "angry", "happy", "sad")
    config.model.projection_dim = 8
    config.model.channels = 8
    config.model.num_blocks = 2
    config.batch_size = 8
    config.eval_batch_size = 8
    config.steps = 6
    config.log_every = 2
    config.checkpoint_every = 2
    config.loss.adapt_start = 0.3        # clusters after steps 2 and 4
    config.loss.cluster_labels = True
    config.loss.cluster_every = 2
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="module")
def straight_run(pitch_pair, tmp_path_factory):
    """A run of ``_config`` start to end: what the tests below must reproduce."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    train.train_and_evaluate(_config(pitch_pair), workdir)
    return workdir


def _final(workdir, step=6):
    """The parameters, the adaptation state and the target bank's arrays
    saved at ``step``."""
    raw = checkpointing.Checkpointer(workdir, read_only=True).manager.restore(step)
    return (jax.tree.leaves(raw["state"]["params"]),
            dict(raw["state"]["adapt"], **raw[checkpointing.BANK]))


def test_training_on_clusters_never_reads_target_labels(pitch_pair, straight_run,
                                                        tmp_path, monkeypatch):
    """Scrambling the target's labels changes nothing: the bank is filled by
    the training step, which never reads them."""
    config = _config(pitch_pair)
    task_labels = input_pipeline.TaskCorpus.task_labels

    def scrambled(self, split):
        labels = task_labels(self, split)
        return (labels + 1) % 4 if self.corpus.name == "tgt" else labels

    monkeypatch.setattr(input_pipeline.TaskCorpus, "task_labels", scrambled)
    train.train_and_evaluate(config, str(tmp_path / "scrambled"))
    (want, adapt), (got, adapt_got) = _final(straight_run), _final(str(tmp_path / "scrambled"))
    for a, b in zip(want, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # By the end every one of the 24 target utterances has the class of its
    # cluster, unless that cluster contradicted the classifier (-1).
    labels, agrees = np.asarray(adapt["labels"]), np.asarray(adapt["cluster_agrees"])
    assert labels.shape == (24,) and (labels >= 0).any()
    assert agrees[labels[labels >= 0]].all()
    for key in ("labels", "logits", "seen", "cluster_agrees", "class_groups"):
        np.testing.assert_array_equal(np.asarray(adapt[key]), np.asarray(adapt_got[key]))


def test_resume_with_clusters_equals_a_straight_run(pitch_pair, straight_run, tmp_path,
                                                    monkeypatch):
    """Stopped at step 3, between two clusterings (after steps 2 and 4): the
    checkpoint carries step 2's clusters and step 3's bank, and the resumed
    run ends where a straight one does."""
    import orbax.checkpoint as ocp
    config = _config(pitch_pair)
    workdir = str(tmp_path / "resumed")
    monkeypatch.setattr(ocp.multihost, "reached_preemption", lambda step: step == 3)
    assert train.train_and_evaluate(config, workdir) == {"step": 3, "preempted": True}
    monkeypatch.undo()
    train.train_and_evaluate(config, workdir)
    (want, adapt_want), (got, adapt_got) = _final(straight_run), _final(workdir)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in ("labels", "logits", "seen", "cluster_agrees", "class_groups"):
        np.testing.assert_array_equal(np.asarray(adapt_want[key]),
                                      np.asarray(adapt_got[key]))


def test_agreement_is_decided_once_and_keeps_contradicted_rows_unlabelled(
        pitch_pair, tmp_path, monkeypatch, capsys):
    """The verdict is taken at the first clustering (after step 2) alone,
    stored in the state, printed, and applied to every later clustering."""
    calls = []

    def verdict(counts):
        calls.append(counts)
        return np.array([True, False, True, True]), np.array([0, 1, 1, 3], np.int32)

    monkeypatch.setattr(cluster_labels, "agreement", verdict)
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(_config(pitch_pair), workdir)
    # Every utterance the first two steps drew voted once, with its posterior.
    _, first = _final(workdir, step=2)
    assert len(calls) == 1
    assert calls[0].sum() == pytest.approx(np.count_nonzero(first["seen"] >= 0))
    _, adapt = _final(workdir)
    np.testing.assert_array_equal(np.asarray(adapt["cluster_agrees"]), [1, 0, 1, 1])
    np.testing.assert_array_equal(np.asarray(adapt["class_groups"]), [0, 1, 1, 3])
    labels = np.asarray(adapt["labels"])
    assert not (labels == 1).any() and (labels >= 0).any()
    assert "warning: step 2: the classifier calls the target's angry cluster" in (
        capsys.readouterr().out)


@pytest.mark.parametrize("overrides, message", [
    ({"data.utterance_stats": False}, "config.loss.cluster_labels: clusters the target's "
                                      "utterance statistics: needs data.utterance_stats"),
    ({"loss.w_ca": 0.0, "loss.w_cd": 0.0}, "config.loss.cluster_labels: nothing reads "
                                            "pseudo-labels"),
    ({"loss.cluster_every": 0}, "config.loss.cluster_every: must be an integer >= 1"),
    ({"loss.cluster_labels": False, "loss.cluster_agreement": True},
     "config.loss.cluster_agreement: checks the target's clusters: needs "
     "loss.cluster_labels=True"),
])
def test_bad_cluster_settings_are_named(overrides, message):
    config = _config("unused", **overrides)
    with pytest.raises(ValueError, match=message):
        config_validation.validate_config(config)


def test_the_train_state_s_shape_does_not_depend_on_the_target_s_size(pitch_pair,
                                                                      tmp_path):
    """The cluster labels live in the target bank, outside the state: two
    targets of different sizes give states of the same shapes."""
    from emodna_jax import experiment
    emotions = ("neutral", "angry", "happy", "sad")
    _build(pitch_pair, str(tmp_path / "raw"), "tgt_wide", emotions, speakers=5)
    built = []
    for target in ("tgt", "tgt_wide"):
        config = _config(pitch_pair, **{"data.target": target})
        built.append(experiment.build(config, parallel=experiment.single_device()))
    assert built[0].target.num_train != built[1].target.num_train
    shapes = [jax.tree.map(lambda x: x.shape, b.abstract_state()) for b in built]
    assert shapes[0] == shapes[1]


TWO_PROCESSES = """
import sys, jax
from emodna_jax import distributed, train
from tests.test_cluster_labels import _config
data_dir, workdir, address, count, index = sys.argv[1:6]
if address != "-":
    distributed.initialize(address, int(count), int(index))
train.train_and_evaluate(_config(data_dir), workdir)
print("done", jax.process_index(), jax.process_count(), flush=True)
"""


def test_two_processes_fill_and_save_the_bank_as_one_does(pitch_pair, tmp_path):
    """Every process reads the whole global batch's rows back from the step,
    so 2 processes x 4 devices hold the bank that 1 x 8 holds, cluster alike
    and train alike."""
    import os
    import subprocess
    import sys
    from tests.test_distributed import REPO, _finish, _free_port

    def launch(workdir, address, count, index, devices):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        return subprocess.Popen(
            [sys.executable, "-c", TWO_PROCESSES, pitch_pair, workdir, address,
             str(count), str(index)], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)

    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    address = f"127.0.0.1:{_free_port()}"
    runs = [launch(two, address, 2, k, 4) for k in range(2)] + [launch(one, "-", 1, 0, 8)]
    outputs = [_finish(run) for run in runs]
    assert "done 0 2" in outputs[0] and "done 1 2" in outputs[1]
    (want, bank_want), (got, bank_got) = _final(one), _final(two)
    for a, b in zip(want, got):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    for key in ("labels", "seen", "cluster_agrees", "class_groups"):
        np.testing.assert_array_equal(np.asarray(bank_want[key]), np.asarray(bank_got[key]))
    np.testing.assert_allclose(bank_want["logits"], bank_got["logits"], atol=1e-4)
    assert (np.asarray(bank_got["labels"]) >= 0).any()


def test_an_unreadable_target_bank_sets_its_checkpoint_aside_like_a_state(
        pitch_pair, straight_run, tmp_path, capsys):
    """A damaged bank is found while resuming, named, and its checkpoint set
    aside; the run goes on from the one before, as with a damaged state."""
    import os
    import shutil
    workdir = str(tmp_path / "w")
    shutil.copytree(straight_run, workdir)
    step_dir = os.path.join(checkpointing.checkpoint_dir(workdir), "6")
    with open(os.path.join(step_dir, checkpointing.BANK, "_METADATA"), "r+b") as f:
        f.truncate(3)
    capsys.readouterr()
    result = train.train_and_evaluate(_config(pitch_pair, steps=8), workdir)
    out = capsys.readouterr().out
    assert result["step"] == 8
    warning = [line for line in out.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warning) == 1 and warning[0].startswith(
        f"warning: checkpoint 6 is unreadable: {os.path.join(step_dir, checkpointing.BANK)} (")
    assert "resumed from step 4" in out and os.path.isdir(step_dir + ".unreadable")
