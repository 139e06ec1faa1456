"""One run per workdir; a preempted source-only comparison exits cleanly."""

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from emodna_jax import runs
from emodna_jax import step as step_lib
from emodna_jax import train
from emodna_jax import workdir_lock
from tests.conftest import toy_config

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time; from emodna_jax import workdir_lock\n"
        "with workdir_lock.exclusive(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(600)\n")


def _hold(workdir):
    """A second process that takes the workdir and keeps it."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, workdir], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path):
    workdir = str(tmp_path / "w")
    child = _hold(workdir)
    try:
        with pytest.raises(workdir_lock.WorkdirInUse,
                           match=f"workdir {workdir} is in use by pid {child.pid}$"):
            with workdir_lock.exclusive(workdir):
                pass
    finally:
        child.kill()  # SIGKILL: no clean-up code runs in the holder
        child.wait()
    with workdir_lock.exclusive(workdir):  # the kernel released the dead lock
        with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
            assert f.read() == str(os.getpid())


def test_training_refuses_a_workdir_in_use_before_writing(toy_data_dir, tmp_path):
    workdir = str(tmp_path / "w")
    child = _hold(workdir)
    try:
        with pytest.raises(workdir_lock.WorkdirInUse, match="is in use by pid"):
            train.train_and_evaluate(toy_config(toy_data_dir), workdir)
        assert sorted(os.listdir(workdir)) == [workdir_lock.LOCK_FILE]
    finally:
        child.kill()
        child.wait()


def test_sigterm_during_the_source_only_comparison_exits_cleanly(
        toy_data_dir, tmp_path, monkeypatch, capsys):
    config = toy_config(toy_data_dir, compare_source_only=True)
    put_batch = step_lib.Parallel.put_batch
    train_and_evaluate = train.train_and_evaluate
    armed = {"first run": True, "source-only steps": None}

    def run_and_watch(config, workdir):
        if workdir.endswith("source_only") and armed["first run"]:
            armed["source-only steps"] = 0
        return train_and_evaluate(config, workdir)

    def preempt_in_the_comparison(self, batch):
        if armed["source-only steps"] is not None and "src_frames" in batch:
            armed["source-only steps"] += 1
            if armed["source-only steps"] == 3:  # during its step 2 (batch 3 read ahead)
                signal.raise_signal(signal.SIGTERM)
        return put_batch(self, batch)

    monkeypatch.setattr(train, "train_and_evaluate", run_and_watch)
    monkeypatch.setattr(step_lib.Parallel, "put_batch", preempt_in_the_comparison)
    assert runs.run("train", config, str(tmp_path / "w")) == 0
    assert "preempted: saved step 2" in capsys.readouterr().out
    armed.update({"first run": False, "source-only steps": None})  # the rerun finishes
    assert runs.run("train", config, str(tmp_path / "w")) == 0
    out = capsys.readouterr().out
    assert "resumed from step 2" in out and "source-only  target UAR" in out


def _truncate_largest(directory):
    files = [os.path.join(root, f) for root, _, names in os.walk(directory)
             for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)
    return largest


@pytest.mark.parametrize("damage", ["state", "data_iter"])
def test_an_unreadable_latest_checkpoint_is_set_aside_and_the_previous_used(
        toy_data_dir, tmp_path, capsys, damage):
    from emodna_jax import checkpointing
    workdir = str(tmp_path / "w")
    train.train_and_evaluate(toy_config(toy_data_dir), workdir)
    step_dir = os.path.join(checkpointing.checkpoint_dir(workdir), "6")
    if damage == "state":
        _truncate_largest(os.path.join(step_dir, "state"))
    else:
        with open(os.path.join(step_dir, "data_iter", "metadata"), "r+b") as f:
            f.truncate(3)
    capsys.readouterr()
    result = train.train_and_evaluate(toy_config(toy_data_dir, steps=8), workdir)
    out = capsys.readouterr().out
    assert result["step"] == 8
    warning = [line for line in out.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warning) == 1 and warning[0].startswith(
        f"warning: checkpoint 6 is unreadable: {os.path.join(step_dir, damage)} (")
    assert "resumed from step 4" in out
    assert os.path.isdir(step_dir + ".unreadable")  # kept for inspection
    assert checkpointing.Checkpointer(workdir, read_only=True).all_steps() == [4, 6, 8]


def test_evaluation_reports_an_unreadable_checkpoint_and_evaluates_the_rest(
        toy_data_dir, tmp_path):
    from emodna_jax import checkpointing, evaluate
    workdir = str(tmp_path / "w")
    config = toy_config(toy_data_dir)
    train.train_and_evaluate(config, workdir)
    _truncate_largest(os.path.join(checkpointing.checkpoint_dir(workdir), "4", "state"))
    summary = evaluate.evaluate_checkpoints(config, workdir, progress=False)
    assert list(summary["unreadable_checkpoints"]) == ["4"]
    with open(os.path.join(workdir, "eval", "metrics.csv")) as f:
        assert sorted({int(line.split(",")[0]) for line in f.readlines()[1:]}) == [2, 6]
    assert summary["last"]["step"] == 6


def test_resuming_refuses_a_change_of_state_shape_and_warns_about_others(
        toy_data_dir, tmp_path, capsys):
    import json
    from emodna_jax import checkpointing
    workdir = str(tmp_path / "w")
    train.train_and_evaluate(toy_config(toy_data_dir), workdir)
    with pytest.raises(ValueError, match=r"checkpoint 6 was trained with another state "
                                         r"shape \(model.channels 8 -> 16\); use a new workdir"):
        train.train_and_evaluate(toy_config(toy_data_dir, **{"model.channels": 16}),
                                 workdir)
    assert checkpointing.Checkpointer(workdir, read_only=True).all_steps() == [2, 4, 6]
    capsys.readouterr()
    changed = toy_config(toy_data_dir, **{"optim.learning_rate": 1e-3, "steps": 8})
    train.train_and_evaluate(changed, workdir)
    out = capsys.readouterr().out
    assert ("warning: resuming step 6 with a changed config: optim.learning_rate "
            "0.002 -> 0.001; steps 6 -> 8") in out
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    [note] = [r for r in records if r["split"] == "config_change"]
    assert note["step"] == 6 and note["steps"] == {"was": 6, "now": 8}


def test_a_switch_newer_than_the_checkpoint_counts_as_off_in_it(capsys):
    """A checkpoint saved before a config entry existed is read as having
    it off: turning a state-shaping switch on is refused by name, another
    switch on is a warning, an entry left off or valued is no change."""
    saved = {"loss": {"w_ca": 1.0}}
    with pytest.raises(ValueError, match=r"checkpoint 9 was trained with another state "
                                         r"shape \(loss.cluster_labels None -> True\)"):
        train.config_changes(saved, {"loss": {"w_ca": 1.0, "cluster_labels": True}},
                             step=9, workdir="w")
    changes = train.config_changes(
        saved, {"loss": {"w_ca": 1.0, "cluster_labels": False, "cluster_every": 25,
                         "pseudo_agreement": True}}, step=9, workdir="w")
    assert changes == {"loss.pseudo_agreement": (None, True)}
    assert "loss.pseudo_agreement None -> True" in capsys.readouterr().out


def test_metrics_of_lost_steps_and_a_rerun_final_evaluation_are_not_doubled(
        toy_data_dir, tmp_path):
    import json
    from emodna_jax import metric_writer
    workdir = str(tmp_path / "w")
    config = toy_config(toy_data_dir)
    train.train_and_evaluate(config, workdir)
    train.train_and_evaluate(config, workdir)  # finished already: evaluates again
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys)) and keys.count((6, "eval")) == 1
    # Lines past a restored step (written after its checkpoint) are dropped.
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 7, "split": "train", "loss": 1.0}) + "\n")
    metric_writer.reconcile(workdir, 6, finished=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [r["step"] for r in records]


@pytest.mark.parametrize("flag, message", [
    ("--config.stepz=3", """error: the config has no key 'stepz'; did you mean "steps" """
                         """instead of "stepz"?"""),
    ("--config.steps=abc", "error: flag --config.steps=abc: invalid literal for int()"),
])
def test_a_bad_config_flag_is_one_line(tmp_path, flag, message):
    run = subprocess.run([sys.executable, "-m", "emodna_jax.main",
                          "--config=configs/default.py", f"--workdir={tmp_path}", flag],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(message)


def test_a_full_disk_stops_at_the_save_that_does_not_fit(
        toy_data_dir, tmp_path, monkeypatch):
    from emodna_jax import checkpointing
    workdir = str(tmp_path / "w")
    real = checkpointing.free_bytes
    calls = []

    def full_from_the_second_save(path):
        calls.append(path)
        return 0 if len(calls) >= 2 else real(path)

    monkeypatch.setattr(checkpointing, "free_bytes", full_from_the_second_save)
    with pytest.raises(checkpointing.DiskFull) as caught:
        train.train_and_evaluate(toy_config(toy_data_dir), workdir)
    assert str(caught.value) == ("No space left on device writing checkpoint 4; "
                                 "last good checkpoint 2")
    assert checkpointing.Checkpointer(workdir, read_only=True).all_steps() == [2]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:  # no step past the save
        assert max(json.loads(line)["step"] for line in f) == 4


def test_a_background_save_that_runs_out_of_space_names_its_step(
        toy_data_dir, tmp_path, monkeypatch):
    """orbax reports a failed asynchronous write only at the next save or
    wait: the error still names the step that failed and the one before."""
    import errno
    from emodna_jax import checkpointing
    workdir = str(tmp_path / "w")
    original = checkpointing.Checkpointer.save

    def save(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == 4:  # this write "fails" in the background
            finish = self.manager.wait_until_finished
            failures = [OSError(errno.ENOSPC, "No space left on device")]

            def wait_until_finished():
                finish()
                if failures:
                    raise failures.pop()

            monkeypatch.setattr(self.manager, "wait_until_finished", wait_until_finished)

    monkeypatch.setattr(checkpointing.Checkpointer, "save", save)
    with pytest.raises(checkpointing.DiskFull,
                       match="^No space left on device writing checkpoint 4; "
                             "last good checkpoint 2$"):
        train.train_and_evaluate(toy_config(toy_data_dir), workdir)


def test_main_reports_a_full_disk_in_one_line(tmp_path):
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    script = ("import sys; from emodna_jax import checkpointing, main, runs\n"
              "def full(*a, **k): raise checkpointing.DiskFull(30, 20)\n"
              "runs.run = full\n"
              "sys.argv = ['main', '--config=configs/default.py', '--workdir=' + sys.argv[1]]\n"
              "from absl import app\n"
              "app.run(main.main, flags_parser=main.parse_flags)\n")
    done = subprocess.run([sys.executable, "-c", script, workdir], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: No space left on device writing checkpoint 30; "
                                   "last good checkpoint 20")


# --------------------------------------------------------------------------
# Checkpoints that do not fit, or do not read; labelled results; watch; what
# a first run says.

CLASSES3 = ("neutral", "angry", "happy")  # the toy target's 'sad' is excluded


def labelled_config(data_dir, **overrides):
    return toy_config(data_dir, **{"data.classes": CLASSES3, **overrides})


@pytest.fixture(scope="module")
def evaluated(toy_data_dir, tmp_path_factory):
    """A toy run (checkpoints 2, 4, 6) and its evaluation; tests copy it."""
    from emodna_jax import evaluate
    workdir = str(tmp_path_factory.mktemp("evaluated") / "w")
    train.train_and_evaluate(labelled_config(toy_data_dir), workdir)
    evaluate.evaluate_checkpoints(labelled_config(toy_data_dir), workdir,
                                  progress=False)
    return workdir


def _copy(workdir, tmp_path):
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    return copy


def _contents(folder):
    """path -> bytes of every file below ``folder``."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return out


