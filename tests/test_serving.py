"""The export folder and the Predictor: exported and ONNX models against the
in-process model, evaluation and prediction scoring alike, a fresh process
with no data (and, for ONNX, no JAX), and bad folders."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from emodna_jax import evaluate
from emodna_jax import experiment
from emodna_jax import scoring
from emodna_jax import export
from emodna_jax import serving
from emodna_jax import train
from benchmarks.speech_gate import non_speech_signals
from tests.test_cluster_labels import _config, pitch_pair  # noqa: F401  (fixture)

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(pitch_pair, tmp_path_factory):  # noqa: F811
    """The recipe trained for 6 steps on the pitch pair, evaluated, and its
    selected checkpoint exported."""
    root = tmp_path_factory.mktemp("serving")
    workdir, folder = str(root / "run"), str(root / "export")
    config = _config(pitch_pair, speech_gate=False)   # the corpora are tones
    train.train_and_evaluate(config, workdir)
    summary = evaluate.evaluate_checkpoints(config, workdir, progress=False)
    written = export.export(config, workdir, folder)
    return config, workdir, folder, summary, written


def _in_process(config, workdir, step):
    built, state, _ = experiment.restore(config, workdir, step)
    return built, export.inference_function(config, built, state)


def _random_frames(batch, frames, width, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, frames, width)).astype(np.float32)
    mask = np.arange(frames)[None, :] < rng.integers(1, frames + 1, size=(batch, 1))
    return x, mask


def test_export_takes_the_selected_checkpoint_and_names_what_it_holds(exported):
    config, _, folder, summary, written = exported
    assert written["step"] == summary["selected"]["step"]
    info = serving.read_preprocess(folder)
    assert info["source"]["checkpoint_step"] == written["step"]
    assert info["classes"] == list(config.data.classes)
    assert info["window"] == {"frames": config.data.eval_num_frames,
                              "hop_frames": config.data.eval_num_frames // 2}
    assert info["source"]["config_hash"] == export.config_hash(config)
    assert info["platforms"][0] == "cpu"
    assert info["utterance_stats"] is not None and info["normalization"]["kind"] == "speaker"


def test_the_jax_export_equals_the_model_for_three_shapes(exported):
    config, workdir, folder, _, written = exported
    built, infer = _in_process(config, workdir, written["step"])
    with open(os.path.join(folder, serving.MODEL_JAX), "rb") as f:
        model = jax.export.deserialize(bytearray(f.read()))
    for batch, frames in ((1, 7), (3, 56), (2, 131)):
        x, mask = _random_frames(batch, frames, built.target.num_values)
        for want, got in zip(infer(x, mask), model.call(x, mask)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_the_onnx_model_equals_the_model(exported):
    ort = pytest.importorskip("onnxruntime")
    config, workdir, folder, _, written = exported
    built, infer = _in_process(config, workdir, written["step"])
    session = ort.InferenceSession(os.path.join(folder, serving.MODEL_ONNX),
                                   providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x, mask = _random_frames(batch, config.data.eval_num_frames, built.target.num_values, 1)
        got = session.run(None, {"frames": x, "mask": mask.astype(np.float32)})
        for want, value in zip(infer(x, mask), got):
            np.testing.assert_allclose(value, np.asarray(want), atol=1e-4)


def _speaker_files(config):
    """(speaker name, its target utterances' wav paths, their indices)."""
    from emodna_jax import input_pipeline
    _, target = input_pipeline.open_task(config)
    corpus = target.corpus
    source = corpus.source(target.train_split)
    root = corpus.metadata["source"]
    rows = [(int(source[i]["speaker"]), i, source[i]["path"].decode())
            for i in range(len(source))]
    speaker = rows[0][0]
    mine = [(i, os.path.join(root, p)) for s, i, p in rows if s == speaker]
    return corpus.metadata["speakers"][speaker], [p for _, p in mine], [i for i, _ in mine]


def test_an_utterance_s_evaluation_posterior_is_its_prediction(exported):
    """One target speaker's recordings, predicted together as that speaker,
    get exactly the posteriors evaluation stored for them (per-speaker
    frames and statistics, windows, mean logits), from audio and the
    export alone."""
    config, workdir, folder, _, written = exported
    name, paths, indices = _speaker_files(config)
    with np.load(os.path.join(workdir, "eval", "predictions",
                              f"step_{written['step']}.npz")) as stored:
        logits, index = stored["target/logits"], stored["target/index"]
    want = np.asarray(jax.nn.softmax(logits[[list(index).index(i) for i in indices]], -1))
    for backend in ("jax", "onnx"):
        results = serving.Predictor.load(folder, backend).predict_batch(paths, speaker=name)
        got = np.array([list(r.probabilities.values()) for r in results])
        np.testing.assert_allclose(got, want, atol=1e-4)
    # Alone, each file is normalised with its own statistics: another input.
    alone = serving.Predictor.load(folder).predict_file(paths[0])
    assert not np.allclose(list(alone.probabilities.values()), want[0], atol=1e-4)


def test_an_exported_checkpoint_ensemble_predicts_evaluation_s_mean_posterior(exported,
                                                                             tmp_path):
    """``config.serve='checkpoint_ensemble'``: one folder holds every
    checkpoint evaluation scored, and one speaker's files get the mean over
    them of the posteriors evaluation stored for those files (numpy, from
    the stored predictions), on both backends and in process; the OOD
    score is the mean of the checkpoints' scores, and the threshold the one
    evaluation found for it."""
    config, workdir, _, summary, _ = exported
    config = config.copy_and_resolve_references()
    config.serve = "checkpoint_ensemble"
    steps = summary["checkpoint_ensemble"]["steps"]
    assert len(steps) > 1
    folder = str(tmp_path / "ensemble")
    written = export.export(config, workdir, folder)
    assert written["steps"] == steps
    info = serving.read_preprocess(folder)
    assert info["posterior"]["checkpoints"] == len(steps)
    assert info["source"]["checkpoint_steps"] == steps
    study = summary["checkpoint_ensemble"].get("ood", {}).get(config.ood_score)
    assert info["ood"]["threshold"] == (None if study is None
                                        else study["threshold_at_95_tpr"])
    name, paths, indices = _speaker_files(config)
    logits = []
    for step in steps:
        with np.load(os.path.join(workdir, "eval", "predictions", f"step_{step}.npz")) as stored:
            rows = [list(stored["target/index"]).index(i) for i in indices]
            logits.append(stored["target/logits"][rows].astype(np.float64))
    logits = np.stack(logits)                                        # [K, files, C]
    want = np.mean(np.asarray(jax.nn.softmax(logits, -1)), axis=0)
    want_score = np.mean(np.log(np.exp(logits).sum(-1)), axis=0)     # energy
    predictors = [serving.Predictor.load(folder, backend) for backend in ("jax", "onnx")]
    for predictor in predictors + [export.in_process(config, workdir)]:
        results = predictor.predict_batch(paths, speaker=name)
        got = np.array([list(r.probabilities.values()) for r in results])
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose([r.ood_score for r in results], want_score, atol=1e-4)
    # The ensemble is not the selected checkpoint.
    selected = serving.Predictor.load(exported[2]).predict_batch(paths, speaker=name)
    assert not np.allclose([list(r.probabilities.values()) for r in selected], want,
                           atol=1e-4)
    elsewhere = str(tmp_path / "one")
    with pytest.raises(ValueError, match=f"--checkpoint={steps[0]}: config.serve="
                                         "'checkpoint_ensemble' serves every evaluated"):
        export.export(config, workdir, elsewhere, checkpoint=steps[0])
    assert not os.path.exists(elsewhere)
    with pytest.raises(FileNotFoundError, match="summary.json: no checkpoint ensemble "
                                                "evaluated"):
        export.ensemble_steps(str(tmp_path))


def test_a_prediction_averages_each_checkpoint_s_posterior_and_score(exported):
    """The Predictor on a model that returns two checkpoints' logits, the
    same for every window: the posterior is the mean of the two softmaxes
    (not the softmax of the mean logits), the OOD score the mean of the
    two energies, hand-worked."""
    _, _, folder, _, _ = exported
    info = serving.read_preprocess(folder)
    classes = len(info["classes"])
    each = np.zeros((2, classes))
    each[0, 0], each[1, 1] = 2.0, 3.0          # checkpoint 1: class 0; 2: class 1

    def model(frames, mask):
        return (np.broadcast_to(each, (len(frames),) + each.shape).astype(np.float32),
                np.zeros((len(frames), 2, 4), np.float32))
    predictor = serving.Predictor(dict(info, ood={"score": "energy", "threshold": 2.5}),
                                  model)
    frames = np.zeros((3 * predictor.window, 1), np.float32)   # the model ignores them
    result = predictor._score("two checkpoints", frames)
    softmaxes = np.exp(each) / np.exp(each).sum(1, keepdims=True)
    # With 4 classes: (0.711 + 0.043) / 2 = 0.377 for class 0, (0.096 +
    # 0.870) / 2 = 0.483 for class 1; the softmax of the mean logits would
    # give 0.487 to class 1.
    want = softmaxes.mean(0)
    np.testing.assert_allclose(list(result.probabilities.values()), want, rtol=1e-6)
    assert result.emotion == info["classes"][1]
    energies = np.log(np.exp(each).sum(1))
    assert result.ood_score == pytest.approx(energies.mean())
    assert result.out_of_distribution is bool(energies.mean() < 2.5)
    assert len(result.windows) > 1
    for window in result.windows:
        np.testing.assert_allclose(list(window["probabilities"].values()), want, rtol=1e-6)


def test_the_export_says_what_it_adapted_and_each_prediction_carries_it(exported):
    config, workdir, folder, _, written = exported
    info = serving.read_preprocess(folder)
    _, state, _ = experiment.restore(config, workdir, written["step"])
    agrees = np.asarray(state.adapt.cluster_agrees)
    # 6 steps, a warm-up of 30%: checkpoints from step 2 on are adapted.
    assert info["adaptation"]["adapted"] is (written["step"] >= 2)
    assert info["adaptation"]["unadapted"] == [
        c for c, a in zip(config.data.classes, agrees) if not a]
    assert written["adaptation"] == info["adaptation"]

    classes = info["classes"]

    def predicting(k):
        def model(frames, mask):
            logits = np.zeros((len(frames), len(classes)), np.float32)
            logits[:, k] = 5.0
            return logits, np.zeros((len(frames), 4), np.float32)
        return model
    angry_as_happy = {"adapted": True, "why": "clusters contradicted",
                      "unadapted": ["angry"], "not_told_apart": [["angry", "happy"]]}
    frames = np.zeros((10, 1), np.float32)       # the stub models ignore them
    for adaptation, emotion, want in ((angry_as_happy, "happy", False),
                                      (angry_as_happy, "angry", False),
                                      (angry_as_happy, "sad", True),
                                      (dict(angry_as_happy, adapted=False), "sad", False),
                                      (None, "sad", None)):
        predictor = serving.Predictor(dict(info, adaptation=adaptation),
                                      predicting(classes.index(emotion)))
        result = predictor._score("clip", frames)
        assert (result.emotion, result.adapted) == (emotion, want)
        line = serving.format_predictions([result], as_json=False)
        assert line.endswith("not adapted to the target") is (want is False)


FRESH = """
import json, sys
if sys.argv[3] == "onnx":      # the ONNX backend must not need JAX or flax
    for name in ("jax", "jaxlib", "flax", "optax", "orbax"):
        sys.modules[name] = None
from emodna_jax import serving
prediction = serving.Predictor.load(sys.argv[1], backend=sys.argv[3]).predict_file(sys.argv[2])
print(json.dumps(prediction.probabilities))
"""


def test_an_export_predicts_in_a_fresh_process_without_the_data(exported, tmp_path):
    config, workdir, folder, _, written = exported
    moved = str(tmp_path / "moved_export")
    shutil.copytree(folder, moved)
    _, paths, _ = _speaker_files(config)
    want = serving.Predictor.load(folder).predict_file(paths[0]).probabilities
    empty = tmp_path / "no_data"
    empty.mkdir()
    env = dict(os.environ, EMODNA_DATA_DIR=str(empty), PYTHONPATH=REPO)
    for backend in ("jax", "onnx"):
        done = subprocess.run([sys.executable, "-c", FRESH, moved, paths[0], backend],
                              capture_output=True, text=True, env=env, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr[-2000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got.keys() == want.keys()
        np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-4)


def test_bad_export_folders_are_one_line_errors(exported, tmp_path):
    _, _, folder, _, _ = exported
    with pytest.raises(serving.ExportError, match="not an export folder"):
        serving.Predictor.load(str(tmp_path))
    broken = tmp_path / "old"
    shutil.copytree(folder, broken)
    info = json.loads((broken / serving.PREPROCESS).read_text())
    old = serving.FORMAT_VERSION - 1
    (broken / serving.PREPROCESS).write_text(json.dumps(dict(info, format_version=old)))
    with pytest.raises(serving.ExportError, match=f"version {old}; this version of emodna_jax "
                       f"reads 'emodna_jax export' version {old + 1}: export it again"):
        serving.Predictor.load(str(broken))
    (broken / serving.PREPROCESS).write_text(json.dumps(info))
    os.remove(broken / serving.MODEL_ONNX)
    serving.Predictor.load(str(broken))          # the jax backend has its file
    with pytest.raises(serving.ExportError, match=r"model.onnx: missing \(the onnx backend"):
        serving.Predictor.load(str(broken), backend="onnx")
    (broken / serving.PREPROCESS).write_text("{not json")
    with pytest.raises(serving.ExportError, match="preprocess.json: unreadable"):
        serving.Predictor.load(str(broken))
    for error in ("not an export folder", "unreadable"):
        assert "\n" not in error


def test_a_missing_or_unreadable_file_is_reported_and_the_rest_predicted(exported, tmp_path):
    config, _, folder, _, _ = exported
    _, paths, _ = _speaker_files(config)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEnot audio")
    results = serving.Predictor.load(folder).predict_batch(
        [paths[0], str(tmp_path / "nope.wav"), str(bad)])
    assert results[0].error is None and results[0].emotion in config.data.classes
    assert results[1].error == "file not found"
    assert "unreadable" in results[2].error


def test_the_speech_gate_rejects_noise_tones_music_and_silence_and_passes_speech(tmp_path):
    from data_prep import audio, synthetic
    from data_prep.features import FeatureConfig, pitch_features
    from emodna_jax import speech_gate
    config = FeatureConfig(kind="logmel_pitch")

    def reason(waveform):
        tracks = pitch_features(np.asarray(waveform, np.float32), config)
        return speech_gate.verdict(speech_gate.descriptors(tracks, config.hop_ms / 1000))

    reasons = {name: reason(x) for name, x in non_speech_signals().items()}
    assert all(r and r.startswith("not speech") for r in reasons.values()), reasons
    assert "hardly varies" in reasons["near-silence"] and "tone" in reasons["tone"]
    assert "notes" in reasons["notes with pauses"]   # fading notes with pauses between
    # Digital silence never reaches the gate: loading refuses it.
    silent = tmp_path / "silent.wav"
    import soundfile as sf
    sf.write(silent, np.zeros(16000), 16000)
    with pytest.raises(audio.AudioProblem, match="silent"):
        audio.load_audio(str(silent), 16000)
    # The synthetic corpora's speech-like utterances pass, every one.
    import dataclasses
    spec = dataclasses.replace(synthetic.default_pair()[0], utterances_per_speaker=2,
                               n_speakers=2)
    manifest = synthetic.generate_corpus(spec, tmp_path / "synthetic")
    wavs = sorted(manifest.parent.rglob("*.wav"))
    assert wavs and all(reason(audio.load_audio(str(w), 16000).waveform) is None
                        for w in wavs)


def test_prediction_gives_no_emotion_for_what_is_not_speech(exported):
    _, _, folder, _, _ = exported
    predictor = serving.Predictor.load(folder)
    predictor.speech_gate = True          # as an export of real speech has it
    for name, waveform in non_speech_signals(seconds=3.0).items():
        result = predictor.predict_waveform(waveform, 16000)
        assert result.emotion is None and result.probabilities is None, name
        assert result.out_of_distribution is True and result.not_speech.startswith(
            "not speech"), name
    text = serving.format_predictions([result], as_json=False)
    assert text == f"<waveform 0>: {result.not_speech}"


def test_windows_of_blocks_are_the_windows_of_the_whole():
    rng = np.random.default_rng(3)
    for length, window in ((5, 8), (100, 8), (101, 10), (37, 4)):
        frames = rng.normal(size=(length, 3)).astype(np.float32)
        starts = scoring.window_starts(length, window)
        cuts = np.sort(rng.choice(np.arange(1, length), size=min(4, length - 1),
                                  replace=False))
        blocks = np.split(frames, cuts)
        got = list(serving._windows_of_blocks(iter(blocks), starts, window))
        assert [g[0] for g in got] == starts
        for (start, values, mask) in got:
            want_values, want_mask = scoring.window(frames, start, window)
            np.testing.assert_array_equal(values, want_values)
            np.testing.assert_array_equal(mask, want_mask)


def test_a_long_file_read_in_blocks_has_the_whole_file_s_frames(exported, tmp_path,
                                                                 monkeypatch):
    """Blocks of 1.5 s with their context give the whole file's frames (the
    pitch of unvoiced frames, interpolated within a block, aside), and the
    file's verdict is the whole-file path's."""
    import soundfile as sf
    from data_prep import audio
    config, _, folder, _, _ = exported
    _, paths, _ = _speaker_files(config)
    waveform = np.concatenate([audio.load_audio(p, 16000).waveform for p in paths] * 3)
    path = str(tmp_path / "long.wav")
    sf.write(path, waveform, 16000)
    predictor = serving.Predictor.load(folder)
    whole = predictor.predict_file(path)
    features, tracks = predictor.preprocessor.features(path)
    monkeypatch.setattr(serving, "LONG_FILE_S", 1.0)
    monkeypatch.setattr(serving, "BLOCK_S", 1.5)
    assert predictor.preprocessor.is_long(path)
    blocks = list(predictor.preprocessor._blocks(path))
    assert len(blocks) > 3
    streamed = np.concatenate([b for b, _ in blocks])
    assert streamed.shape == features.shape
    np.testing.assert_allclose(streamed[:, :-3], features[:, :-3], atol=1e-3)
    np.testing.assert_allclose(streamed[:, -2:], features[:, -2:], atol=1e-4)
    voiced = features[:, -2] >= 0.5
    np.testing.assert_allclose(streamed[voiced, -3], features[voiced, -3], atol=1e-4)
    long = predictor.predict_file(path)
    assert long.emotion == whole.emotion and len(long.windows) == len(whole.windows)
    np.testing.assert_allclose(list(long.probabilities.values()),
                               list(whole.probabilities.values()), atol=2e-3)


def test_an_export_without_jax2onnx_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)      # not installed
    with pytest.raises(ValueError, match=r"jax2onnx, which is not installed: "
                                         r"pip install -e '\.\[onnx\]'"):
        export._to_onnx(lambda frames, mask: (frames, mask), 4, 3)
