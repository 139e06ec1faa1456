"""Tests for the synthetic corpus pair behind the quickstart and the tests.

The pair is only useful if (a) it is reproducible, (b) it looks like a real
corpus on disk, and (c) it poses the intended problem: emotions learnable within
each corpus from speakers never seen, and a genuine but partly recoverable drop
across corpora.  (c) is checked with the simplest honest pipeline: log-mel
statistics and a numpy logistic regression.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np
import pytest
import soundfile as sf

from data_prep import synthetic
from data_prep.labels import EMOTIONS

librosa = pytest.importorskip("librosa")

SEED = 0
# The default task: four classes shared by both corpora; fear is held out as
# the out-of-distribution class.
TASK_CLASSES = ("neutral", "angry", "happy", "sad")
FEATURE_SR = 16000


def _read_manifest(manifest: pathlib.Path):
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def _specs():
    return {spec.name: spec for spec in synthetic.default_pair()}


def _small(spec: synthetic.CorpusSpec, **changes) -> synthetic.CorpusSpec:
    """The same corpus, cut down so that a generation takes a fraction of a second."""
    changes.setdefault("n_speakers", 2)
    changes.setdefault("utterances_per_speaker", 5)
    return dataclasses.replace(spec, **changes)


def _tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return synthetic.generate_default_pair(out, seed=SEED)


# ---------------------------------------------------------------------------
# On disk.

def test_default_pair_shape():
    studio, field = synthetic.default_pair()
    assert (studio.name, field.name) == ("synth_studio", "synth_field")
    assert studio.sample_rate == 16000 and field.sample_rate == 22050
    for spec in (studio, field):
        assert set(TASK_CLASSES) <= set(spec.emotions)
        assert all(e in EMOTIONS for e in spec.emotions)
        total = spec.n_speakers * spec.utterances_per_speaker
        assert 300 <= total <= 450
        assert spec.duration_s == (1.0, 2.5)


def test_manifest_matches_files(pair):
    specs = _specs()
    assert set(pair) == set(specs)
    for name, manifest in pair.items():
        spec = specs[name]
        assert manifest == manifest.parent / "manifest.csv"
        assert manifest.parent.name == name
        header, rows = _read_manifest(manifest)
        assert header == ["path", "emotion", "speaker", "gender"]
        paths = [r["path"] for r in rows]
        assert paths == sorted(paths)
        on_disk = sorted(str(p.relative_to(manifest.parent))
                         for p in (manifest.parent / "wav").rglob("*.wav"))
        assert paths == on_disk
        genders = dict(spec.speakers())
        for r in rows:
            assert r["emotion"] in spec.emotions
            assert r["speaker"].startswith(f"{name}_")
            assert r["path"].startswith(f"wav/{r['speaker']}/")
            assert r["gender"] == genders[r["speaker"]]
        # Every speaker records the spec's share of every emotion.
        counts = spec.counts_per_speaker()
        for speaker in genders:
            mine = [r["emotion"] for r in rows if r["speaker"] == speaker]
            assert {e: mine.count(e) for e in spec.emotions} == counts


def test_audio_is_valid(pair):
    specs = _specs()
    for name, manifest in pair.items():
        spec = specs[name]
        lo, hi = spec.duration_s
        _, rows = _read_manifest(manifest)
        for r in rows:
            path = manifest.parent / r["path"]
            info = sf.info(str(path))
            assert (info.format, info.subtype) == ("WAV", "PCM_16"), path
            assert info.samplerate == spec.sample_rate, path
            assert info.channels == 1, path
            assert lo <= info.frames / info.samplerate <= hi, path
            pcm, _ = sf.read(str(path), dtype="int16")
            assert pcm.ndim == 1
            # Not clipped, and not silent.
            assert np.abs(pcm.astype(np.int32)).max() < 32767, path
            audio = pcm / 32768.0
            assert np.isfinite(audio).all()
            assert np.sqrt(np.mean(audio ** 2)) > 1e-3, path


def test_speakers_disjoint_and_mixed(pair):
    speakers = {}
    for name, manifest in pair.items():
        _, rows = _read_manifest(manifest)
        speakers[name] = {r["speaker"] for r in rows}
        assert {r["gender"] for r in rows} == {"female", "male"}
    studio, field = speakers.values()
    assert not studio & field
    assert len(studio) == len(field) == 8


def test_class_balance_differs(pair):
    balance = {}
    for name, manifest in pair.items():
        _, rows = _read_manifest(manifest)
        emotions = [r["emotion"] for r in rows]
        balance[name] = {e: emotions.count(e) / len(emotions) for e in set(emotions)}
    studio, field = balance["synth_studio"], balance["synth_field"]
    assert max(studio.values()) - min(studio.values()) < 1e-9
    spec = _specs()["synth_field"]
    weights = sum(spec.class_proportions.values())
    for emotion, share in field.items():
        assert share == pytest.approx(spec.class_proportions[emotion] / weights, abs=0.02)
    assert max(field, key=field.get) == "neutral"
    assert max(field.values()) / min(field.values()) > 2


# ---------------------------------------------------------------------------
# Reproducibility and safe writes.

def test_same_seed_same_bytes(tmp_path):
    studio, field = synthetic.default_pair()
    for spec in (_small(studio), _small(field)):
        a = synthetic.generate_corpus(spec, tmp_path / "a", seed=3)
        b = synthetic.generate_corpus(spec, tmp_path / "b", seed=3)
        c = synthetic.generate_corpus(spec, tmp_path / "c", seed=4)
        tree_a, tree_b = _tree_bytes(a.parent), _tree_bytes(b.parent)
        assert tree_a == tree_b
        tree_c = _tree_bytes(c.parent)
        assert sorted(tree_a) == sorted(tree_c)
        wavs = [k for k in tree_a if k.endswith(".wav")]
        assert wavs and all(tree_a[k] != tree_c[k] for k in wavs)


def test_utterances_do_not_depend_on_generation_order(tmp_path):
    """An utterance is keyed on (seed, corpus, speaker, emotion, take) alone."""
    studio = synthetic.default_pair()[0]
    full = _small(studio, utterances_per_speaker=10)
    part = _small(studio, emotions=("sad", "angry"), utterances_per_speaker=2)
    tree_full = _tree_bytes(synthetic.generate_corpus(full, tmp_path / "full", SEED).parent)
    tree_part = _tree_bytes(synthetic.generate_corpus(part, tmp_path / "part", SEED).parent)
    wavs = [k for k in tree_part if k.endswith(".wav")]
    assert len(wavs) == 4
    for k in wavs:
        assert tree_part[k] == tree_full[k]


def test_default_pair_is_deterministic(pair, tmp_path):
    """Byte-identical output for the real default corpora, not just small ones."""
    field = _specs()["synth_field"]
    again = synthetic.generate_corpus(field, tmp_path, seed=SEED)
    assert _tree_bytes(again.parent) == _tree_bytes(pair["synth_field"].parent)


def test_existing_corpus_is_reused_unless_overwrite(tmp_path):
    spec = _small(synthetic.default_pair()[1])
    manifest = synthetic.generate_corpus(spec, tmp_path, seed=SEED)
    before = _tree_bytes(manifest.parent)
    marker = manifest.parent / "wav" / "marker.txt"
    marker.write_text("kept")
    # Complete: returned untouched, even for another seed.
    assert synthetic.generate_corpus(spec, tmp_path, seed=SEED + 1) == manifest
    assert marker.exists()
    # overwrite=True regenerates from scratch.
    assert synthetic.generate_corpus(spec, tmp_path, seed=SEED, overwrite=True) == manifest
    assert not marker.exists()
    assert _tree_bytes(manifest.parent) == before
    # Without a manifest a directory is not a corpus and gets replaced.
    manifest.unlink()
    assert synthetic.generate_corpus(spec, tmp_path, seed=SEED) == manifest
    assert _tree_bytes(manifest.parent) == before
    assert [p.name for p in tmp_path.iterdir()] == [spec.name]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    spec = _small(synthetic.default_pair()[0])
    real = synthetic._synthesise_utterance
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_synthesise_utterance", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_corpus(spec, tmp_path, seed=SEED)
    assert list(tmp_path.iterdir()) == []


def test_spec_validation():
    studio = synthetic.default_pair()[0]
    with pytest.raises(ValueError, match="no synthesis profile"):
        dataclasses.replace(studio, emotions=("neutral", "contempt"))
    with pytest.raises(ValueError, match="class_proportions"):
        dataclasses.replace(studio, class_proportions={"neutral": 1.0})
    with pytest.raises(ValueError, match="duration_s"):
        dataclasses.replace(studio, duration_s=(2.0, 1.0))
    counts = dataclasses.replace(
        studio, utterances_per_speaker=7,
        class_proportions={"neutral": 3, "angry": 1, "happy": 1, "sad": 1, "fear": 1},
    ).counts_per_speaker()
    assert counts == {"neutral": 3, "angry": 1, "happy": 1, "sad": 1, "fear": 1}
    with pytest.raises(ValueError, match="style"):
        dataclasses.replace(studio, style={"contempt": {"level": 0.5}})
    with pytest.raises(ValueError, match="unknown profile fields"):
        dataclasses.replace(studio, style={"angry": {"loudness": 0.5}})
    with pytest.raises(ValueError, match="contour"):
        dataclasses.replace(studio, contours={"happy": "wavy"})
    with pytest.raises(ValueError, match="contour"):
        dataclasses.replace(studio, contours={"contempt": "flat"})
    with pytest.raises(ValueError, match="voice_individuality"):
        dataclasses.replace(studio, voice_individuality=-0.1)


def test_style_changes_only_the_styled_emotions(tmp_path):
    """Display rules act per emotion: neutral, unstyled, stays byte-identical."""
    studio = _small(synthetic.default_pair()[0], emotions=("neutral", "angry", "sad"),
                    utterances_per_speaker=6)
    styled = dataclasses.replace(studio, style={"angry": {"level": 0.3, "f0_shift": 0.2}},
                                 contours={"sad": "rising"})
    unit = dataclasses.replace(studio, style={"angry": {"level": 1.0}})
    plain = _tree_bytes(synthetic.generate_corpus(studio, tmp_path / "plain", SEED).parent)
    changed = _tree_bytes(synthetic.generate_corpus(styled, tmp_path / "styled", SEED).parent)
    same = _tree_bytes(synthetic.generate_corpus(unit, tmp_path / "unit", SEED).parent)
    wavs = [k for k in plain if k.endswith(".wav")]
    assert all(same[k] == plain[k] for k in wavs)
    for k in wavs:
        if "_neutral_" in k:
            assert changed[k] == plain[k], k
        else:
            assert changed[k] != plain[k], k


def test_voice_individuality_zero_changes_nothing(tmp_path):
    """The per-speaker formant factors are drawn last: at 0 every byte stays."""
    studio = _small(synthetic.default_pair()[0])
    assert studio.voice_individuality == 0.0
    explicit = dataclasses.replace(studio, voice_individuality=0.0, name=studio.name)
    a = _tree_bytes(synthetic.generate_corpus(studio, tmp_path / "a", SEED).parent)
    b = _tree_bytes(synthetic.generate_corpus(explicit, tmp_path / "b", SEED).parent)
    assert a == b
    voiced = dataclasses.replace(studio, voice_individuality=0.2)
    c = _tree_bytes(synthetic.generate_corpus(voiced, tmp_path / "c", SEED).parent)
    assert all(c[k] != a[k] for k in a if k.endswith(".wav"))


def test_voice_individuality_makes_speakers_identifiable(tmp_path):
    """Speaker identification from utterance log-mel statistics (one speaker
    per class, 3 of 12 utterances held out each) gains with individuality."""
    accuracy = {}
    for individuality in (0.0, 0.2):
        spec = _small(synthetic.default_pair()[0], n_speakers=6, female_fraction=0.0,
                      utterances_per_speaker=12, duration_s=(1.0, 1.2),
                      voice_individuality=individuality)
        manifest = synthetic.generate_corpus(spec, tmp_path / str(individuality), SEED)
        _, rows = _read_manifest(manifest)
        x = np.stack([log_mel_stats(manifest.parent / r["path"]) for r in rows])
        ids = sorted({r["speaker"] for r in rows})
        y = np.array([ids.index(r["speaker"]) for r in rows])
        test = np.zeros(len(y), bool)
        for k in range(len(ids)):
            test[np.flatnonzero(y == k)[::4]] = True
        predict = train_logistic(x[~test], y[~test], num_classes=len(ids))
        accuracy[individuality] = float(np.mean(predict(x[test]) == y[test]))
    print(f"speaker identification, one gender: {accuracy}")
    assert accuracy[0.2] >= accuracy[0.0] + 0.2


# ---------------------------------------------------------------------------
# Separability: the property the pair exists for.

def log_mel_stats(path: pathlib.Path) -> np.ndarray:
    """Utterance-level mean and std over frames of a 64-bin log-mel (16 kHz)."""
    audio, sr = sf.read(str(path), dtype="float32")
    if sr != FEATURE_SR:
        audio = librosa.resample(audio, orig_sr=sr, target_sr=FEATURE_SR)
    mel = librosa.feature.melspectrogram(
        y=audio, sr=FEATURE_SR, n_fft=400, win_length=400, hop_length=160, n_mels=64)
    log_mel = np.log(mel + 1e-6)
    return np.concatenate([log_mel.mean(axis=1), log_mel.std(axis=1)])


def corpus_features(manifest: pathlib.Path):
    """(features, class index, speaker) of the task's classes in one corpus."""
    _, rows = _read_manifest(manifest)
    rows = [r for r in rows if r["emotion"] in TASK_CLASSES]
    x = np.stack([log_mel_stats(manifest.parent / r["path"]) for r in rows])
    y = np.array([TASK_CLASSES.index(r["emotion"]) for r in rows])
    speakers = np.array([r["speaker"] for r in rows])
    return x, y, speakers