def test_evaluating_with_another_state_shape_is_refused_by_name(
        evaluated, toy_data_dir, tmp_path):
    """Evaluation makes training's check before reading a checkpoint: the
    mismatch is named, not every checkpoint called unreadable, and eval/ is
    left as it was; prediction refuses too."""
    from emodna_jax import evaluate, experiment
    workdir = _copy(evaluated, tmp_path)
    before = _contents(os.path.join(workdir, "eval"))
    wider = labelled_config(toy_data_dir, **{"model.channels": 16})
    with pytest.raises(ValueError, match=r"checkpoint 2 was trained with another state "
                                         r"shape \(model.channels 8 -> 16\); evaluate it "
                                         r"with the config it was trained with$"):
        evaluate.evaluate_checkpoints(wider, workdir, force=True, progress=False)
    assert _contents(os.path.join(workdir, "eval")) == before
    with pytest.raises(ValueError, match=r"checkpoint 6 was trained with another state "
                                         r"shape \(model.channels 8 -> 16\)"):
        experiment.restore(wider, workdir)


def test_results_carry_their_label_and_another_config_does_not_write_under_it(
        evaluated, toy_data_dir, tmp_path):
    """summary.json and report.md name the task and the config hash; a
    config that would compute other numbers (or a summary of another task,
    as an older version wrote it) is refused before anything is written."""
    from emodna_jax import evaluate
    workdir = _copy(evaluated, tmp_path)
    out_dir = os.path.join(workdir, "eval")
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    label = evaluate.evaluation_label(labelled_config(toy_data_dir))
    assert summary["task"] == "toy_src -> toy_tgt" == label["task"]
    assert summary["config_hash"] == label["config_hash"]
    with open(os.path.join(out_dir, "report.md")) as f:
        report = f.read()
    assert report.startswith("# Evaluation: toy_src -> toy_tgt\n")
    assert f"Config hash `{label['config_hash']}`" in report
    before = _contents(out_dir)
    other = labelled_config(toy_data_dir, **{"data.eval_num_frames": 48})
    with pytest.raises(ValueError, match=rf"{out_dir} holds the evaluation of config "
                                         rf"{label['config_hash']}, not \w+ \(data."
                                         r"eval_num_frames 56 -> 48\): evaluate with"):
        evaluate.evaluate_checkpoints(other, workdir, force=True, progress=False)
    assert _contents(out_dir) == before
    old = {k: v for k, v in summary.items()
           if k not in ("task", "config_hash", "config_entries")}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(dict(old, target="other_corpus"), f)
    with pytest.raises(ValueError, match=r"holds the evaluation of the task toy_src -> "
                                         r"other_corpus, not toy_src -> toy_tgt"):
        evaluate.evaluate_checkpoints(labelled_config(toy_data_dir), workdir,
                                      progress=False)


