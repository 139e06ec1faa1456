"""Integrity of training: resume equality, target-label blindness, NaN stops."""

import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from emodna_jax import checkpointing
from emodna_jax import config_validation
from emodna_jax import objective as objective_lib
from emodna_jax import step as step_lib
from emodna_jax import train
from tests.conftest import build_toy_task, toy_config

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_params(workdir, step):
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    raw = checkpointer.manager.restore(step)
    return jax.tree.leaves(raw["state"]["params"]), raw


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_after_sigterm_equals_a_straight_run(toy_data_dir, tmp_path, monkeypatch):
    config = toy_config(toy_data_dir)
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
    assert straight["step"] == 6

    put_batch = step_lib.Parallel.put_batch
    calls = []

    def put_batch_then_preempt(self, batch):
        calls.append(1)
        # A real SIGTERM arrives during step 3, as batch 4 is read ahead.
        if len(calls) == 4:
            signal.raise_signal(signal.SIGTERM)
        return put_batch(self, batch)

    workdir = str(tmp_path / "resumed")
    monkeypatch.setattr(step_lib.Parallel, "put_batch", put_batch_then_preempt)
    stopped = train.train_and_evaluate(config, workdir)
    monkeypatch.setattr(step_lib.Parallel, "put_batch", put_batch)
    assert stopped == {"step": 3, "preempted": True}
    assert checkpointing.Checkpointer(workdir, read_only=True).latest_step() == 3

    resumed = train.train_and_evaluate(config, workdir)
    assert resumed["step"] == 6
    want, _ = final_params(str(tmp_path / "straight"), 6)
    got, raw = final_params(workdir, 6)
    assert_bitwise_equal(got, want)
    assert resumed["target_uar"] == straight["target_uar"]


def test_an_orbax_preemption_sync_point_stops_every_host_at_its_step(
        toy_data_dir, tmp_path, monkeypatch, capsys):
    """On a multi-host TPU VM the coordination service picks the step at
    which every host saves (orbax's reached_preemption); the loop obeys it."""
    import orbax.checkpoint as ocp
    asked = []

    def sync_point_at_4(step):
        asked.append(step)
        return step == 4

    monkeypatch.setattr(ocp.multihost, "reached_preemption", sync_point_at_4)
    workdir = str(tmp_path / "w")
    stopped = train.train_and_evaluate(toy_config(toy_data_dir), workdir)
    assert stopped == {"step": 4, "preempted": True} and asked == [1, 2, 3, 4]
    assert checkpointing.Checkpointer(workdir, read_only=True).latest_step() == 4
    assert "preempted: saved step 4, exiting" in capsys.readouterr().out


def test_target_labels_never_influence_training(toy_data_dir, tmp_path):
    permuted_dir = build_toy_task(str(tmp_path / "data"), str(tmp_path / "raw"),
                                  permute_target_labels=True)
    runs = []
    for data_dir, name in ((toy_data_dir, "true"), (permuted_dir, "permuted")):
        workdir = str(tmp_path / name)
        train.train_and_evaluate(toy_config(data_dir, steps=4), workdir)
        runs.append(final_params(workdir, 4)[0])
    assert_bitwise_equal(runs[0], runs[1])


@pytest.mark.parametrize("log_every", [2, 6])
def test_non_finite_loss_stops_with_step_and_loss_and_keeps_the_checkpoint(
        toy_data_dir, tmp_path, monkeypatch, log_every):
    """The host reads the metrics only at log and checkpoint steps; the first
    non-finite step is still the one named, and no checkpoint after it is
    written (log_every 6: read at the checkpoints of steps 2, 4 and 6)."""
    real = objective_lib.objective

    def poisoned(cfg, outputs, labels, adapt, step, *rest):
        loss, (new_adapt, metrics) = real(cfg, outputs, labels, adapt, step, *rest)
        bad = jax.numpy.where(step == 4, jax.numpy.nan, 0.0)
        metrics = dict(metrics, loss_cls=metrics["loss_cls"] + bad)
        return loss + bad, (new_adapt, metrics)

    monkeypatch.setattr(objective_lib, "objective", poisoned)
    workdir = str(tmp_path / "nan")
    with pytest.raises(train.NonFiniteLossError, match=r"step 5 .*loss_cls"):
        train.train_and_evaluate(toy_config(toy_data_dir, log_every=log_every), workdir)
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    assert checkpointer.all_steps() == [2, 4]
    params, _ = final_params(workdir, 4)
    assert all(np.all(np.isfinite(np.asarray(p))) for p in params)


@pytest.mark.parametrize("key, value, message", [
    ("parallelism", "vmap", "config.parallelism: must be one of"),
    ("model.backbone", "rnn", "config.model.backbone"),
    ("steps", 0, "config.steps: must be a positive integer"),
    ("loss.w_cd", -1.0, "config.loss.w_cd: must be >= 0"),
    ("data.classes", ("angry", "angry"), "duplicates"),
    ("data.classes", ("angry", "furious"), "not canonical emotion names"),
    ("data.target", "toy_src", "must differ from data.source"),
    ("data.cache_mib", -1, "config.data.cache_mib: must be a number >= 0"),
])
def test_bad_config_values_are_named(toy_data_dir, key, value, message):
    config = toy_config(toy_data_dir)
    config.update_from_flattened_dict({key: value})
    with pytest.raises(ValueError, match=message):
        config_validation.validate_config(config)


