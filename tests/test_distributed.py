"""Several processes, one run: 2 processes x 4 CPU devices against 1 x 8."""

import csv
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from emodna_jax import distributed

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each process trains the toy task and process 0 saves the parameters.  With
# random crops (24 of up to 51 frames), dropout and SpecAugment with a warp
# on: every draw is keyed by the row's place in the global batch, so the
# layout of processes and devices must not change a thing.
OVERRIDES = {"data.classes": ("neutral", "angry", "happy", "sad"),
             "augment.time_masks": 2, "augment.freq_masks": 2, "augment.warp": 0.1}
TRAIN = """
import sys, numpy as np, jax
from emodna_jax import distributed, train
from tests.conftest import toy_config

data_dir, workdir, out, address, count, index, mode, steps = sys.argv[1:9]
if address != "-":
    distributed.initialize(address, int(count), int(index))
config = toy_config(data_dir, steps=int(steps), checkpoint_every=int(steps), log_every=1,
                    **%r)
# mode: '+'-joined stages, run in this one process (a start and a compile
# each saved): train or preempt, then evaluate, then predict.
stages = mode.split("+")
if "preempt" in stages and jax.process_index() == 1:
    # A real SIGTERM reaches process 1 alone, during its second step (as
    # it reads its third batch ahead).
    import signal
    from emodna_jax import step as step_lib
    put_batch, calls = step_lib.Parallel.put_batch, []
    def put_batch_then_preempt(self, batch):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return put_batch(self, batch)
    step_lib.Parallel.put_batch = put_batch_then_preempt
if {"train", "preempt"} & set(stages):
    result = train.train_and_evaluate(config, workdir)
    if result.get("preempted"):
        print("preempted", jax.process_index(), result["step"], flush=True)
        sys.exit(0)
    from emodna_jax import experiment
    built, state, step = experiment.restore(config, workdir, built=experiment.build(config))
    if jax.process_index() == 0:
        leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
        np.savez(out + ".npz", **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    print("done", jax.process_index(), jax.process_count(), jax.device_count(), step,
          flush=True)
if "evaluate" in stages:
    from emodna_jax import evaluate
    evaluate.evaluate_checkpoints(config, workdir, progress=False)
    print("evaluated", jax.process_index(), flush=True)
if "predict" in stages:  # every toy target file, into out.json
    import dataclasses, json, os
    from emodna_jax import predict
    raw = os.path.join(os.path.dirname(data_dir), "raw", "toy_tgt")
    results = predict.predict_files(config, workdir, [raw], checkpoint=int(steps))
    if jax.process_index() == 0:
        with open(out + ".json", "w") as f:
            json.dump([dataclasses.asdict(r) for r in results], f)
    print("predicted", jax.process_index(), len(results), flush=True)
""" % (OVERRIDES,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, devices: int):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-c", TRAIN, *map(str, args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(process, timeout=600):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def _pair(toy_data_dir, workdir, out, mode, steps):
    """Two processes of 4 devices running ``mode`` in ``workdir``."""
    port = _free_port()
    return [_launch([toy_data_dir, workdir, out, f"127.0.0.1:{port}", 2, k, mode,
                     steps], devices=4) for k in range(2)]


STEPS = 6  # one scheduled checkpoint, at the end


@pytest.fixture(scope="module")
def trained_both_ways(toy_data_dir, tmp_path_factory):
    """The same run in 2 processes x 4 devices and in 1 x 8, side by side,
    each then evaluated (and the pair's predictions written) where it ran."""
    tmp = tmp_path_factory.mktemp("distributed")
    shared, single = str(tmp / "two"), str(tmp / "one")
    pair = _pair(toy_data_dir, shared, tmp / "two", "train+evaluate+predict", STEPS)
    one = _launch([toy_data_dir, single, tmp / "one", "-", 1, 0, "train+evaluate",
                   STEPS], devices=8)
    outputs = [_finish(p) for p in pair] + [_finish(one)]
    lone = _launch([toy_data_dir, str(tmp / "lone"), tmp / "lone", "-", 1, 0, "train",
                    STEPS], devices=1)
    outputs.append(_finish(lone))
    return tmp, shared, single, outputs


def _assert_same_params(path_a, path_b, atol=1e-5):
    a, b = np.load(path_a), np.load(path_b)
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=1e-5, err_msg=key)