def test_a_failed_read_is_described_by_its_innermost_cause():
    """orbax's wrapper repeats the whole TensorStore spec; the cause names
    the array and what is wrong with it."""
    from emodna_jax import checkpointing
    try:
        try:
            raise ValueError('OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT '
                             'database at local file "/w/checkpoints/6/state/": '
                             'Requested byte range [10, 20) is not valid for value '
                             "of size 5 [source locations='tensorstore/kvstore/"
                             "ocdbt/io.cc:97']")
        except ValueError as cause:
            raise Exception("Encountered error while reading array index: (). See full "
                            "TensorStore details: <bound method spec of TensorStore({\n"
                            "  'driver': 'zarr',\n})>.") from cause
    except Exception as error:
        assert checkpointing.describe_failure(error) == (
            'OUT_OF_RANGE: Error reading "params.w/0.0" in OCDBT database at local '
            'file "/w/checkpoints/6/state/": Requested byte range [10, 20) is not '
            "valid for value of size 5")


ORBAX_LIKE = '''
import types

@types.coroutine
def _pause():
    yield

async def read():
    try:
        await _pause()
    finally:
        raise Exception("read failed")
'''


def _dying_coroutine(filename):
    """A started coroutine of code from ``filename`` that raises when it is
    closed unfinished, as orbax's read coroutines do after a failed read."""
    space = {}
    exec(compile(ORBAX_LIKE, filename, "exec"), space)
    coroutine = space["read"]()
    coroutine.send(None)
    return coroutine