def test_a_class_missing_from_a_corpus_is_reported(toy_data_dir, tmp_path):
    config = toy_config(toy_data_dir)
    config.data.classes = ("angry", "fear")
    with pytest.raises(ValueError, match=r"toy_src has no utterances of \['fear'\]"):
        train.train_and_evaluate(config, str(tmp_path / "w"))


def test_unknown_config_key_fails_before_training(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "emodna_jax.main", "--config=configs/default.py",
         f"--workdir={tmp_path}", "--config.loss.w_typo=1.0"],
        cwd=REPO, capture_output=True, text=True)
    assert run.returncode != 0
    assert "w_typo" in run.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_a_checkpoint_from_before_an_optional_state_field_still_restores(
        toy_data_dir, tmp_path):
    """A state saved before ``AdaptState`` gained the None-when-unused
    agreement fields lacks their keys, and holds the cluster labels that the
    target bank holds now; it restores into today's state with every other
    array as written, and a checkpoint of another tree is still refused."""
    import flax
    from emodna_jax import experiment

    @flax.struct.dataclass
    class AdaptBefore:               # AdaptState as it was saved then
        tau_g: jax.Array
        p_tilde: jax.Array
        prototypes: jax.Array
        cluster_labels: object   # retired: the target bank holds them now

    config = toy_config(toy_data_dir)
    built = experiment.build(config, parallel=experiment.single_device())
    state = jax.device_get(built.init_state())
    state = state.replace(step=np.int32(7), adapt=AdaptBefore(
        np.float32(0.6), np.full(4, 0.25, np.float32), np.ones((4, 8), np.float32),
        np.arange(5, dtype=np.int32)))
    workdir = str(tmp_path / "old")
    writer = checkpointing.Checkpointer(workdir)
    writer.save(7, state, {"position": 3}, {"seed": 0})
    writer.wait()
    writer.close()
    reader = checkpointing.Checkpointer(workdir, read_only=True)
    restored, iterator = reader.restore(7, built.abstract_state())
    assert iterator == {"position": 3} and int(restored.step) == 7
    assert restored.adapt.cluster_agrees is None and restored.adapt.class_groups is None
    np.testing.assert_array_equal(np.asarray(restored.adapt.prototypes), np.ones((4, 8)))
    assert_bitwise_equal(jax.tree.leaves(restored.params), jax.tree.leaves(state.params))
    assert float(reader.restore_state(7, built.abstract_state()).adapt.tau_g) == (
        pytest.approx(0.6))
    # A state whose arrays differ from the checkpoint's is not papered over.
    wider = built.abstract_state()
    wider = wider.replace(adapt=wider.adapt.replace(
        cluster_agrees=jax.ShapeDtypeStruct((4,), bool, sharding=wider.adapt.tau_g.sharding)))
    with pytest.raises(ValueError, match="tree structures do not match"):
        reader.restore_state(7, wider)


def test_a_checkpoint_of_another_width_is_refused_naming_the_array(toy_data_dir, tmp_path):
    """A checkpoint of another model or input width (such as frames with 17
    utterance statistics, from before the energy velocity) is refused in one
    line that names the first array that does not fit, not orbax's bare
    pair of shapes."""
    from emodna_jax import experiment
    config = toy_config(toy_data_dir)
    built = experiment.build(config, parallel=experiment.single_device())
    workdir = str(tmp_path / "narrow")
    writer = checkpointing.Checkpointer(workdir)
    writer.save(3, jax.device_get(built.init_state()), {"position": 0}, {"seed": 0})
    writer.wait()
    writer.close()
    config.model.channels = 12
    wider = experiment.build(config, parallel=experiment.single_device())
    reader = checkpointing.Checkpointer(workdir, read_only=True)
    with pytest.raises(checkpointing.ShapeMismatch) as raised:
        reader.restore_state(3, wider.abstract_state())
    said = re.match(r"(\S+) is stored as \[([\d, ]+)\] and this config builds "
                    r"\[([\d, ]+)\]: the checkpoint was written for another model",
                    str(raised.value))
    assert said, str(raised.value)

    def shape_at(state, path):
        node = state
        for part in path.split("/"):
            node = getattr(node, part) if hasattr(node, part) else node[part]
        return [int(n) for n in node.shape]
    narrow = [int(n) for n in said.group(2).split(",")]
    wide = [int(n) for n in said.group(3).split(",")]
    assert narrow == shape_at(built.abstract_state(), said.group(1)) and 8 in narrow
    assert wide == shape_at(wider.abstract_state(), said.group(1)) and 12 in wide
    assert checkpointing.describe_failure(raised.value) == str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_entry_point_keeps_compiled_steps_in_the_user_s_cache(tmp_path, monkeypatch):
    from emodna_jax import main
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    before = jax.config.jax_compilation_cache_dir
    try:
        assert main.use_compilation_cache() == str(tmp_path / "cache" / "emodna_jax" / "xla")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "emodna_jax" / "xla")
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
        assert main.use_compilation_cache() == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
