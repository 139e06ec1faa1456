"""Shared fixtures: small generated corpora (the tests never download data)."""

import csv
import os

import numpy as np
import pytest
import soundfile as sf

EMOTIONS = ("angry", "happy", "neutral", "sad")


def tone(seconds, sample_rate, seed, channels=1):
    """A short harmonic tone with noise: a stand-in utterance with real content."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 100 + 150 * rng.random()
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    wave = 0.2 * wave + 0.02 * rng.standard_normal(t.shape)
    wave = (wave * np.hanning(t.size)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_manifest(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "emotion", "speaker", "gender"])
        writer.writerows(rows)
    return str(path)


def make_corpus(root, num_speakers=5, per_speaker=4, sample_rate=16000,
                seconds=0.6):
    """Writes a clean manifest corpus of tones; returns the manifest path."""
    os.makedirs(root, exist_ok=True)
    rows = []
    for s in range(num_speakers):
        for u in range(per_speaker):
            name = f"spk{s}_{u}.wav"
            sf.write(os.path.join(root, name),
                     tone(seconds, sample_rate, seed=100 * s + u), sample_rate)
            rows.append([name, EMOTIONS[u % len(EMOTIONS)], f"spk{s}",
                         "female" if s % 2 else "male"])
    return write_manifest(os.path.join(root, "corpus.csv"), rows)


@pytest.fixture
def clean_manifest(tmp_path):
    return make_corpus(tmp_path / "raw")