def _closed_loop_error():
    """What TensorStore's thread meets handing a late read to a closed loop."""
    import asyncio
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as error:
        return error


def test_orbax_read_coroutines_closed_by_a_failed_read_are_not_reported(monkeypatch):
    """Neither orbax's coroutines closed with the failed read, nor reads
    finishing into its closed event loop, print anything; other errors do."""
    import gc
    from emodna_jax import checkpointing
    reported, uncaught = [], []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    monkeypatch.setattr(sys, "excepthook", lambda *args: uncaught.append(args[1]))
    checkpointing.quiet_failed_reads()
    orbax = _dying_coroutine(os.path.join(os.sep, "site", "orbax", "serialization.py"))
    mine = _dying_coroutine(os.path.join(os.sep, "site", "mine", "code.py"))
    del orbax, mine
    gc.collect()
    assert [str(u.exc_value) for u in reported] == ["read failed"]
    assert "mine" in reported[0].object.cr_code.co_filename
    late, other = _closed_loop_error(), RuntimeError("Event loop is closed")
    for error in (late, other):
        sys.excepthook(RuntimeError, error, error.__traceback__)
    assert uncaught == [other]


def test_prediction_falls_back_to_the_newest_readable_checkpoint(
        evaluated, toy_data_dir, tmp_path, capsys):
    from emodna_jax import experiment, predict
    workdir = _copy(evaluated, tmp_path)
    _truncate_largest(os.path.join(workdir, "checkpoints", "6", "state"))
    capsys.readouterr()
    wav = os.path.join(os.path.dirname(toy_data_dir), "raw", "toy_tgt", "spk0_0.wav")
    [result] = predict.predict_files(labelled_config(toy_data_dir), workdir, [wav])
    assert result.error is None and result.emotion in CLASSES3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: checkpoint 6 is unreadable (")
    assert err[0].endswith("); using checkpoint 4, the newest readable one")
    assert "TensorStore" not in err[0]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))  # only read
    with pytest.raises(ValueError, match=r"checkpoint 6 is unreadable \(.*\); pick "
                                         r"another with --checkpoint \(it has \[2, 4, 6\]\)$"):
        experiment.restore(labelled_config(toy_data_dir), workdir, 6)


