"""SpecAugment masks: where they fall, how wide, and what they never touch."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from data_prep import features
from emodna_jax import augment

LENGTHS = (40, 17, 3, 60)
STEPS, VALUES, TRACKS = 60, 19, 3


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    # No exact zeros in the data, so a zero marks a masked value.
    frames = rng.uniform(1.0, 2.0, size=(len(LENGTHS), STEPS, VALUES)).astype(np.float32)
    mask = np.arange(STEPS)[None, :] < np.asarray(LENGTHS)[:, None]
    return jnp.asarray(frames), jnp.asarray(mask)


def _keys(seed, rows=len(LENGTHS)):
    """One key per row, as the train step gives (emodna_jax/step.row_keys)."""
    return jax.random.split(jax.random.key(seed), rows)


def _runs(flags):
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1)
    return ends - starts


@pytest.mark.parametrize("seed", range(5))
def test_masks_are_blocks_inside_the_utterance_and_the_bands(seed):
    settings = augment.SpecAugment(time_masks=2, time_width=10, freq_masks=2,
                                   freq_width=4, num_tracks=TRACKS)
    frames, mask = _batch()
    out = np.asarray(augment.spec_augment(settings, _keys(seed), frames, mask))
    zero = out == 0
    kept = ~zero
    np.testing.assert_array_equal(out[kept], np.asarray(frames)[kept])  # only zeroing
    for i, length in enumerate(LENGTHS):
        hidden_frames = zero[i].all(axis=1)           # every value of the frame
        valid = np.arange(STEPS) < length
        hidden_bands = zero[i, valid & ~hidden_frames].all(axis=0)
        # A value of a valid frame is masked exactly when its frame or its
        # band is; padding is never touched.
        np.testing.assert_array_equal(
            zero[i], (hidden_frames[:, None] | hidden_bands[None, :]) & valid[:, None])
        assert not hidden_bands[VALUES - TRACKS:].any()  # nor the tracks
        # At most two blocks each way, each no wider than its limit (two
        # blocks may touch, so a run is at most twice as wide).
        # A time block is also at most a fifth of the utterance.
        assert len(_runs(hidden_frames)) <= 2
        assert _runs(hidden_frames).sum() <= 2 * min(10, int(0.2 * length))
        assert len(_runs(hidden_bands)) <= 2 and _runs(hidden_bands).sum() <= 8


def test_masks_do_not_depend_on_the_padding():
    settings = augment.SpecAugment(2, 10, 2, 4, TRACKS)
    frames, mask = _batch()
    short = augment.spec_augment(settings, _keys(3), frames, mask)
    longer = jnp.concatenate([frames, jnp.ones((len(LENGTHS), 25, VALUES))], axis=1)
    longer_mask = jnp.concatenate([mask, jnp.zeros((len(LENGTHS), 25), bool)], axis=1)
    out = augment.spec_augment(settings, _keys(3), longer, longer_mask)
    np.testing.assert_array_equal(out[:, :STEPS], short)


def test_masks_cover_something_and_vary_with_the_key():
    settings = augment.SpecAugment(2, 10, 2, 4, TRACKS)
    frames, mask = _batch()
    outs = [np.asarray(augment.spec_augment(settings, _keys(k), frames, mask)) == 0
            for k in range(4)]
    assert all(o.any() for o in outs)
    assert len({o.tobytes() for o in outs}) == 4


def test_a_row_is_augmented_by_its_own_key_wherever_it_sits():
    """Rows permuted with their keys come back permuted: what a row gets does
    not depend on its place in the batch (nor so on the device it is on)."""
    settings = augment.SpecAugment(2, 10, 2, 4, TRACKS)
    frames, mask = _batch()
    keys, order = _keys(5), np.array([2, 0, 3, 1])
    whole = np.asarray(augment.spec_augment(settings, keys, frames, mask))
    permuted = augment.spec_augment(settings, keys[order], frames[order], mask[order])
    np.testing.assert_array_equal(permuted, whole[order])
    alone = augment.spec_augment(settings, keys[1:2], frames[1:2], mask[1:2])
    np.testing.assert_array_equal(alone, whole[1:2])


def test_no_masks_is_the_identity():
    frames, mask = _batch()
    settings = augment.SpecAugment(0, 10, 0, 4, TRACKS)
    assert not settings.enabled
    np.testing.assert_array_equal(
        augment.spec_augment(settings, _keys(0), frames, mask), frames)


def test_a_bad_setting_is_named():
    from emodna_jax import config_validation
    with pytest.raises(ValueError, match=r"^config\.augment\.time_masks: must be an "
                                         r"integer >= 0, got -1$"):
        config_validation.validate_config(_config(time_masks=-1))
    with pytest.raises(ValueError, match=r"^config\.augment\.warp: must be in "
                                         r"\[0, 0\.5\), got 0\.5$"):
        config_validation.validate_config(_config(warp=0.5))
    assert not augment.from_config(_config(), PITCH).enabled  # off by default
    config = _config()
    config.strong_augment.freq_masks = -2
    with pytest.raises(ValueError, match=r"^config\.strong_augment\.freq_masks: must "
                                         r"be an integer >= 0, got -2$"):
        config_validation.validate_config(config)
    config = _config()
    config.loss.w_consistency = 1.0
    for key in ("time_masks", "freq_masks"):
        config.strong_augment[key] = 0
    config.strong_augment.warp = 0.0
    with pytest.raises(ValueError, match=r"^config\.loss\.w_consistency: needs a "
                                         r"strong view"):
        config_validation.validate_config(config)


PITCH = features.FeatureConfig(kind="logmel_pitch", n_mels=VALUES - TRACKS)


def test_band_centres_are_where_the_mel_filters_peak():
    cfg = features.FeatureConfig(n_mels=40, sample_rate=8000)
    n_fft = 8192  # fine bins: a triangle's peak bin lies within one bin of its centre
    filters = librosa.filters.mel(sr=8000, n_fft=n_fft, n_mels=40)
    peaks = np.argmax(filters, axis=1) * 8000 / n_fft
    np.testing.assert_allclose(cfg.band_hz(), peaks, atol=8000 / n_fft)


def test_warp_matches_numpy_interpolation():
    frames, _ = _batch()
    centres = PITCH.band_hz()
    alpha = np.array([0.9, 1.0, 1.07, 1.1], np.float32)
    out = np.asarray(augment.warp_bands(frames, jnp.asarray(alpha), tuple(centres), TRACKS))
    x = np.asarray(frames)
    bands = VALUES - TRACKS
    for b in range(len(alpha)):
        position = np.interp(centres / alpha[b], centres, np.arange(bands))
        for t in range(STEPS):
            np.testing.assert_allclose(
                out[b, t, :bands], np.interp(position, np.arange(bands), x[b, t, :bands]),
                rtol=1e-5)
    np.testing.assert_array_equal(out[:, :, bands:], x[:, :, bands:])  # tracks kept
    np.testing.assert_allclose(out[1], x[1], rtol=1e-6)                 # alpha 1: identity


def test_warp_moves_every_band_by_one_factor_per_utterance():
    """Frames whose band values are the bands' own centre frequencies come
    back as ``centre / alpha`` (clamped to the range), which reveals alpha."""
    bands = VALUES - TRACKS
    centres = PITCH.band_hz().astype(np.float32)
    frames = np.ones((8, STEPS, VALUES), np.float32)
    frames[:, :, :bands] = centres
    mask = np.ones((8, STEPS), bool)
    settings = augment.from_config(_config(warp=0.1), PITCH)
    out = np.asarray(augment.spec_augment(settings, _keys(0, 8),
                                          jnp.asarray(frames), jnp.asarray(mask)))
    inner = slice(3, bands - 3)  # away from the clamped edges
    alpha = centres[None, None, inner] / out[:, :, inner]
    np.testing.assert_allclose(alpha, alpha[:, :1, :1] * np.ones_like(alpha), rtol=1e-4)
    alpha = alpha[:, 0, 0]
    assert np.all((alpha >= 0.9 - 1e-5) & (alpha <= 1.1 + 1e-5))
    assert len(np.unique(np.round(alpha, 4))) == 8                     # one per utterance
    np.testing.assert_array_equal(out[:, :, bands:], 1.0)             # tracks kept


def test_warp_needs_mel_bands():
    with pytest.raises(ValueError, match=r"^augment\.warp: needs mel bands, but the "
                                         r"corpus's features are 'mfcc'"):
        augment.from_config(_config(warp=0.1), features.FeatureConfig(kind="mfcc"))


def _config(**augment_settings):
    from configs import default
    config = default.get_config()
    config.augment.update(augment_settings)
    return config
