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

Vocal tract length perturbation (VTLP; Jaitly and Hinton, 2013) warps the
frequency axis of each training utterance by a random factor alpha: the
value of band i is read at frequency ``centre_i / alpha`` (linear
interpolation between band centres, clamped at the edges), so every formant
moves by alpha, as it would for a speaker with a shorter (alpha > 1) or
longer vocal tract.  Speakers of one corpus differ mostly in vocal tract
length and F0; per-speaker normalisation removes a speaker's mean spectrum but
not the shift of its formants, so a model trained on a few speakers meets new
formant positions in every new speaker.  The warp applies to mel bands only
(their centre frequencies come from the corpus's feature settings), never to
the tracks, and runs before the masks.
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
      warp: the widest frequency warp; alpha is drawn uniformly from
        [1 - warp, 1 + warp] per utterance (0: none; VTLP uses 0.1).
      band_hz: the centre frequency of each band, in Hz (needed for a warp).
    """
    time_masks: int
    time_width: int
    freq_masks: int
    freq_width: int
    num_tracks: int = 0
    warp: float = 0.0
    band_hz: tuple[float, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.time_masks > 0 or self.freq_masks > 0 or self.warp > 0


def _blocks(uniform: jax.Array, max_width: int, extent, size: int,
            share: float = 1.0) -> jax.Array:
    """[B, size] bool: one random block per pair of columns of ``uniform``
    [B, count, 2] (width, start), each of width 0..min(max_width, share *
    extent), starting where the whole block fits in ``extent`` [B]."""
    rows, count, _ = uniform.shape
    covered = jnp.zeros((rows, size), bool)
    positions = jnp.arange(size)[None, :]
    limit = jnp.minimum(max_width, jnp.floor(share * extent).astype(jnp.int32))
    for k in range(count):
        width = jnp.floor(uniform[:, k, 0] * (limit + 1)).astype(jnp.int32)
        start = jnp.floor(uniform[:, k, 1] * (extent - width + 1)).astype(jnp.int32)
        covered |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return covered


def warp_bands(frames: jax.Array, alpha: jax.Array, band_hz,
               num_tracks: int) -> jax.Array:
    """``frames`` [B, T, F] with the bands of row b read at ``band_hz /
    alpha[b]``; the last ``num_tracks`` values of each frame are kept."""
    bands = frames.shape[-1] - num_tracks
    centres = jnp.asarray(band_hz, jnp.float32)
    index = jnp.arange(bands, dtype=jnp.float32)
    position = jnp.interp(centres[None, :] / alpha[:, None], centres, index)  # [B, bands]
    low = jnp.floor(position)
    high_share = (position - low)[:, :, None]
    low = low.astype(jnp.int32)
    high = jnp.minimum(low + 1, bands - 1)
    # [B, bands out, bands in]: each output band mixes two neighbouring inputs.
    weights = ((1 - high_share) * jax.nn.one_hot(low, bands)
               + high_share * jax.nn.one_hot(high, bands)).astype(frames.dtype)
    warped = jnp.einsum("btf,bgf->btg", frames[..., :bands], weights)
    return jnp.concatenate([warped, frames[..., bands:]], axis=-1)


def spec_augment(settings: SpecAugment, row_keys: jax.Array, frames: jax.Array,
                 mask: jax.Array) -> jax.Array:
    """``frames`` [B, T, F] warped (if ``settings.warp``), then with the
    masked values set to 0.  ``row_keys`` [B]: one key per row, from which
    all of that row's draws come in one call, so a row is augmented the same
    on any device layout."""
    batch, steps, values = frames.shape
    bands = values - settings.num_tracks
    draws = 1 + 2 * settings.time_masks + 2 * settings.freq_masks
    uniform = jax.vmap(lambda key: jax.random.uniform(key, (draws,)))(row_keys)
    if settings.warp > 0:
        alpha = (1 - settings.warp) + 2 * settings.warp * uniform[:, 0]
        frames = warp_bands(frames, alpha, settings.band_hz, settings.num_tracks)
    time_end = 1 + 2 * settings.time_masks
    lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
    hidden_frames = _blocks(uniform[:, 1:time_end].reshape(batch, -1, 2),
                            settings.time_width, lengths, steps,
                            share=TIME_SHARE)                                # [B, T]
    hidden_bands = _blocks(uniform[:, time_end:].reshape(batch, -1, 2),
                           settings.freq_width, jnp.full((batch,), bands, jnp.int32),
                           values)                                           # [B, F]
    hidden = (hidden_frames[:, :, None] | hidden_bands[:, None, :]) & mask[:, :, None]
    return jnp.where(hidden, jnp.zeros((), frames.dtype), frames)


def from_config(config, features, num_tracks: int | None = None,
                block: str = "augment") -> SpecAugment:
    """The settings of ``config.<block>`` (``augment``: the source's;
    ``strong_augment``: the target's strong view) for frames made with
    ``features`` (a data_prep FeatureConfig); a config saved before a
    setting existed leaves it off.  ``num_tracks``: values at the end of a
    frame that are not bands (default the features' own tracks; more when
    the pipeline appends utterance statistics)."""
    num_tracks = features.num_tracks if num_tracks is None else num_tracks
    a = config.get(block)
    if a is None:
        return SpecAugment(0, 0, 0, 0, num_tracks)
    warp = float(a.get("warp", 0.0))
    band_hz = ()
    if warp > 0:
        if features.kind not in ("logmel", "logmel_pitch"):
            raise ValueError(f"{block}.warp: needs mel bands, but the corpus's "
                             f"features are {features.kind!r}; set {block}.warp=0")
        band_hz = tuple(float(f) for f in features.band_hz())
    return SpecAugment(a.time_masks, a.time_width, a.freq_masks, a.freq_width,
                       num_tracks, warp, band_hz)