def test_two_processes_of_four_devices_train_and_evaluate_as_one_of_eight(
        toy_data_dir, trained_both_ways):
    tmp, shared, single, outputs = trained_both_ways
    assert f"done 0 2 8 {STEPS}" in outputs[0] and f"done 1 2 8 {STEPS}" in outputs[1]
    assert f"done 0 1 8 {STEPS}" in outputs[2]
    # Each process held its own workdir lock; process 0 alone wrote the logs.
    assert {".lock", ".lock.1"} <= set(os.listdir(shared))
    with open(os.path.join(shared, "metrics.jsonl")) as f:
        steps = [line for line in f if '"split": "train"' in line]
    assert len(steps) == STEPS
    _assert_same_params(tmp / "two.npz", tmp / "one.npz")
    # And one process of one device: the same run again.
    assert f"done 0 1 1 {STEPS}" in outputs[3]
    _assert_same_params(tmp / "lone.npz", tmp / "one.npz")
    losses = []
    for workdir in (shared, single, str(tmp / "lone")):
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            losses.append([json.loads(line)["loss"] for line in f
                           if '"split": "train"' in line])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)
    # Batch evaluation: every process computes, process 0 writes; the table
    # equals the one-process table of the same checkpoints.
    assert "evaluated 1" in outputs[1]
    tables = []
    for workdir in (shared, single):
        with open(os.path.join(workdir, "eval", "metrics.csv")) as f:
            tables.append({(r["step"], r["split"]): r for r in csv.DictReader(f)})
    assert sorted(tables[0]) == sorted(tables[1]) == [
        (str(STEPS), split) for split in ("source_val", "target")]
    for key, row in tables[0].items():
        for metric in ("uar", "war", "macro_f1", "nll"):
            assert float(row[metric]) == pytest.approx(float(tables[1][key][metric]),
                                                       abs=1e-6), (key, metric)


def test_prediction_in_two_processes_equals_one(toy_data_dir, trained_both_ways):
    from emodna_jax import predict
    from tests.conftest import toy_config
    tmp, shared, _, outputs = trained_both_ways
    # The same prediction in this one process (the script's config).
    config = toy_config(toy_data_dir, steps=STEPS, checkpoint_every=STEPS, log_every=1,
                        **OVERRIDES)
    raw = os.path.join(os.path.dirname(toy_data_dir), "raw", "toy_tgt")
    one = [dataclasses.asdict(r) for r in
           predict.predict_files(config, shared, [raw], checkpoint=STEPS)]
    assert f"predicted 1 {len(one)}" in outputs[1] and len(one) > 10
    with open(tmp / "two.json") as f:
        two = json.load(f)
    assert [r["path"] for r in two] == [r["path"] for r in one]
    assert [r["emotion"] for r in two] == [r["emotion"] for r in one]
    for a, b in zip(two, one):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_sigterm_to_one_of_two_processes_stops_both_and_resumes_bit_exactly(
        toy_data_dir, trained_both_ways, tmp_path):
    straight = trained_both_ways[0] / "two.npz"
    workdir = str(tmp_path / "stopped")
    outputs = [_finish(p) for p in _pair(toy_data_dir, workdir, tmp_path / "unused",
                                         "preempt", STEPS)]
    # Both processes stop at the step where process 1 was signalled, with one
    # checkpoint of it.
    assert "preempted 0 2" in outputs[0] and "preempted 1 2" in outputs[1], outputs
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    elsewhere = str(tmp_path / "moved")        # the same checkpoint, resumed on 1 x 8
    shutil.copytree(workdir, elsewhere)
    for process in _pair(toy_data_dir, workdir, tmp_path / "resumed", "train", STEPS):
        _finish(process)
    want, got = np.load(straight), np.load(tmp_path / "resumed.npz")
    assert sorted(want.files) == sorted(got.files) and len(want.files) > 10
    for key in want.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    _finish(_launch([toy_data_dir, elsewhere, tmp_path / "moved", "-", 1, 0, "train",
                     STEPS], devices=8))
    _assert_same_params(tmp_path / "moved.npz", trained_both_ways[0] / "one.npz")


def test_partial_process_flags_are_refused():
    with pytest.raises(ValueError, match="go together"):
        distributed.initialize("127.0.0.1:1234", None, 0)
    with pytest.raises(ValueError, match=r"--process_id=2: must lie in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1234", 2, 2)


def test_one_process_needs_no_runtime(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    assert not distributed.on_cluster()
    distributed.initialize()  # nothing to join: returns without a runtime
    assert distributed.any_process(True) and not distributed.any_process(False)
    assert distributed.gather_json({"a": 1}) == [{"a": 1}]
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed.on_cluster()


def test_an_input_position_resumes_on_any_process_count_when_the_processes_agree(
        monkeypatch):
    from emodna_jax import train
    position = {"next_index": 7}
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert train._own_iterator_state({"per_process": [position, position]}, "w") == position
    with pytest.raises(ValueError, match=r"^w: the checkpoint's 2 processes stored "
                                         r"different input positions; resume it with 2 "
                                         r"processes, not 1$"):
        train._own_iterator_state({"per_process": [position, {"next_index": 8}]}, "w")
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert train._own_iterator_state(position, "w") == position
