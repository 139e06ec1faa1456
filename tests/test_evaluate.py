"""Batch evaluation of a real (short) training run, the report, and predict."""

import csv
import json
import os
import re

import jax
import numpy as np
import pytest
import soundfile as sf

from data_prep.features import FeatureExtractor
from emodna_jax import config_validation
from emodna_jax import evaluate
from emodna_jax.evaluators import ood as ood_evaluator
from emodna_jax import experiment
from emodna_jax import input_pipeline
from emodna_jax import ood as ood_lib
from emodna_jax import predict
from emodna_jax import train
from tests.conftest import toy_config

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow

CLASSES = ("neutral", "angry", "happy")  # 'sad' utterances become the OOD set


def eval_config(data_dir, **overrides):
    return toy_config(data_dir, **{"data.classes": CLASSES, **overrides})


@pytest.fixture(scope="module")
def trained(toy_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("eval_run"))
    train.train_and_evaluate(eval_config(toy_data_dir), workdir)
    summary = evaluate.evaluate_checkpoints(eval_config(toy_data_dir), workdir,
                                            progress=False)
    return workdir, summary


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_checkpoint_and_split(trained):
    workdir, summary = trained
    rows = read_csv(os.path.join(workdir, "eval", "metrics.csv"))
    assert sorted((int(r["step"]), r["split"]) for r in rows) == [
        (s, split) for s in (2, 4, 6) for split in ("source_val", "target")]
    ood_rows = read_csv(os.path.join(workdir, "eval", "ood.csv"))
    assert sorted({r["score"] for r in ood_rows}) == sorted(ood_evaluator.SCORES)
    assert all(int(r["n_ood"]) == 8 and int(r["n_id"]) == 24 for r in ood_rows)
    assert summary["selection_rule"] == "source_val_uar"
    assert summary["last"]["step"] == 6
    by_step = {int(r["step"]): float(r["uar"]) for r in rows if r["split"] == "source_val"}
    best = max(by_step.values())
    tied = [s for s, u in by_step.items() if u == best]
    # Ties go to the lower source-validation NLL, computed here from the
    # stored logits (linear classifier: the logits are the posterior's).
    nll = {s: _numpy_nll(workdir, s, "source_val") for s in tied}
    assert summary["selected"]["step"] == min(tied, key=lambda s: (nll[s], -s))


def _numpy_nll(workdir, step, split):
    with np.load(os.path.join(workdir, "eval", "predictions", f"step_{step}.npz")) as data:
        labels, logits = data[f"{split}/label"], data[f"{split}/logits"].astype(np.float64)
    keep = labels >= 0
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.mean(log_p[keep][np.arange(keep.sum()), labels[keep]])


def test_nll_column_and_rescoring_from_predictions_alone(trained, toy_data_dir, tmp_path):
    workdir, summary = trained
    rows = read_csv(os.path.join(workdir, "eval", "metrics.csv"))
    for row in rows:
        assert float(row["nll"]) == pytest.approx(
            _numpy_nll(workdir, int(row["step"]), row["split"]), rel=1e-5)
    # An evaluated workdir without checkpoints and without the nll column
    # (an older version's) is rescored to the same metrics and summary.
    copy = str(tmp_path / "old")
    os.makedirs(os.path.join(copy, "eval"))
    import shutil
    shutil.copytree(os.path.join(workdir, "eval", "predictions"),
                    os.path.join(copy, "eval", "predictions"))
    for name in ("ood.csv", "pseudo_labels.csv"):
        shutil.copy(os.path.join(workdir, "eval", name), os.path.join(copy, "eval"))
    with open(os.path.join(copy, "eval", "metrics.csv"), "w", newline="") as f:
        columns = [c for c in rows[0] if c != "nll"]
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    rescored = evaluate.rescore(eval_config(toy_data_dir), copy)
    assert rescored["selected"]["step"] == summary["selected"]["step"]
    for split in ("target", "source_val"):
        assert rescored["selected"][split] == pytest.approx(summary["selected"][split])
    ensemble = dict(summary["checkpoint_ensemble"])
    assert rescored["checkpoint_ensemble"].pop("steps") == ensemble.pop("steps")
    rescored_ood, ood = rescored["checkpoint_ensemble"].pop("ood"), ensemble.pop("ood")
    assert rescored["checkpoint_ensemble"] == pytest.approx(ensemble)
    assert rescored_ood.keys() == ood.keys() == {"energy"}
    assert rescored_ood["energy"] == pytest.approx(ood["energy"])
    os.remove(os.path.join(copy, "eval", "predictions", "step_4.npz"))
    with pytest.raises(FileNotFoundError, match="step_4.npz: missing"):
        evaluate.rescore(eval_config(toy_data_dir), copy)


