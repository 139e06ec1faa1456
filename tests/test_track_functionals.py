"""benchmarks/track_functionals.py: the statistics against a hand-worked utterance."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
from benchmarks import track_functionals  # noqa: E402


def test_functionals_hand_worked():
    # 6 frames: one mel band, then log F0, NCCF, log energy.  Voiced frames
    # (NCCF >= 0.5) are 1, 2 and 4: two voiced onsets (0->1 and 3->4).
    f0 = [9.0, 1.0, 3.0, 9.0, 5.0, 9.0]          # 9: interpolated, unvoiced
    nccf = [0.1, 0.9, 0.5, 0.2, 0.7, 0.4]
    energy = [0.0, 2.0, 4.0, 0.0, 6.0, 0.0]
    frames = np.stack([np.zeros(6), f0, nccf, energy], axis=1)
    got = track_functionals.functionals(frames)
    voiced_f0, voiced_energy = np.array([1.0, 3.0, 5.0]), np.array([2.0, 4.0, 6.0])
    want = ([3.0, voiced_f0.std(), 1.8, 3.0, 4.2]
            + [2.0, np.std(energy), 0.0, 1.0, 4.0]
            + [4.0, voiced_energy.std(), 2.8, 4.0, 5.2]
            + [0.5, 100 * 2 / 6])
    np.testing.assert_allclose(got, want)
    assert track_functionals.functionals(frames, with_length=True)[-1] == 6


def test_speaker_standardisation_is_per_speaker():
    table = {"x": np.array([[1.0], [3.0], [10.0], [30.0]]),
             "speaker": np.array([0, 0, 1, 1]), "emotion": np.array(["a"] * 4)}
    out = track_functionals.speaker_standardised(table)["x"][:, 0]
    np.testing.assert_allclose(out, [-1, 1, -1, 1], atol=1e-5)
    assert out.dtype == np.float64 and table["x"][0, 0] == 1.0   # input untouched


def test_an_utterance_without_voiced_frames_uses_every_frame():
    frames = np.stack([np.zeros(4), [1.0, 2.0, 3.0, 4.0], np.zeros(4), np.ones(4)], axis=1)
    got = track_functionals.functionals(frames)
    assert got[0] == pytest.approx(2.5) and got[15] == 0.0 and got[16] == 0.0
