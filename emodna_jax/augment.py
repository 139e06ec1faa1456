"""SpecAugment-style masking of training frames (Park et al., Interspeech 2019).

A model that must recognise emotion in speakers it never heard should not
lean on any one stretch of an utterance or any one band: masking a few random
blocks of frames and of mel bands in every labelled training utterance makes
it spread its evidence.  Masked values are set to 0, the mean of the
standardised features.  Frequency masks cover only the bands, never the
per-frame tracks (pitch, voicing, energy) after them; time masks cover every
value of a frame and stay inside the utterance's valid frames, so padding is
untouched and what a mask hides does not depend on the padding.  A time
block is also at most a fifth of the utterance (Park et al.'s upper bound
p = 0.2), so a short utterance is never hidden whole.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

TIME_SHARE = 0.2  # the widest time block, as a share of the utterance


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """Static settings (hashable: part of the compiled step).

    Attributes:
      time_masks: blocks of frames masked per utterance (0: none).
      time_width: the widest time block, in frames; each width is drawn
        uniformly from 0..time_width.
      freq_masks: blocks of bands masked per utterance (0: none).
      freq_width: the widest band block.
      num_tracks: values at the end of each frame that are tracks, not bands.
    """
    time_masks: int
    time_width: int
    freq_masks: int
    freq_width: int
    num_tracks: int = 0

    @property
    def enabled(self) -> bool:
        return self.time_masks > 0 or self.freq_masks > 0


def _blocks(rng, count: int, max_width: int, extent, size: int,
            share: float = 1.0) -> jax.Array:
    """[B, size] bool: ``count`` random blocks per row, each of width
    0..min(max_width, share * extent), starting where the whole block fits
    in ``extent`` [B]."""
    rows = extent.shape[0]
    covered = jnp.zeros((rows, size), bool)
    positions = jnp.arange(size)[None, :]
    limit = jnp.minimum(max_width, jnp.floor(share * extent).astype(jnp.int32))
    for key in jax.random.split(rng, count):
        width_key, start_key = jax.random.split(key)
        width = jnp.floor(jax.random.uniform(width_key, (rows,))
                          * (limit + 1)).astype(jnp.int32)
        start = jnp.floor(jax.random.uniform(start_key, (rows,))
                          * (extent - width + 1)).astype(jnp.int32)
        covered |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return covered


def spec_augment(settings: SpecAugment, rng, frames: jax.Array,
                 mask: jax.Array) -> jax.Array:
    """``frames`` [B, T, F] with the masked values set to 0."""
    batch, steps, values = frames.shape
    bands = values - settings.num_tracks
    time_key, freq_key = jax.random.split(rng)
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
    hidden_frames = _blocks(time_key, settings.time_masks, settings.time_width,
                            lengths, steps, share=TIME_SHARE)         # [B, T]
    hidden_bands = _blocks(freq_key, settings.freq_masks, settings.freq_width,
                           jnp.full((batch,), bands, jnp.int32), values)  # [B, F]
    hidden = (hidden_frames[:, :, None] | hidden_bands[:, None, :]) & mask[:, :, None]
    return jnp.where(hidden, jnp.zeros((), frames.dtype), frames)


def from_config(config, num_tracks: int) -> SpecAugment:
    """The settings of ``config.augment`` (none in a config saved before it
    existed: no masks)."""
    a = config.get("augment")
    if a is None:
        return SpecAugment(0, 0, 0, 0, num_tracks)
    return SpecAugment(a.time_masks, a.time_width, a.freq_masks, a.freq_width,
                       num_tracks)
