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


def _harmonic(f0, seconds=1.0, sample_rate=16000):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.2 * sum(np.sin(2 * np.pi * k * f0 * t) / k
                      for k in range(1, 6))).astype(np.float32)


def test_logmel_pitch_is_logmel_then_yin_f0_voicing_and_energy():
    from data_prep.features import pitch_features
    wave = np.concatenate([_harmonic(150.0, 0.5), np.zeros(4000, np.float32),
                           _harmonic(220.0, 0.5)])
    config = FeatureConfig(kind="logmel_pitch")
    got = FeatureExtractor(config)(wave)
    assert got.shape == (1 + wave.size // 160, 64 + 3) and config.num_bins == 67
    # The last num_tracks values are the tracks, which the CNN keeps out of
    # its convolutions; a pure spectrogram has none.
    assert config.num_tracks == 3 and FeatureConfig().num_tracks == 0
    np.testing.assert_array_equal(got[:, :64], FeatureExtractor(FeatureConfig())(wave))
    log_f0, nccf, log_energy = got[:, 64:].T
    np.testing.assert_array_equal(got[:, 64:], pitch_features(wave, config))
    # Voiced frames carry YIN's own estimate (an independent call) ...
    yin = librosa.yin(wave, fmin=60, fmax=500, sr=16000, frame_length=1024,
                      hop_length=160, center=True)
    voiced = nccf > 0.5
    np.testing.assert_allclose(log_f0[voiced], np.log(yin[voiced]), rtol=1e-6)
    # ... at the right pitch, with a near-perfect periodicity in the tones;
    assert np.exp(np.median(log_f0[5:40])) == pytest.approx(150.0, rel=0.01)
    assert np.exp(np.median(log_f0[-40:-5])) == pytest.approx(220.0, rel=0.01)
    assert nccf[5:40].min() > 0.95 and nccf[-40:-5].min() > 0.95
    # the silence between them is unvoiced, and its pitch is interpolated.
    gap = slice(57, 70)
    assert (nccf[gap] < 0.5).all()
    assert ((log_f0[gap] >= np.log(149)) & (log_f0[gap] <= np.log(221))).all()
    assert np.all(np.diff(log_f0[gap]) >= 0)
    # Log energy is the log mean square of the analysis window.
    rms = librosa.feature.rms(y=wave, frame_length=512, hop_length=160, center=True)[0]
    np.testing.assert_allclose(log_energy, np.log(rms ** 2 + 1e-6), rtol=1e-5)
    assert log_energy[gap].max() < log_energy[5:40].min() - 5


def test_voicing_is_the_normalised_correlation_one_period_later():
    """NCCF of one frame, by an explicit loop; white noise is unvoiced."""
    from data_prep.features import pitch_features
    rng = np.random.default_rng(0)
    wave = (_harmonic(180.0) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    config = FeatureConfig(kind="logmel_pitch")
    nccf = pitch_features(wave, config)[:, 1]
    yin = librosa.yin(wave, fmin=60, fmax=500, sr=16000, frame_length=1024,
                      hop_length=160, center=True)
    padded = np.pad(wave, 512)
    for t in (20, 50):
        frame = padded[t * 160: t * 160 + 1024].astype(np.float64)
        p = int(round(16000 / yin[t]))
        a, b = frame[:1024 - p], frame[p:]
        want = np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b))
        assert nccf[t] == pytest.approx(want, abs=1e-4)
    noise = pitch_features(rng.standard_normal(16000).astype(np.float32), config)
    assert (noise[:, 1] > 0.5).mean() < 0.1


def test_fill_unvoiced_hand_worked():
    from data_prep.features import PITCH_RANGE_HZ, fill_unvoiced
    values = np.array([9.0, 1.0, 0.0, 0.0, 4.0, 7.0], np.float32)
    voiced = np.array([False, True, False, False, True, False])
    np.testing.assert_allclose(fill_unvoiced(values, voiced), [1, 1, 2, 3, 4, 4])
    np.testing.assert_allclose(fill_unvoiced(values, np.zeros(6, bool)),
                               np.log(np.sqrt(PITCH_RANGE_HZ[0] * PITCH_RANGE_HZ[1])))
