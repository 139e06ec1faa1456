"""Utterance prosody statistics: hand-worked values, per-speaker
standardisation, and their place at the end of every frame."""

import os
import sys

import numpy as np
import pytest

from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig
from emodna_jax import config_validation, input_pipeline
from emodna_jax import utterance_stats
from tests.conftest import toy_config


def test_functionals_hand_worked():
    # 6 frames: one mel band, then log F0, NCCF, log energy.  Voiced frames
    # (NCCF >= 0.5) are 1, 2 and 4: two voiced onsets (0->1 and 3->4).
    f0 = [9.0, 1.0, 3.0, 9.0, 5.0, 9.0]          # 9: interpolated, unvoiced
    nccf = [0.1, 0.9, 0.5, 0.2, 0.7, 0.4]
    energy = [0.0, 2.0, 4.0, 0.0, 6.0, 0.0]
    frames = np.stack([np.zeros(6), f0, nccf, energy], axis=1)
    got = utterance_stats.functionals(frames)
    voiced_f0, voiced_energy = np.array([1.0, 3.0, 5.0]), np.array([2.0, 4.0, 6.0])
    # Energy averaged over 5 frames: (0+2+4+0+6)/5 = 2.4, (2+4+0+6+0)/5 = 2.4,
    # so the energy velocity is |2.4 - 2.4| = 0.
    want = ([3.0, voiced_f0.std(), 1.8, 3.0, 4.2]
            + [2.0, np.std(energy), 0.0, 1.0, 4.0]
            + [4.0, voiced_energy.std(), 2.8, 4.0, 5.2]
            + [0.5, 100 * 2 / 6, 0.0])
    assert len(want) == utterance_stats.NUM_STATS
    np.testing.assert_allclose(got, want)
    assert utterance_stats.functionals(frames, with_length=True)[-1] == 6


def test_energy_velocity_is_a_rate_not_a_count():
    # A ramp rising 1 per frame: every 5-frame average rises 1 per frame too.
    assert utterance_stats.energy_velocity(np.arange(12.0)) == pytest.approx(1.0)
    # Energy alternating 0, 10 for 7 frames: windows 4, 6, 4 -> changes 2, 2.
    assert utterance_stats.energy_velocity(np.array([0, 10] * 3 + [0.0])) == pytest.approx(2.0)
    # The same contour repeated: the same rate (a count would double).
    burst = np.array([0, 0, 5, 9, 5, 0, 0, 0, 3, 0.0])
    once, twice = (utterance_stats.energy_velocity(np.tile(burst, n)) for n in (3, 6))
    assert twice == pytest.approx(once, rel=0.05)
    # No window to compare: 0, not a crash.
    assert utterance_stats.energy_velocity(np.ones(5)) == 0.0


def test_an_utterance_without_voiced_frames_uses_every_frame():
    frames = np.stack([np.zeros(4), [1.0, 2.0, 3.0, 4.0], np.zeros(4), np.ones(4)], axis=1)
    got = utterance_stats.functionals(frames)
    assert got[0] == pytest.approx(2.5) and got[15] == 0.0 and got[16] == 0.0


class FakeCorpus:
    """One stored split of utterances whose F0 track is a constant per utterance."""

    metadata = {"partition_splits": ["train"]}

    def __init__(self, f0_by_speaker):
        self.rows = []
        for speaker, values in f0_by_speaker.items():
            for v in values:
                frames = np.stack([np.zeros(8), np.full(8, v), np.ones(8),
                                   np.arange(8.0) * v], axis=1)
                self.rows.append({"features": frames, "speaker": speaker})

    def source(self, split):
        assert split == "train"
        return self.rows


def test_statistics_are_standardised_with_their_speakers_own():
    corpus = FakeCorpus({0: [1.0, 21.0], 1: [10.0, 30.0], 2: [5.0]})
    stats = utterance_stats.SpeakerStats.of_corpus(corpus)
    z = [stats.standardised(r["features"], r["speaker"])[0] for r in corpus.rows]
    # Mean F0 (column 0): each speaker's two utterances at -1 and +1.
    np.testing.assert_allclose(z[:4], [-1, 1, -1, 1], atol=1e-5)
    # One utterance: its own mean, so 0; its std (0) floored at a tenth of
    # the corpus's.
    every = np.array([1.0, 21.0, 10.0, 30.0, 5.0])
    assert z[4] == pytest.approx(0.0)
    assert stats.speaker_std[2][0] == pytest.approx(0.1 * (every.std() + 1e-6))
    # An unknown speaker (prediction) gets the corpus's statistics.
    unknown = stats.standardised(corpus.rows[0]["features"], None)[0]
    assert unknown == pytest.approx((1.0 - every.mean()) / (every.std() + 1e-6))
    assert stats.standardised(corpus.rows[0]["features"], 99)[0] == pytest.approx(unknown)


