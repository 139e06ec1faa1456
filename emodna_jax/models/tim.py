"""TIM-Net backbone: bidirectional dilated causal convs, fused over scales.

After Ye et al., "Temporal Modeling Matters: A Novel Temporal Emotional
Modeling Approach for Speech Emotion Recognition", ICASSP 2023.  Emotion shows
at several time scales, so a stack of temporal-aware blocks with doubling
dilation is read out after *every* block, and the per-scale summaries are fused
with learned weights.  Each scale looks at the utterance forwards and
backwards.

Padding: all convolutions are causal and the backward stream reverses each
utterance within its own length (:func:`reverse_within_length`), so padding is
always at the end and no valid frame ever sees it; padded frames are still
zeroed after every block, and pooling is over valid frames only.

Layout, for compile time: the two directions (their own weights) are one
stream stacked on a leading axis, [2, B, T, C], so each convolution is one
batched matmul and each BatchNorm, ReLU, dropout and gate one operation for
both; and each kind of weight is one array stacked [block, direction, ...],
so the optimizer and the gradient handle 8 backbone arrays instead of 64.
The fused train step's optimised program shrank from 14.8k to 9.0k
instructions and its cold compile by a fifth (docs/speed.md).  A
``lax.scan`` over the blocks would compile one block instead of five, but
XLA:CPU ran its loop 1.6x slower.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodna_jax.models.causal_conv import causal_conv, conv_variables
from emodna_jax.models.layers import (BN_EPSILON, ConvSettings,
                                      batch_norm_variables, masked_batch_norm,
                                      masked_mean, normalize_with_statistics,
                                      reverse_within_length,
                                      update_running_statistics, varying_like,
                                      zero_padding)
from emodna_jax.models.row_noise import channel_units, drop

DIRECTIONS = 2                            # forward, backward
SITES = 2                                 # (conv, BatchNorm) pairs per block


class _Conv(nn.Module):
    """Stacked causal-conv variables: kernel [..., k, C_in, C_out] (+ bias)."""
    kernel_shape: tuple[int, ...]
    use_bias: bool
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self):
        return conv_variables(self, self.kernel_shape, self.use_bias, self.param_dtype)


class _Norm(nn.Module):
    """Stacked BatchNorm variables [..., C]: running mean/var, scale, bias."""
    shape: tuple[int, ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self):
        return batch_norm_variables(self, self.shape, param_dtype=self.param_dtype)


def _both(fn, *args):
    """``fn`` applied to each direction (the leading axis of every arg)."""
    return jax.vmap(fn)(*args)


def _block(x, mask, inputs, *, dilation, train, rate, axis_name, dtype):
    """One temporal-aware block of both directions.

    conv -> BN -> ReLU -> channel dropout, twice; a sigmoid of the result
    gates the block's input.  ``x`` [2, B, T, C]; ``inputs`` the block's
    slice of the stacked variables (per site: kernel [2, k, C, C], BatchNorm
    scale, bias and, for evaluation, running mean and var [2, C]) and its
    dropout noise [B, 2, 2, C] (or None).  Returns the new
    ``x`` and each site's batch moments ([2, C] mean and var).
    """
    weights = mask.astype(jnp.float32)[..., None]
    y, moments = x, []
    for i in range(SITES):
        kernel = varying_like(jnp.asarray(inputs["kernel"][i], dtype), y)
        y = causal_conv(y, kernel, dilation)
        scale, bias = inputs["scale"][i], inputs["bias"][i]
        if train:
            y, mean, var = _both(
                lambda y, s, b: masked_batch_norm(y, weights, s, b, BN_EPSILON, axis_name),
                y, varying_like(scale, y), varying_like(bias, y))
            moments.append((mean, var))
        else:
            y = normalize_with_statistics(
                y, *(a[:, None, None] for a in (inputs["mean"][i], inputs["var"][i],
                                                scale, bias)))
        y = nn.relu(y.astype(dtype))
        if inputs.get("noise") is not None:
            # One mask per (row, channel), shared over time: TIM-Net's
            # SpatialDropout1D, independent of T.
            site = jnp.transpose(inputs["noise"][:, :, i], (1, 0, 2))   # [2, B, C]
            y = drop(y, site[:, :, None], rate)
    # x * sigmoid(y), written as a division: XLA duplicates a cheap
    # multiply into every consumer (each weight-gradient transpose then
    # recomputes the gates of all earlier blocks) but not a division.
    # y >= 0 after the ReLU, so exp(-y) <= 1 cannot overflow.
    return zero_padding(x / (1 + jnp.exp(-y)), mask[None]), moments


class TIMNet(ConvSettings):
    """TIM-Net encoder: frames [B, T, F] and mask [B, T] -> h [B, features].

    The forward and backward streams have their own weights (their own 1x1
    input projection and blocks), as in the reference implementation: the two
    directions see different temporal contexts.  After block k (dilation
    2^k) the two streams are summed and mean-pooled over valid frames into
    g_k; h is the softmax-weighted sum of g_1..g_n (dynamic fusion).

    Variables (direction 0 forward, 1 backward): ``input`` kernel [2, 1, F, C]
    and bias [2, C]; ``blocks_conv{i}`` kernel [n, 2, k, C, C];
    ``blocks_bn{i}`` scale, bias, mean, var [n, 2, C]; ``fusion_logits`` [n].

    Attributes:
      features: channels C of every block and of h.
      num_blocks: blocks per direction; dilations 1, 2, ..., 2^(n-1), so the
        receptive field is 2^(n+1) - 1 frames for kernel 2.
      kernel_size: temporal kernel of the causal convolutions.
      (and the :class:`ConvSettings` fields; dropout acts inside the blocks.)
    """
    features: int = 64
    num_blocks: int = 6
    kernel_size: int = 2

    def dropout_units(self, num_values: int) -> int:
        """Noise units per row of one training pass (models/row_noise.py)."""
        return self.num_blocks * DIRECTIONS * SITES * channel_units(
            self.dropout_rate, self.features)

    def output_dim(self, num_values: int) -> int:
        return self.features

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array, *,
                 train: bool, noise=None) -> jax.Array:
        n, c = self.num_blocks, self.features
        x = zero_padding(frames.astype(self.dtype), mask)
        x = jnp.stack([x, reverse_within_length(x, mask)])           # [2, B, T, F]
        kernel, bias = _Conv((DIRECTIONS, 1, x.shape[-1], c), True,
                             self.param_dtype, name="input")()
        # jnp.asarray: restored variables may be numpy arrays, which pcast
        # must not receive as constants.
        x = causal_conv(x, varying_like(jnp.asarray(kernel, self.dtype), x), 1)
        x = zero_padding(x + jnp.asarray(bias, self.dtype)[:, None, None], mask[None])

        convs = [_Conv((n, DIRECTIONS, self.kernel_size, c, c), False,
                       self.param_dtype, name=f"blocks_conv{i}")()[0]
                 for i in range(SITES)]
        norms = [_Norm((n, DIRECTIONS, c), self.param_dtype, name=f"blocks_bn{i}")()
                 for i in range(SITES)]
        inputs = {"kernel": convs, "scale": [v[2] for v in norms],
                  "bias": [v[3] for v in norms]}
        if not train:
            inputs["mean"] = [v[0].value for v in norms]
            inputs["var"] = [v[1].value for v in norms]
        if noise is not None and self.dropout_rate > 0:
            # A row's columns, block by block: forward conv0, forward conv1,
            # backward conv0, backward conv1.
            columns = noise.take(self.dropout_units(frames.shape[-1]))
            inputs["noise"] = jnp.moveaxis(
                columns.reshape(-1, n, DIRECTIONS, SITES, c), 1, 0)
        initializing = self.is_initializing()
        axis_name = None if initializing else self.bn_axis_name
        scales, moments = [], []
        for k in range(n):
            x, block_moments = _block(
                x, mask, jax.tree.map(lambda a: a[k], inputs), dilation=2 ** k,
                train=train, rate=self.dropout_rate, axis_name=axis_name,
                dtype=self.dtype)
            moments.append(block_moments)
            # The streams are not time-aligned (one is reversed), but pooling
            # discards order, so summing before pooling is what is meant.
            scales.append(masked_mean(x[0] + x[1], mask))
        if train and not initializing:
            for i, (ra_mean, ra_var, _, _) in enumerate(norms):
                update_running_statistics(
                    ra_mean, ra_var, *(jnp.stack([m[i][j] for m in moments])
                                       for j in range(2)))
        scales = jnp.stack(scales)                                # [n, B, C]

        fusion_logits = self.param("fusion_logits", nn.initializers.zeros,
                                   (n,), self.param_dtype)
        weights = jax.nn.softmax(fusion_logits.astype(jnp.float32))
        h = jnp.einsum("nbc,n->bc", scales.astype(jnp.float32), weights)
        return h.astype(self.dtype)