def test_watch_stops_when_the_run_is_finished_whatever_its_own_steps(
        evaluated, toy_data_dir, tmp_path, capsys):
    """The run's own steps (saved with its checkpoints) say it finished, not
    the watcher's config; a checkpoint saved while watch evaluated is
    evaluated next; a run no process holds has stopped; a held one is
    waited for, saying what for."""
    import shutil
    from emodna_jax import evaluate
    workdir = _copy(evaluated, tmp_path)
    capsys.readouterr()
    summary = evaluate.watch(labelled_config(toy_data_dir, steps=8), workdir,
                             poll_seconds=0.01, timeout_seconds=1)
    assert summary["last"]["step"] == 6
    assert capsys.readouterr().out.splitlines()[-1] == (
        "evaluated up to step 6; training finished (its final step 6); stopping")
    assert evaluate.training_stopped(workdir, 4) == ("", "checkpoint 6 is next")
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))  # a run that stopped at 4
    assert evaluate.training_stopped(workdir, 4) == (
        f"training is not running in {workdir} (no run holds it) and stopped at "
        "step 4 of 6; stopping", "")
    child = _hold(workdir)
    try:
        assert evaluate.training_stopped(workdir, 4) == (
            "", "waiting for training to reach step 6")
    finally:
        child.kill()
        child.wait()


