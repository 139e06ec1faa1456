"""Compact 2-D CNN backbone over log-mel "images", with attentive pooling.

The backbone of MSAC-SERNet-style models: conv3x3-BN-ReLU-maxpool blocks see
local time-frequency patterns (harmonics, formant movements); each frame of
the last map is then flattened over frequency and attentive statistics
pooling summarises time.  Flattened, not averaged: convolutions are blind to
where in frequency a pattern sits, and averaging the band axis would throw
the position away too, while emotion shows in where the energy is (spectral
tilt, formant positions).  On real speech the averaged version could not
fit its own training speakers (docs/data.md).

Per-frame tracks (log F0, voicing, log energy of feature kind
'logmel_pitch') are not bands: convolved with the spectrum they would be
smeared into the neighbouring mel bands, and pitch level and loudness are
the cues acted emotion lives in.  They bypass the convolutions, are
averaged to the last map's frame rate and join its features, so the
pooling's weighted mean and std over time are their level and range.

Padding: a 3x3 convolution mixes neighbouring frames, so padded frames are
zeroed after every block (and the input is zeroed first); pooling pads time up
to an even length with zeros (ceil mode), so an utterance's last frame is kept
whatever the padding; the mask is downsampled alongside.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodna_jax.models.row_noise import channel_units
from emodna_jax.models.layers import (AttentiveStatisticsPooling, BatchNorm,
                                      ConvSettings, conv_norm_act, downsample_mask,
                                      masked_window_mean, zero_padding)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, ceil mode: [B, T, F, C] -> [B, ceil(T/2), ceil(F/2), C].

    Odd sizes are padded with zeros, not dropped: with floor semantics the
    last valid frame would vanish for one padding amount and survive for
    another.  Zero is neutral for the non-negative (post-ReLU) inputs, and it
    is exactly what a zeroed padded frame holds, so a partial window pools the
    same whatever follows it.
    """
    pad_t, pad_f = -x.shape[1] % 2, -x.shape[2] % 2
    x = jnp.pad(x, ((0, 0), (0, pad_t), (0, pad_f), (0, 0)))
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class CNN(ConvSettings):
    """2-D CNN encoder: frames [B, T, F], mask [B, T] -> [B, 2 * channels[-1]].

    Each block is conv3x3 -> BN -> ReLU -> channel dropout -> maxpool 2x2, so
    ``len(channels)`` blocks shrink T and F by 2^len(channels).  h is the
    attentive mean and std over time of the last map, flattened over its
    F' = ceil(F / 2^len(channels)) bands (with the ``num_tracks`` per-frame
    tracks beside them): [B, 2 * (F' * channels[-1] + num_tracks)].

    Attributes:
      channels: output channels of each block (their number is the number of
        blocks).
      kernel_size: square convolution kernel.
      num_tracks: the last values of each frame that are per-frame tracks,
        not bands (``FeatureConfig.num_tracks``); 0 for a pure spectrogram.
      attention_dim: hidden width of the attentive pooling's scoring MLP.
      (and the :class:`ConvSettings` fields; dropout follows each block and
      is shared over frequency too.)
    """
    channels: Sequence[int] = (32, 64, 128, 128)
    kernel_size: int = 3
    num_tracks: int = 0
    attention_dim: int = 64

    def dropout_units(self, num_values: int) -> int:
        """Noise units per row of one training pass (models/row_noise.py)."""
        return sum(channel_units(self.dropout_rate, c) for c in self.channels)

    def output_dim(self, num_values: int) -> int:
        bands = num_values - self.num_tracks
        return 2 * (-(-bands // 2 ** len(self.channels)) * self.channels[-1]
                    + self.num_tracks)

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array, *,
                 train: bool, noise=None) -> jax.Array:
        frames = zero_padding(frames.astype(self.dtype), mask)
        bands = frames[..., :frames.shape[-1] - self.num_tracks]
        tracks = frames[..., bands.shape[-1]:]
        frame_mask, x = mask, bands[..., None]
        for i, features in enumerate(self.channels):
            x = conv_norm_act(
                x, mask,
                nn.Conv(features, (self.kernel_size, self.kernel_size),
                        padding="SAME", use_bias=False, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"conv{i}"),
                BatchNorm(axis_name=self.bn_axis_name, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"bn{i}"),
                rate=self.dropout_rate, noise=noise, broadcast_dims=(1, 2), train=train)
            x = max_pool_2x2(zero_padding(x, mask))
            mask = downsample_mask(mask, 2)
        x = x.reshape(x.shape[0], x.shape[1], -1)                # [B, T', F' C]
        if self.num_tracks:
            x = jnp.concatenate([x, masked_window_mean(
                tracks, frame_mask, 2 ** len(self.channels))], axis=-1)
        return AttentiveStatisticsPooling(
            self.attention_dim, dtype=self.dtype,
            param_dtype=self.param_dtype, name="pooling")(x, mask)