def test_the_checkpoint_ensemble_is_the_mean_posterior_of_the_stored_predictions(trained):
    workdir, summary = trained
    probabilities = []
    for step in (2, 4, 6):
        with np.load(os.path.join(workdir, "eval", "predictions",
                                  f"step_{step}.npz")) as data:
            labels, logits = data["target/label"], data["target/logits"].astype(np.float64)
        # Linear classifier: the logits are the posterior's.
        probabilities.append(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    keep = labels >= 0
    predicted = np.mean(probabilities, axis=0)[keep].argmax(-1)
    recalls = [np.mean(predicted[labels[keep] == c] == c) for c in range(len(CLASSES))]
    ensemble = summary["checkpoint_ensemble"]
    assert ensemble["steps"] == [2, 4, 6]
    assert ensemble["uar"] == pytest.approx(np.mean(recalls))
    assert ensemble["war"] == pytest.approx(np.mean(predicted == labels[keep]))
    report = open(os.path.join(workdir, "eval", "report.md")).read()
    assert "| mean posterior of all 3 | 2-6 |" in report


def test_metrics_match_the_saved_predictions(trained):
    workdir, summary = trained
    step = summary["selected"]["step"]
    with np.load(os.path.join(workdir, "eval", "predictions", f"step_{step}.npz")) as data:
        labels, logits = data["target/label"], data["target/logits"]
    keep = labels >= 0
    predicted = logits[keep].argmax(-1)
    recalls = [np.mean(predicted[labels[keep] == c] == c) for c in range(3)]
    assert summary["selected"]["target"]["uar"] == pytest.approx(np.mean(recalls))
    assert summary["selected"]["target"]["war"] == pytest.approx(
        np.mean(predicted == labels[keep]))


def test_report_files_exist_and_agree_with_the_csv(trained):
    workdir, _ = trained
    out = os.path.join(workdir, "eval")
    for name in ("report.md", "summary.json", "uar_vs_step.png", "confusion.png",
                 "embeddings.png", "ood_histograms.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    report = open(os.path.join(out, "report.md")).read()
    rows = {(int(r["step"]), r["split"]): r for r in read_csv(os.path.join(out, "metrics.csv"))}
    for step in (2, 4, 6):
        t, s = rows[(step, "target")], rows[(step, "source_val")]
        line = (f"| {step} | {float(t['uar']):.4f} | {float(t['war']):.4f} | "
                f"{float(t['macro_f1']):.4f} | {float(s['uar']):.4f} | {float(s['war']):.4f} |")
        assert line in report
    ood = {r["score"]: r for r in read_csv(os.path.join(out, "ood.csv"))
           if int(r["step"]) == json.load(open(os.path.join(out, "summary.json")))["selected"]["step"]}
    assert f"| energy | {float(ood['energy']['auroc']):.4f} |" in report


def test_evaluated_steps_are_skipped_unless_forced(trained, toy_data_dir, monkeypatch):
    workdir, _ = trained
    path = os.path.join(workdir, "eval", "predictions", "step_2.npz")
    stamp = os.stat(path).st_mtime_ns
    evaluate.evaluate_checkpoints(eval_config(toy_data_dir), workdir, progress=False)
    assert os.stat(path).st_mtime_ns == stamp
    validations = []
    real = config_validation.validate_config
    monkeypatch.setattr(config_validation, "validate_config",
                        lambda config: validations.append(1) or real(config))
    evaluate.evaluate_checkpoints(eval_config(toy_data_dir), workdir, force=True,
                                  progress=False)
    assert os.stat(path).st_mtime_ns != stamp
    assert len(validations) == 1     # once per evaluation, not per layer


def test_checkpoints_from_8_devices_evaluate_on_1(trained, toy_data_dir, tmp_path):
    workdir, _ = trained
    single = tmp_path / "single"  # the same checkpoints, evaluated on one device
    single.mkdir()
    os.symlink(os.path.join(workdir, "checkpoints"), single / "checkpoints")
    single = str(single)
    summary = evaluate.evaluate_checkpoints(
        eval_config(toy_data_dir, num_devices=1), single, progress=False)
    assert jax.device_count() == 8 and eval_config(toy_data_dir).num_devices in (0, 8)
    want = read_csv(os.path.join(workdir, "eval", "metrics.csv"))
    got = read_csv(os.path.join(single, "eval", "metrics.csv"))
    assert len(want) == len(got) == 6  # 3 checkpoints x (target, source_val)
    for a, b in zip(sorted(want, key=lambda r: (r["step"], r["split"])),
                    sorted(got, key=lambda r: (r["step"], r["split"]))):
        assert (a["step"], a["split"]) == (b["step"], b["split"])
        assert float(a["uar"]) == pytest.approx(float(b["uar"]))
    assert summary["selected"]["step"] in (2, 4, 6)


def test_selecting_by_a_target_metric_is_refused(trained, toy_data_dir):
    workdir, _ = trained
    with pytest.raises(ValueError, match="select_by"):
        evaluate.evaluate_checkpoints(eval_config(toy_data_dir, select_by="target_uar"),
                                      workdir, progress=False)


TRAIN_IN_BACKGROUND = """
import sys
from emodna_jax import train
from tests.test_evaluate import eval_config
train.train_and_evaluate(eval_config(sys.argv[1], steps=12, checkpoint_every=3,
                                     keep_checkpoints=100),
                         sys.argv[2])
"""


def test_watch_evaluates_while_training_and_builds_once(toy_data_dir, tmp_path,
                                                        monkeypatch, capsys):
    import subprocess
    import sys
    workdir = str(tmp_path / "watched")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    training = subprocess.Popen([sys.executable, "-c", TRAIN_IN_BACKGROUND,
                                 toy_data_dir, workdir], cwd=repo)
    builds = []
    build = experiment.build
    monkeypatch.setattr(evaluate.experiment, "build",
                        lambda *a, **k: builds.append(1) or build(*a, **k))
    config = eval_config(toy_data_dir, steps=12, checkpoint_every=3,
                         keep_checkpoints=100)
    try:
        summary = evaluate.watch(config, workdir, poll_seconds=0.2,
                                 timeout_seconds=300)
    finally:
        assert training.wait(timeout=300) == 0
    polled = [int(m) for m in re.findall(r"evaluated up to step (\d+)",
                                         capsys.readouterr().out)]
    # It returned at the last step, had evaluated earlier ones while training
    # ran, and built the experiment (and compiled its step) once.
    assert summary["last"]["step"] == 12 and polled[-1] == 12
    assert len(set(polled)) >= 2 and polled == sorted(polled)
    assert len(builds) == 1
    rows = read_csv(os.path.join(workdir, "eval", "metrics.csv"))
    assert sorted({r["step"] for r in rows}, key=int) == [
        str(s) for s in range(3, 13, 3)]  # integers, also after a rewrite


def test_predict_matches_evaluation_and_reports_bad_files(trained, toy_data_dir, tmp_path):
    workdir, summary = trained
    config = eval_config(toy_data_dir)
    _, target = input_pipeline.open_task(config)
    raw_root = os.path.join(os.path.dirname(toy_data_dir), "raw", "toy_tgt")
    wavs = sorted(f for f in os.listdir(raw_root) if f.endswith(".wav"))[:3]
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in wavs:
        data, rate = sf.read(os.path.join(raw_root, name))
        sf.write(clips / name, data, rate)
    (clips / "broken.wav").write_bytes(b"RIFF....WAVEnot audio")

    results = predict.predict_files(config, workdir, [str(clips)], checkpoint=6)
    by_name = {os.path.basename(r.path): r for r in results}
    assert "unreadable" in by_name["broken.wav"].error
    with np.load(os.path.join(workdir, "eval", "predictions", "step_6.npz")) as data:
        logits, index = data["target/logits"], data["target/index"]
        ood_scores = data[f"target/score_{config.ood_score}"]
    source = target.corpus.source("all")
    paths = [source[int(i)]["path"].decode() for i in index]
    for name in wavs:
        result = by_name[name]
        assert result.error is None
        assert sum(result.probabilities.values()) == pytest.approx(1.0)
        row = logits[paths.index(name)]
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose(list(result.probabilities.values()), probs, atol=1e-4)
        # The OOD score is evaluation's, so evaluation's threshold applies.
        assert result.ood_score == pytest.approx(ood_scores[paths.index(name)], abs=1e-4)
        # The flag is evaluation's 95%-TPR threshold from summary.json applied.
        threshold = summary["selected"]["ood"][config.ood_score]["threshold_at_95_tpr"]
        assert result.out_of_distribution == bool(result.ood_score < threshold)
    text = predict.format_predictions(results, as_json=False)
    assert re.search(r"broken\.wav: ERROR unreadable", text)
    assert json.loads(predict.format_predictions(results, as_json=True))[0]["path"]


def test_speaker_probe_of_a_checkpoint(trained, toy_data_dir):
    """The probe restores a checkpoint and reads h of the source training
    split; its figure equals a probe on the features the evaluator returns."""
    from emodna_jax import probe
    workdir, _ = trained
    config = eval_config(toy_data_dir)
    accuracy = probe.attribute_probe(config, workdir, "speaker", folds=4)
    built, state, step = experiment.restore(config, workdir)
    assert step == config.steps and built.parallel.num_devices == 1
    source = built.source
    outputs = evaluate.Evaluator(built.model, built.parallel,
                                 config).predict(state, source, source.train_split)
    split = source.corpus.source(source.train_split)
    speakers = [split[int(i)]["speaker"] for i in outputs["index"]]
    assert accuracy == probe.probe_accuracy(outputs["h"], np.array(speakers), folds=4)
    with pytest.raises(FileNotFoundError, match="no checkpoint 999"):
        experiment.restore(config, workdir, 999)


def test_predict_covers_a_long_file_with_windows(trained, toy_data_dir, tmp_path):
    """A file whose halves differ: every part is judged, the verdict is the
    softmax of the mean of the windows' logits (as evaluation scores a long
    utterance, emodna_jax/scoring.py), and each window's posterior is the
    model's on exactly that stretch of frames."""
    workdir, _ = trained
    config = eval_config(toy_data_dir)
    raw_root = os.path.join(os.path.dirname(toy_data_dir), "raw", "toy_tgt")
    first, second = (sf.read(os.path.join(raw_root, name))[0] for name in
                     sorted(f for f in os.listdir(raw_root) if f.endswith(".wav"))[:2])
    path = str(tmp_path / "long.wav")
    sf.write(path, np.concatenate([np.tile(first, 3), np.tile(second, 3)]), 16000)
    [result] = predict.predict_files(config, workdir, [path], checkpoint=6)

    window = config.data.eval_num_frames
    source, target = input_pipeline.open_task(config)
    frames = target.normalize({"features": FeatureExtractor(
        source.corpus.feature_config)(sf.read(path, dtype="float32")[0])})
    starts = list(range(0, frames.shape[0] - window + 1, window // 2))
    starts += [frames.shape[0] - window] if starts[-1] != frames.shape[0] - window else []
    assert [w["start_s"] for w in result.windows] == [s / 100 for s in starts]
    assert result.windows[-1]["end_s"] == frames.shape[0] / 100
    built, state, _ = experiment.restore(config, workdir, 6)
    model = built.model
    windows = np.stack([frames[s:s + window] for s in starts])
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         windows, np.ones(windows.shape[:2], bool), train=False)["logits"]
    probs = np.asarray(jax.nn.softmax(logits, -1))
    got = np.array([list(w["probabilities"].values()) for w in result.windows])
    np.testing.assert_allclose(got, probs, atol=1e-5)
    mean_logits = np.asarray(logits).mean(0, keepdims=True)
    verdict = np.asarray(jax.nn.softmax(mean_logits, -1))[0]
    np.testing.assert_allclose(list(result.probabilities.values()), verdict, atol=1e-5)
    assert result.emotion == CLASSES[int(verdict.argmax())]
    assert not np.allclose(probs[0], probs[-1], atol=1e-6)  # the halves differ
    score = ood_lib.SCORES[config.ood_score](mean_logits)[0]
    assert result.ood_score == pytest.approx(float(score), abs=1e-5)
    listed = json.loads(predict.format_predictions([result], as_json=True))[0]
    assert len(listed["windows"]) == len(starts)


def test_predict_names_a_missing_file_and_an_empty_workdir(trained, toy_data_dir, tmp_path):
    workdir, _ = trained
    config = eval_config(toy_data_dir)
    [missing] = predict.predict_files(config, workdir, [str(tmp_path / "nope.wav")],
                                      checkpoint=6)
    assert missing.error == "file not found"
    with pytest.raises(FileNotFoundError, match="no checkpoints in .*: train first"):
        experiment.restore(config, str(tmp_path / "empty"))


def test_selection_breaks_ties_by_nll_and_reads_older_tables(tmp_path):
    path = str(tmp_path / "metrics.csv")
    table = evaluate.ResultTable(path, "split")
    for step, uar, nll in ((1, 0.5, 0.9), (2, 0.8, 0.7), (3, 0.8, 0.6), (4, 0.8, 0.65)):
        table.put(step, "source_val", {"uar": uar, "nll": nll})
        table.put(step, "target", {"uar": 0.1 * step})
    assert evaluate.select_step(table, "source_val_uar")["selected_step"] == 3
    # The same UAR summed in another order is a tie, not a win by the last bit.
    earlier = np.mean([1.0, 0.8, 0.9, 1.0])
    later = np.mean([1.0, 0.9, 0.9, 0.9])
    assert earlier > later   # as floats
    tied = evaluate.ResultTable(str(tmp_path / "tied.csv"), "split")
    for step, uar, nll in ((50, earlier, 0.33), (300, later, 0.31)):
        tied.put(step, "source_val", {"uar": float(uar), "nll": nll})
        tied.put(step, "target", {"uar": 0.5})
    assert evaluate.select_step(tied, "source_val_uar")["selected_step"] == 300
    # Without nll on every row (an older version's rows): the later step.
    table.put(5, "source_val", {"uar": 0.8})
    table.put(5, "target", {"uar": 0.0})
    table.save()
    reread = evaluate.ResultTable(path, "split")
    assert reread.steps() == [1, 2, 3, 4, 5]
    assert evaluate.select_step(reread, "source_val_uar")["selected_step"] == 5


def test_a_single_corpus_report_names_the_held_out_fold_not_a_target():
    from configs import default
    config = default.get_config()
    assert evaluate.evaluated_corpus(config) == "synth_field"
    config.data.protocol, config.data.source, config.data.fold = "single_corpus", "emodb", 2
    assert evaluate.evaluated_corpus(config) == "emodb fold 2 (held-out speakers)"


def _symlinked(workdir, tmp_path, name):
    """A fresh workdir holding ``workdir``'s checkpoints and no evaluation."""
    other = tmp_path / name
    other.mkdir()
    os.symlink(os.path.join(workdir, "checkpoints"), other / "checkpoints")
    return str(other)


def test_evals_choose_the_files_and_the_passes(trained, toy_data_dir, tmp_path,
                                               monkeypatch):
    workdir, _ = trained
    only = _symlinked(workdir, tmp_path, "only_classification")
    predicted = []
    real = evaluate.Evaluator.predict
    monkeypatch.setattr(evaluate.Evaluator, "predict", lambda self, state, task, split,
                        **kw: predicted.append(split) or real(self, state, task, split, **kw))
    summary = evaluate.evaluate_checkpoints(
        eval_config(toy_data_dir, evals=("classification",)), only, progress=False)
    out = os.path.join(only, "eval")
    assert sorted(os.listdir(out)) == ["metrics.csv", "report.md", "summary.json",
                                       "uar_vs_step.png"]
    # No OOD study, so no pass over the source's training split: the target's
    # and the source validation's split once per checkpoint.
    assert len(predicted) == 3 * 2
    assert "No per-utterance figures" in open(os.path.join(out, "report.md")).read()
    # The same figures as the full evaluation's.
    assert read_csv(os.path.join(out, "metrics.csv")) == read_csv(
        os.path.join(workdir, "eval", "metrics.csv"))
    assert summary["selected"]["step"] == trained[1]["selected"]["step"]
    assert summary["selected"]["ood"] == {}


NEW_EVALUATOR = '''
class Evaluator:
    splits = ("target",)

    def __init__(self, context):
        self.table = context.table("counts.csv", "split")

    def run(self, step, predictions, state):
        self.table.put(step, "target", {"utterances": len(predictions["target"]["label"])})
'''


def test_a_new_evaluator_is_a_new_module(trained, toy_data_dir, tmp_path, monkeypatch):
    from emodna_jax import evaluators
    extra = tmp_path / "more_evaluators"
    extra.mkdir()
    (extra / "utterance_count.py").write_text(NEW_EVALUATOR)
    monkeypatch.setattr(evaluators, "__path__", [*evaluators.__path__, str(extra)])
    assert "utterance_count" in evaluators.available()
    counted = _symlinked(trained[0], tmp_path, "counted")
    evaluate.evaluate_checkpoints(
        eval_config(toy_data_dir, evals=("classification", "utterance_count")),
        counted, progress=False)
    rows = read_csv(os.path.join(counted, "eval", "counts.csv"))
    assert [(r["step"], r["utterances"]) for r in rows] == [("2", "32"), ("4", "32"),
                                                            ("6", "32")]