def test_a_first_run_says_where_things_are_and_what_its_figures_are(
        evaluated, toy_data_dir, tmp_path, capsys):
    """Where the shards, the workdir and the report are; short [train]
    lines (every value still in metrics.jsonl); why evaluation's figures
    differ from training's; the figure that shows excluded emotions says so."""
    from emodna_jax import metric_writer
    workdir = _copy(evaluated, tmp_path)
    capsys.readouterr()
    assert runs.run("train", labelled_config(toy_data_dir, steps=8), workdir) == 0
    out = capsys.readouterr().out.splitlines()
    data = os.path.join(toy_data_dir, "ser_corpus")
    assert out[0].startswith(f"source: toy_src ({data}")
    assert out[1].startswith(f"target: toy_tgt ({data}")
    assert out[2].startswith(f"workdir: {workdir} (checkpoints/, metrics.jsonl")
    [line] = [line for line in out if line.startswith("[train] step 8:")]
    assert [kv.split("=")[0] for kv in line.split(": ", 1)[1].split()] == [
        "loss", "loss_cls", "source_accuracy", "confident_fraction", "steps_per_second"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        [record] = [r for r in map(json.loads, f)
                    if r["step"] == 8 and r["split"] == "train"]
    assert len(record) > 15
    assert out[-1] == runs.LAST_STEP_NOTE.format(
        rule="source_val_uar", report=os.path.join(workdir, "eval", "report.md"))
    assert runs.run("evaluate", labelled_config(toy_data_dir, steps=8), workdir) == 0
    out = capsys.readouterr().out
    assert "selected step " in out and "last step 8 (what training printed): " in out
    with open(os.path.join(workdir, "eval", "report.md")) as f:
        assert ("embeddings.png: Includes 8 target utterances of sad, emotions the "
                "task excludes (its OOD set)") in f.read()
    assert metric_writer.echoed({"target_uar": 0.5, "source_val_uar": 0.25}) == (
        "source_val_uar=0.25  target_uar=0.5")


# --------------------------------------------------------------------------
# A user error never prints a traceback: each error path through the entry
# points, as a user meets it.

TOY_CONFIG = '''
from tests.conftest import toy_config

def get_config(data_dir):
    return toy_config(data_dir, **{"data.classes": ("neutral", "angry", "happy")})
'''


@contextlib.contextmanager
def _read_only(path):
    """``path`` and everything below it unwritable, also for root (which
    chmod does not stop): an immutable folder, as a read-only mount is."""
    subprocess.run(["chmod", "-R", "a-w", path], check=True)
    immutable = os.geteuid() == 0 and subprocess.run(
        ["chattr", "-R", "+i", path], capture_output=True).returncode == 0
    try:
        if os.access(path, os.W_OK) and not immutable:
            pytest.skip("cannot make a folder read-only here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", path], check=True)
        subprocess.run(["chmod", "-R", "u+w", path], check=True)


def _toy_main(case, *flags):
    return [sys.executable, "-m", "emodna_jax.main",
            f"--config={case['config']}:{case['data']}", f"--workdir={case['workdir']}",
            *flags]


def _data_prep(manifest, *flags):
    return [sys.executable, "-m", "data_prep", "--corpus=csv", f"--manifest={manifest}",
            f"--data_dir={os.path.dirname(manifest)}/data", "--workers=2", *flags]


def _stereo_corpus(case):
    from tests.conftest import make_corpus, tone
    import soundfile as sf
    manifest = make_corpus(case["tmp"] / "raw")
    sf.write(case["tmp"] / "raw" / "spk0_0.wav", tone(0.6, 16000, 0, channels=2), 16000)
    return _data_prep(manifest, "--strict")


def _bad_manifest(case):
    from tests.conftest import make_corpus
    manifest = make_corpus(case["tmp"] / "raw")
    with open(manifest, "a") as f:
        f.write("gone.wav,sad,spk9,male\nspk0_1.wav,grumpy,spk9,male\n")
    return _data_prep(manifest)


