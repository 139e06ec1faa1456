"""Features equal direct librosa calls; config validation."""

import librosa
import numpy as np
import pytest

from data_prep.features import FeatureConfig, FeatureExtractor
from tests.conftest import tone


@pytest.mark.parametrize("n_mels", [64, 80])
def test_logmel_equals_librosa_melspectrogram(n_mels):
    wave = tone(1.0, 16000, seed=1)
    config = FeatureConfig(n_mels=n_mels)
    got = FeatureExtractor(config)(wave)
    want = np.log(librosa.feature.melspectrogram(
        y=wave, sr=16000, n_fft=512, hop_length=160, win_length=400,
        n_mels=n_mels) + 1e-6).T
    assert got.shape == (1 + wave.size // 160, n_mels)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_mfcc_equals_librosa_mfcc_with_deltas():
    wave = tone(1.0, 16000, seed=2)
    got = FeatureExtractor(FeatureConfig(kind="mfcc", n_mfcc=13))(wave)
    mfcc = librosa.feature.mfcc(y=wave, sr=16000, n_mfcc=13, n_fft=512,
                                hop_length=160, win_length=400, n_mels=64)
    want = np.concatenate([mfcc, librosa.feature.delta(mfcc),
                           librosa.feature.delta(mfcc, order=2)]).T
    assert got.shape[1] == 39
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_window_and_hop_follow_the_sample_rate():
    config = FeatureConfig(sample_rate=8000)
    assert (config.win_length, config.hop_length, config.n_fft) == (200, 80, 256)
    assert config.name == "logmel64-8k"
    assert FeatureConfig(kind="mfcc", dtype="float16").name == "mfcc39-16k-f16"


def test_float16_storage():
    frames = FeatureExtractor(FeatureConfig(dtype="float16"))(tone(0.5, 16000, 3))
    assert frames.dtype == np.float16


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "spectrogram"}, "feature kind"),
    ({"dtype": "int8"}, "feature dtype"),
    ({"kind": "mfcc", "n_mfcc": 100}, "cannot exceed"),
    ({"hop_ms": 30.0}, "hop_ms"),
])
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**kwargs)


def test_config_round_trips_through_dict():
    config = FeatureConfig(kind="mfcc", n_mels=80, dtype="float16")
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown feature settings"):
        FeatureConfig.from_dict({"kind": "logmel", "bins": 3})
