"""Builder round trip, statistics, splits, bad files, atomicity, idempotency."""

import os
import signal
import subprocess
import sys
import time

import librosa
import numpy as np
import pytest
import soundfile as sf

from data_prep import audio
from data_prep import builder
from data_prep import corpora
from data_prep import extract
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig, FeatureExtractor
from tests.conftest import make_corpus, tone, write_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(manifest, data_dir, **kwargs):
    records, skipped = corpora.parse_csv(manifest, name="toy")
    kwargs.setdefault("progress", False)
    return builder.build_corpus(
        records, corpus="toy", root=os.path.dirname(manifest), data_dir=data_dir,
        feature_config=kwargs.pop("feature_config", FeatureConfig()),
        parse_skipped=skipped, **kwargs)


def read_split(corpus, split):
    source = corpus.source(split)
    return [source[i] for i in range(len(source))]


def test_round_trip_features_labels_and_splits(clean_manifest, tmp_path):
    result = build(clean_manifest, str(tmp_path / "data"), num_folds=5)
    corpus = PreparedCorpus(result.path)
    examples = read_split(corpus, "all")
    assert len(examples) == 20
    extractor = FeatureExtractor(corpus.feature_config)
    records = {os.path.basename(r.path): r
               for r in corpora.parse_csv(clean_manifest)[0]}
    for ex in examples:
        record = records[ex["path"].decode()]
        want = extractor(audio.load_audio(record.path, 16000).waveform)
        np.testing.assert_array_equal(ex["features"], want)
        assert ex["num_frames"] == want.shape[0]
        assert corpus.emotions[ex["emotion"]] == record.emotion
        assert corpus.metadata["speakers"][ex["speaker"]] == record.speaker
        assert ex["corpus"].decode() == "toy"
    assert corpus.emotions == ["neutral", "angry", "happy", "sad"]  # canonical order

    def speakers(split):
        return {ex["speaker"] for ex in read_split(corpus, split)}

    assert not speakers("train") & speakers("validation")
    assert speakers("train") | speakers("validation") == speakers("all")
    fold_sets = [speakers(f"fold{k}") for k in range(5)]
    assert sum(len(s) for s in fold_sets) == 5
    assert set().union(*fold_sets) == speakers("all")
    assert corpus.splits == ["all", "train", "validation"] + [
        f"fold{k}" for k in range(5)]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stored_statistics_equal_numpy(clean_manifest, tmp_path, dtype):
    result = build(clean_manifest, str(tmp_path / "data"), num_folds=3,
                   feature_config=FeatureConfig(dtype=dtype))
    corpus = PreparedCorpus(result.path)

    def frames(*splits):
        examples = [ex for s in splits for ex in read_split(corpus, s)]
        assert all(ex["features"].dtype == np.dtype(dtype) for ex in examples)
        return np.concatenate([ex["features"] for ex in examples]).astype(np.float64)

    for split in ("train", "all"):
        mean, std = corpus.normalization(split)
        np.testing.assert_allclose(mean, frames(split).mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(std, frames(split).std(0), rtol=1e-7, atol=1e-9)
    for k in range(3):
        rest = [f"fold{j}" for j in range(3) if j != k]
        mean, std = corpus.fold_normalization(k)
        np.testing.assert_allclose(mean, frames(*rest).mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(std, frames(*rest).std(0), rtol=1e-7, atol=1e-9)


def test_two_workers_write_the_same_dataset(clean_manifest, tmp_path):
    one = PreparedCorpus(build(clean_manifest, str(tmp_path / "a")).path)
    two = PreparedCorpus(build(clean_manifest, str(tmp_path / "b"), workers=2).path)
    for split in one.splits:
        a, b = read_split(one, split), read_split(two, split)
        assert [x["path"] for x in a] == [x["path"] for x in b]
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x["features"], y["features"])
    assert one.metadata["normalization"] == two.metadata["normalization"]


def bad_corpus(root):
    """A clean corpus plus one file of every broken kind."""
    manifest = make_corpus(root)
    rows = [line.strip().split(",") for line in open(manifest)][1:]
    wave = tone(0.6, 16000, seed=7)
    sf.write(os.path.join(root, "silent.wav"), np.zeros(16000, np.float32), 16000)
    sf.write(os.path.join(root, "short.wav"), wave[:1600], 16000)
    sf.write(os.path.join(root, "nan.wav"), np.full(16000, np.nan, np.float32),
             16000, subtype="FLOAT")
    sf.write(os.path.join(root, "empty.wav"), np.zeros(0, np.float32), 16000)
    with open(os.path.join(root, "corrupt.wav"), "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(os.path.join(root, "stereo.wav"), tone(0.6, 16000, 8, channels=2), 16000)
    sf.write(os.path.join(root, "odd_rate.wav"), tone(0.6, 44100, 9), 44100)
    for name in ("silent", "short", "nan", "empty", "corrupt", "stereo", "odd_rate"):
        rows.append([f"{name}.wav", "sad", "spk0", "male"])
    return write_manifest(manifest, rows)


def test_bad_files_are_skipped_or_converted_with_reasons(tmp_path):
    manifest = bad_corpus(str(tmp_path / "raw"))
    result = build(manifest, str(tmp_path / "data"))
    skipped = {os.path.basename(p): why for p, why in result.summary["skipped"]}
    assert set(skipped) == {"silent.wav", "short.wav", "nan.wav", "empty.wav",
                            "corrupt.wav"}
    assert "silent" in skipped["silent.wav"]
    assert "too short" in skipped["short.wav"]
    assert "NaN" in skipped["nan.wav"]
    assert "empty" in skipped["empty.wav"]
    assert "unreadable" in skipped["corrupt.wav"]
    converted = {os.path.basename(p): how for p, how in result.summary["converted"]}
    assert converted == {"stereo.wav": "2 channels->mono",
                         "odd_rate.wav": "odd rate 44100Hz (corpus: 16000Hz)"}
    assert result.summary["files_found"] == 27
    assert result.summary["files_used"] == 22

    corpus = PreparedCorpus(result.path)
    by_name = {ex["path"].decode(): ex for ex in read_split(corpus, "all")}
    extractor = FeatureExtractor(FeatureConfig())
    stereo, _ = sf.read(os.path.join(tmp_path, "raw", "stereo.wav"), dtype="float32")
    mono = stereo.mean(axis=1)
    np.testing.assert_array_equal(by_name["stereo.wav"]["features"], extractor(mono))
    odd, _ = sf.read(os.path.join(tmp_path, "raw", "odd_rate.wav"), dtype="float32")
    resampled = librosa.resample(odd, orig_sr=44100, target_sr=16000)
    np.testing.assert_array_equal(by_name["odd_rate.wav"]["features"],
                                  extractor(resampled))


def staging_dirs(data_dir):
    return [d for d in os.listdir(data_dir) if d.startswith(".staging")]


def test_strict_fails_naming_the_file_and_leaves_nothing(tmp_path):
    manifest = bad_corpus(str(tmp_path / "raw"))
    data_dir = str(tmp_path / "data")
    with pytest.raises(extract.StrictModeError, match=r"(silent|short|nan|empty|corrupt|stereo|odd_rate)\.wav"):
        build(manifest, data_dir, strict=True)
    assert not os.path.exists(builder.dataset_dir(data_dir, "toy", FeatureConfig()))
    assert staging_dirs(data_dir) == []


def test_interrupt_leaves_no_dataset_and_keeps_the_old_one(clean_manifest, tmp_path,
                                                            monkeypatch):
    data_dir = str(tmp_path / "data")
    first = build(clean_manifest, data_dir)
    before = {name: open(os.path.join(first.path, name), "rb").read()
              for name in os.listdir(first.path)}
    calls = []
    real = extract._extract_one

    def interrupted(task):
        calls.append(task)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(extract, "_extract_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(clean_manifest, data_dir, overwrite=True)
    after = {name: open(os.path.join(first.path, name), "rb").read()
             for name in os.listdir(first.path)}
    assert after == before
    assert staging_dirs(data_dir) == []


def test_existing_dataset_is_reused_unless_overwrite(clean_manifest, tmp_path):
    data_dir = str(tmp_path / "data")
    first = build(clean_manifest, data_dir)
    stamp = os.stat(os.path.join(first.path, "dataset_info.json")).st_mtime_ns
    again = build(clean_manifest, data_dir)
    assert again.reused and again.summary == first.summary
    assert os.stat(os.path.join(first.path, "dataset_info.json")).st_mtime_ns == stamp
    rebuilt = build(clean_manifest, data_dir, overwrite=True)
    assert not rebuilt.reused
    assert PreparedCorpus(rebuilt.path).metadata["summary"] == first.summary


def _build_in_background(tmp_path):
    """(process, manifest, data_dir) of a CLI build of 480 files, returned
    once it has extracted 20 of them."""
    manifest = make_corpus(str(tmp_path / "raw"), num_speakers=8, per_speaker=60,
                           seconds=1.5)
    data_dir = str(tmp_path / "data")
    command = [sys.executable, "-m", "data_prep", "--corpus=csv",
               f"--manifest={manifest}", f"--data_dir={data_dir}", "--workers=1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        frames = [os.path.join(data_dir, d, "frames") for d in
                  (staging_dirs(data_dir) if os.path.isdir(data_dir) else [])]
        if any(os.path.isdir(f) and len(os.listdir(f)) >= 20 for f in frames):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the build ended before it could be stopped"
    return process, manifest, data_dir


def test_sigterm_during_a_build_removes_its_staging_directory(tmp_path):
    process, _, data_dir = _build_in_background(tmp_path)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("interrupted: nothing was written")
    assert "Traceback" not in stderr
    assert staging_dirs(data_dir) == []
    assert not os.path.exists(builder.dataset_dir(data_dir, "corpus", FeatureConfig()))


def test_killed_build_leaves_no_visible_dataset(tmp_path):
    process, manifest, data_dir = _build_in_background(tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()

    final = builder.dataset_dir(data_dir, "corpus", FeatureConfig())
    assert not os.path.exists(final)
    with pytest.raises(FileNotFoundError, match="no complete prepared dataset"):
        PreparedCorpus(final)
    assert len(staging_dirs(data_dir)) == 1  # hidden, and cleared by the next build

    records, skipped = corpora.parse_csv(manifest)
    result = builder.build_corpus(
        records[::12], corpus="corpus", root=os.path.dirname(manifest),
        data_dir=data_dir, feature_config=FeatureConfig(), progress=False)
    assert staging_dirs(data_dir) == []
    assert len(PreparedCorpus(result.path).source("all")) == 40


def test_cli_prints_the_summary(tmp_path):
    manifest = bad_corpus(str(tmp_path / "raw"))
    out = subprocess.run(
        [sys.executable, "-m", "data_prep", "--corpus=csv", f"--manifest={manifest}",
         f"--data_dir={tmp_path / 'data'}", "--workers=2", "--folds=0"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "corpus: 22 of 27 files" in out
    assert "per class:" in out and "per speaker:" in out
    assert "skipped (5):" in out and "silent (peak below -80 dBFS)" in out
    assert "fold0" not in out
    again = subprocess.run(
        [sys.executable, "-m", "data_prep", "--corpus=csv", f"--manifest={manifest}",
         f"--data_dir={tmp_path / 'data'}"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "reusing it" in again


def test_cli_reports_a_missing_raw_directory(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "data_prep", "--corpus=emodb",
         f"--raw_dir={tmp_path / 'nowhere'}", f"--data_dir={tmp_path / 'data'}"],
        cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1
    assert "raw directory not found" in run.stderr and "nowhere" in run.stderr


def test_the_extraction_bar_names_its_corpus_and_starts_after_the_warm_up(
        clean_manifest, tmp_path, monkeypatch):
    """Two corpora built in one run show two bars: each names its corpus.
    The bar starts after librosa's warm-up, whose seconds would otherwise
    count as the first file's and make the first ETA hours long."""
    import tqdm
    events = []
    real_extract, real_bar = FeatureExtractor.__call__, tqdm.tqdm

    def extract_and_note(self, waveform):
        events.append("extract")
        return real_extract(self, waveform)

    def bar_and_note(*args, **kwargs):
        events.append(kwargs.get("desc"))
        return real_bar(*args, **kwargs)

    monkeypatch.setattr(FeatureExtractor, "__call__", extract_and_note)
    monkeypatch.setattr(tqdm, "tqdm", bar_and_note)
    records, _ = corpora.parse_csv(clean_manifest)
    extract.extract_corpus(records[:2], FeatureConfig(n_mels=16), str(tmp_path / "f"),
                           progress=False, corpus="mine")
    assert events == ["extract", "extracting features (mine)", "extract", "extract"]