def _truncated(case, step):
    """The issue's damage: a checkpoint's array files halved.  Every one of
    them, because which files a restore reads depends on how orbax merged
    its writers' databases (halving the largest one alone was sometimes
    never read)."""
    state = os.path.join(case["workdir"], "checkpoints", str(step), "state")
    for root, _, names in os.walk(state):
        if os.path.basename(root) == "d":
            for name in names:
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(os.path.getsize(os.path.join(root, name)) // 2)


def _wav(case):
    return os.path.join(os.path.dirname(case["data"]), "raw", "toy_tgt", "spk0_0.wav")


# name: (what to do, the exit status, a line the output must have)
ERROR_PATHS = {
    "a config file name with a typo (6)": (
        lambda case: [sys.executable, "-m", "emodna_jax.main", "--config=configs/defualt.py",
                      f"--workdir={case['workdir']}"],
        1, "error: --config=configs/defualt.py: no such config file; did you mean "
           "configs/default.py?"),
    "a config without its argument (6)": (
        lambda case: [sys.executable, "-m", "emodna_jax.main",
                      "--config=configs/cross_corpus.py", f"--workdir={case['workdir']}"],
        1, "error: configs/cross_corpus.py needs SOURCE,TARGET[,method=emodna][,size=suite] "
           "after the colon, got ''"),
    "evaluating with another state shape (1)": (
        lambda case: _toy_main(case, "--mode=evaluate", "--force",
                               "--config.model.channels=16"),
        1, f"error: {{workdir}}: checkpoint 2 was trained with another state shape "
           "(model.channels 8 -> 16); evaluate it with the config it was trained with"),
    "resuming after a truncated checkpoint (2)": (
        lambda case: _truncated(case, 6) or _toy_main(case),
        0, "warning: checkpoint 6 is unreadable: {workdir}/checkpoints/6/state ("),
    "evaluating a truncated checkpoint (2)": (
        lambda case: _truncated(case, 4) or _toy_main(case, "--mode=evaluate", "--force"),
        0, "warning: checkpoint 4 is unreadable ("),
    "predicting with a truncated checkpoint (2)": (
        lambda case: _truncated(case, 6) or _toy_main(case, "--mode=predict",
                                                      f"--inputs={_wav(case)}"),
        0, "warning: checkpoint 6 is unreadable ("),
    "training in a read-only workdir (3)": (
        lambda case: _toy_main(case), 1,
        "error: {workdir}/.lock: Operation not permitted; give --workdir a folder"),
    "evaluating in a read-only workdir (3)": (
        lambda case: _toy_main(case, "--mode=evaluate", "--force"), 1,
        "error: {workdir}/eval/"),
    "a feature file of another shape, two workers (4)": (
        lambda case: _data_prep(_npy(case, odd_one=(100, 19)), "--feature=npy",
                                "--feature_dim=20"),
        1, "error: {tmp}/c/s0_0.npy: "),
    "--strict and a stereo file, two workers (4)": (_stereo_corpus, 1, "error: {tmp}/raw/"),
    "a clean build, two workers (4)": (
        lambda case: _data_prep(_npy(case), "--feature=npy", "--feature_dim=20"), 0,
        "c: "),
    "a manifest with three problems (5)": (
        _bad_manifest, 1, "error: {tmp}/raw/corpus.csv: 3 problems: row 22: file not found: "
                          "{tmp}/raw/gone.wav; row 23: unknown emotion label 'grumpy'; row 23: "
                          "{tmp}/raw/spk0_1.wav is already listed in row 3"),
}


def _npy(case, odd_one=None):
    from tests.conftest import make_npy_corpus
    return make_npy_corpus(str(case["tmp"] / "c"), 20, odd_one=odd_one)


@pytest.fixture(scope="module")
def toy_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "toy.py"
    path.write_text(TOY_CONFIG)
    return str(path)


@pytest.mark.parametrize("name", list(ERROR_PATHS))
def test_a_user_error_is_one_line_from_the_entry_points(
        name, evaluated, toy_data_dir, toy_config_file, tmp_path):
    """At most 3 lines on stderr and no traceback, the exit status a user
    can script on, and the line that says what is wrong (or, carrying on,
    the one warning, with the cause rather than orbax's wrapper)."""
    command, status, expected = ERROR_PATHS[name]
    case = {"workdir": _copy(evaluated, tmp_path), "data": toy_data_dir,
            "config": toy_config_file, "tmp": tmp_path}
    argv = command(case)
    guard = _read_only(case["workdir"]) if "read-only" in name else contextlib.nullcontext()
    with guard:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=600)
    stdout, stderr = _terminal_lines(done.stdout), _terminal_lines(done.stderr)
    assert done.returncode == status, stderr[-20:]
    assert len(stderr) <= 3 and not any("Traceback" in line for line in stderr), stderr[-20:]
    expected = expected.format(workdir=case["workdir"], tmp=tmp_path)
    assert any(line.startswith(expected) for line in stdout + stderr), (stdout, stderr)
    assert sum(line.startswith("warning:") for line in stdout + stderr) <= 1
    # orbax's wrapper message: a repr of the TensorStore spec, not a cause
    assert not any("TensorStore" in line for line in stdout + stderr)


def _terminal_lines(output: bytes) -> list[str]:
    """The lines a terminal shows: a progress bar redraws its line ('\\r')."""
    text = output.decode(errors="replace").strip()
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")] if text else []