def train_logistic(x: np.ndarray, y: np.ndarray, steps: int = 300, lr: float = 0.5,
                   l2: float = 1e-3, num_classes: int = len(TASK_CLASSES)):
    """Multinomial logistic regression by full-batch gradient descent.

    Features are standardised with the training set's statistics only, so a
    corpus shift reaches the classifier unmitigated.
    """
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    z = (x - mean) / std
    n_classes = num_classes
    w = np.zeros((z.shape[1], n_classes))
    b = np.zeros(n_classes)
    onehot = np.eye(n_classes)[y]
    for _ in range(steps):
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        grad = (prob - onehot) / len(y)
        w -= lr * (z.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return lambda x_new: np.argmax(((x_new - mean) / std) @ w + b, axis=1)


def uar(y: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted average recall: mean of per-class recalls."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def speaker_independent_uar(x, y, speakers, folds: int = 4) -> float:
    """Cross-validated by speaker: no test speaker is ever seen in training.

    Speaker ids sort females first, so striding puts one of each per fold.
    """
    ids = sorted(set(speakers))
    pred = np.empty_like(y)
    for fold in range(folds):
        test = np.isin(speakers, ids[fold::folds])
        pred[test] = train_logistic(x[~test], y[~test])(x[test])
    return uar(y, pred)


def separability(manifests: dict[str, pathlib.Path]) -> dict[str, float]:
    xs, ys, ss = corpus_features(manifests["synth_studio"])
    xt, yt, st = corpus_features(manifests["synth_field"])
    return {
        "within_source": speaker_independent_uar(xs, ys, ss),
        "within_target": speaker_independent_uar(xt, yt, st),
        "cross": uar(yt, train_logistic(xs, ys)(xt)),
    }


def test_emotions_separable_within_and_shifted_across(pair):
    scores = separability(pair)
    print("synthetic pair, seed {}: UAR within source {within_source:.3f}, within "
          "target {within_target:.3f}, cross-corpus {cross:.3f}".format(SEED, **scores))
    assert scores["within_source"] >= 0.8
    assert scores["within_target"] >= 0.8
    # A genuine shift, yet well above chance (0.25): something to recover.
    assert scores["cross"] <= scores["within_source"] - 0.15
    assert scores["cross"] >= 0.35