def test_every_frame_ends_with_the_utterance_statistics(toy_data_dir):
    corpus = PreparedCorpus.find(toy_data_dir, "toy_src", FeatureConfig(n_mels=16))
    task = input_pipeline.TaskCorpus.create(
        corpus, 0, ["neutral", "angry", "happy"], train_split="train",
        eval_split="validation", normalization=corpus.normalization("train"),
        std_floor=0.01)
    plain = task.num_values
    task.utterance_stats = utterance_stats.SpeakerStats.of_corpus(corpus)
    assert task.num_values == plain + utterance_stats.NUM_STATS
    assert task.num_tracks == corpus.feature_config.num_tracks + utterance_stats.NUM_STATS
    raw = corpus.source("train")[0]
    out = task.example(raw, 80, None, with_label=False)
    frames, mask = out["frames"], out["mask"]
    assert frames.shape == (80, task.num_values)
    want = task.utterance_stats.standardised(raw["features"], raw["speaker"])
    np.testing.assert_allclose(frames[mask][:, plain:], np.tile(want, (mask.sum(), 1)))
    # A whole split's statistics, kept from the one pass, are the ones each
    # of its utterances gets, in the split's order.
    for split in ("train", "all"):
        rows = corpus.source(split)
        np.testing.assert_allclose(task.utterance_statistics(split), np.stack([
            task.utterance_stats.standardised(rows[i]["features"], rows[i]["speaker"])
            for i in range(len(rows))]), rtol=1e-6)
    with pytest.raises(KeyError, match="'fold0'"):
        task.utterance_statistics("fold0")
    assert np.all(frames[~mask] == 0)                  # padding stays zero
    batch = next(iter(input_pipeline.train_dataset(
        task, task, global_batch_size=4, num_frames=24, seed=0)))
    assert batch["src_frames"].shape == (4, 24, task.num_values)
    eval_batch = next(input_pipeline.eval_batches(task, "validation", batch_size=4,
                                                  num_frames=24))
    assert eval_batch["frames"].shape == (4, 24, task.num_values)


def test_the_statistics_need_the_prosody_tracks(toy_data_dir):
    config = toy_config(toy_data_dir)
    config.data.utterance_stats = True
    with pytest.raises(ValueError, match="config.data.utterance_stats: needs the prosody "
                                         "tracks of data.feature='logmel_pitch', got 'logmel'"):
        config_validation.validate_config(config)


def test_the_track_diagnostic_needs_corpora_or_tasks(capsys):
    from benchmarks import track_functionals
    for argv in (["--data_dir=D", "--egemaps_cache=C"],
                 ["--data_dir=D", "--egemaps_cache=C", "--corpora=a", "--tasks=a:b"]):
        with pytest.raises(SystemExit):
            track_functionals.main(argv)
        assert "give --corpora (held-out speakers) or --tasks (across corpora)" \
            in capsys.readouterr().err


def test_a_stored_utterance_s_statistics_are_computed_once(toy_data_dir, monkeypatch):
    """Reading an utterance again takes its statistics from the one pass
    (by its stored path): the same values, and no second computation."""
    corpus = PreparedCorpus.find(toy_data_dir, "toy_src", FeatureConfig(n_mels=16))
    stats = utterance_stats.SpeakerStats.of_corpus(corpus)
    rows = corpus.source("train")
    want = [stats.standardised(rows[i]["features"], rows[i]["speaker"])
            for i in range(len(rows))]
    calls = []
    functionals = utterance_stats.functionals
    monkeypatch.setattr(utterance_stats, "functionals",
                        lambda *a, **k: calls.append(1) or functionals(*a, **k))
    got = [stats.standardised(rows[i]["features"], rows[i]["speaker"], rows[i]["path"])
           for i in range(len(rows))]
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    assert calls == [] and len(stats.by_path) >= len(rows)
