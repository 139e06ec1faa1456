"""Small pieces shared by the backbones and heads: masking, pooling, BatchNorm.

Every batch holds utterances of different lengths, zero-padded to a common
number of frames ``T`` and described by ``mask`` [B, T] (True on valid frames,
a prefix of each row).  A prediction must never depend on how much padding an
utterance got, nor on what the padded frames hold.  The rules that guarantee it:

* zero the padded positions (:func:`zero_padding`) before anything mixes time;
* pool over valid frames only (:func:`masked_mean`, attentive pooling);
* keep padded frames out of BatchNorm's batch statistics (:class:`BatchNorm`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodna_jax.losses import l2_normalize

Dtype = Any
STD_EPS = 1e-5  # keeps sqrt differentiable when a channel is constant in time
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5   # BatchNorm's defaults, TIM-Net's too


class ConvSettings(nn.Module):
    """The fields every convolutional block and backbone shares.

    Keyword-only, so that a subclass can declare required fields of its own.

    Attributes:
      dropout_rate: channel dropout of the conv blocks (one mask per channel,
        shared over time, so it does not depend on T).
      bn_axis_name: named batch axis for cross-replica BatchNorm, or None.
      dtype: compute dtype; params are ``param_dtype``.
    """
    _: dataclasses.KW_ONLY
    dropout_rate: float = 0.1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


def _expand_mask(mask: jax.Array, x: jax.Array) -> jax.Array:
    """[B, T] -> [B, T, 1, ..., 1], broadcastable against ``x`` [B, T, ...]."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def zero_padding(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Sets padded frames of ``x`` [B, T, ...] to zero, keeping its dtype.

    After a pointwise layer with a bias or a BatchNorm, padded frames are no
    longer zero; zeroing them makes what a later time-mixing layer sees beyond
    an utterance's end the same for every padding amount.
    """
    return x * _expand_mask(mask, x).astype(x.dtype)


def lengths_from_mask(mask: jax.Array) -> jax.Array:
    """Valid frames per row, [B] int32 (valid frames are a prefix)."""
    return jnp.sum(mask, axis=1, dtype=jnp.int32)


def downsample_mask(mask: jax.Array, factor: int) -> jax.Array:
    """Mask after pooling time by ``factor`` (ceil mode): [B, ceil(T/f)].

    A pooled frame is valid when any frame in its window is valid.  The time
    axis is padded up to a multiple of ``factor`` (as the pooled features must
    be) so an utterance's last partial window is kept whatever the padding.
    """
    batch, steps = mask.shape
    pad = -steps % factor
    mask = jnp.pad(mask, ((0, 0), (0, pad)), constant_values=False)
    return mask.reshape(batch, -1, factor).any(axis=-1)


def reverse_within_length(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Reverses each row of ``x`` [B, T, ...] within its valid prefix.

    Row b becomes ``x[b, L_b-1], ..., x[b, 0]`` followed by its padded frames
    unchanged, so padding stays at the end: a causal layer run on the result
    sees the utterance backwards and still never sees padding.
    """
    lengths = lengths_from_mask(mask)[:, None]                  # [B, 1]
    steps = jnp.arange(x.shape[1], dtype=jnp.int32)[None, :]    # [1, T]
    index = jnp.where(steps < lengths, lengths - 1 - steps, steps)
    return jnp.take_along_axis(x, _expand_mask(index, x), axis=1)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the valid frames of ``x`` [B, T, C] -> [B, C].

    Accumulates in float32 (a bf16 sum over hundreds of frames loses digits)
    and returns ``x``'s dtype.
    """
    weights = _expand_mask(mask, x).astype(jnp.float32)
    total = jnp.sum(x.astype(jnp.float32) * weights, axis=1)
    count = jnp.sum(weights, axis=1)
    return (total / count).astype(x.dtype)


def conv_norm_act(x: jax.Array, mask: jax.Array, conv: nn.Module, norm: nn.Module,
                  *, rate: float, noise, broadcast_dims, train: bool) -> jax.Array:
    """conv -> masked BatchNorm -> ReLU -> channel dropout (``rate``, from
    ``noise``: a models.row_noise.RowNoise, None outside training), the block
    both encoders repeat.  The caller builds the layers (their names and
    shapes stay its own, so parameters and checkpoints keep their paths)."""
    x = nn.relu(norm(conv(x), mask, train=train))
    return noise.dropout(x, rate, broadcast_dims) if noise is not None else x


class ProjectionMLP(nn.Module):
    """Dense -> ReLU -> Dense: [B, D] -> [B, out_dim]."""
    hidden_dim: int
    out_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.hidden_dim, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="hidden")(x)
        return nn.Dense(self.out_dim, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="out")(nn.relu(x))


def masked_window_mean(x: jax.Array, mask: jax.Array, factor: int) -> jax.Array:
    """Mean of the valid frames in each window of ``factor`` frames (ceil
    mode, like ``downsample_mask``): [B, T, C] -> [B, ceil(T/f), C].  A
    window without valid frames gives 0; padded frames never count, so a
    window's mean does not depend on how much padding follows it."""
    batch, steps, channels = x.shape
    pad = -steps % factor
    weights = jnp.pad(mask, ((0, 0), (0, pad))).astype(x.dtype)[..., None]
    x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))) * weights
    total = x.reshape(batch, -1, factor, channels).sum(axis=2)
    count = weights.reshape(batch, -1, factor, 1).sum(axis=2)
    return total / jnp.maximum(count, 1)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and std over valid frames: [B, T, C] -> [B, 2C].

    A small MLP scores each frame; the scores are softmax-normalised over the
    valid frames only, so padded frames get exactly zero weight (Okabe et al.,
    Interspeech 2018).  Emotion is carried unevenly in time, which is why the
    weights are learned rather than uniform.

    Attributes:
      hidden_dim: width of the scoring MLP.
    """
    hidden_dim: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        scores = nn.Dense(self.hidden_dim, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="score_hidden")(x)
        scores = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype,
                          name="score_out")(jnp.tanh(scores))
        scores = jnp.where(mask, scores[..., 0].astype(jnp.float32),
                           jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=1)[..., None]     # [B, T, 1]
        x32 = x.astype(jnp.float32)
        mean = jnp.sum(weights * x32, axis=1)
        var = jnp.sum(weights * jnp.square(x32 - mean[:, None]), axis=1)
        std = jnp.sqrt(var + STD_EPS)
        return jnp.concatenate([mean, std], axis=-1).astype(self.dtype)


class BatchNorm(nn.Module):
    """BatchNorm over the valid frames of a batch, optionally across replicas.

    Normalises the last axis of ``x`` [B, T, ..., C].  In training the
    statistics are taken over every axis but the last, at valid positions
    only (``mask`` [B, T] broadcasts over the middle axes).  With ``axis_name``
    the *sums and counts* are ``psum``-ed over that named axis before dividing,
    so the statistics are those of the global batch even when replicas hold
    different numbers of valid frames; ``flax.linen.BatchNorm`` instead
    averages per-replica means (``pmean``), which weights a replica's few
    frames like another's many, so a step on 8 devices would not equal a step
    on one.  The variables mirror flax's (params ``scale``/``bias``,
    batch_stats ``mean``/``var``, biased variance), and as in flax the running
    statistics are not updated during ``init``, where no collective runs
    either (so ``init`` works outside ``shard_map``/``pmap``).  Evaluation
    uses the running statistics and never needs the named axis.

    Attributes:
      momentum: decay of the running statistics.
      epsilon: added to the variance.
      axis_name: named batch axis to reduce statistics over, or None.
      use_scale_bias: learn a per-channel scale and bias after normalising;
        without them the layer only standardises (params ``scale``/``bias``
        are then absent).
      dtype: output dtype; statistics are always float32.
    """
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    axis_name: str | None = None
    use_scale_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
                 train: bool) -> jax.Array:
        ra_mean, ra_var, scale, bias = batch_norm_variables(
            self, (x.shape[-1],), self.use_scale_bias, self.param_dtype)

        if not train:
            return normalize_with_statistics(x, ra_mean.value, ra_var.value, scale,
                                             bias, self.epsilon).astype(self.dtype)

        initializing = self.is_initializing()
        weights = (jnp.ones(x.shape[:2], jnp.float32) if mask is None
                   else mask.astype(jnp.float32))
        weights = weights.reshape(weights.shape + (1,) * (x.ndim - 2))
        y, mean, var = masked_batch_norm(
            x, weights, varying_like(scale, x), varying_like(bias, x),
            self.epsilon, None if initializing else self.axis_name)
        if not initializing:
            update_running_statistics(ra_mean, ra_var, mean, var, self.momentum)
        return y.astype(self.dtype)


def normalize_with_statistics(x, mean, var, scale, bias, epsilon: float = BN_EPSILON):
    """Evaluation-mode BatchNorm of ``x`` with given (running) moments,
    float32; every argument broadcasts against ``x``."""
    return (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias


def update_running_statistics(ra_mean, ra_var, mean, var, momentum: float = BN_MOMENTUM):
    """Moves the running-moment Variables towards a batch's moments."""
    ra_mean.value = momentum * ra_mean.value + (1 - momentum) * mean
    ra_var.value = momentum * ra_var.value + (1 - momentum) * var


def batch_norm_variables(module: nn.Module, shape: tuple[int, ...],
                         use_scale_bias: bool = True, param_dtype: Dtype = jnp.float32):
    """:class:`BatchNorm`'s variables of ``shape`` ([C], or stacked layers'
    [..., C]), created in ``module`` under flax's names: running ``mean``/
    ``var`` (batch_stats Variables) and ``scale``/``bias`` (params, returned
    as float32; ones and zeros without ``use_scale_bias``)."""
    ra_mean = module.variable("batch_stats", "mean", jnp.zeros, shape, jnp.float32)
    ra_var = module.variable("batch_stats", "var", jnp.ones, shape, jnp.float32)
    if not use_scale_bias:
        return ra_mean, ra_var, jnp.ones(shape, jnp.float32), jnp.zeros(shape, jnp.float32)
    scale = module.param("scale", nn.initializers.ones, shape, param_dtype)
    bias = module.param("bias", nn.initializers.zeros, shape, param_dtype)
    return (ra_mean, ra_var, jnp.asarray(scale, jnp.float32),
            jnp.asarray(bias, jnp.float32))


def varying_like(param: jax.Array, x: jax.Array) -> jax.Array:
    """``param`` marked as varying over the mesh axes that ``x`` varies over.

    Inside ``shard_map`` a replicated parameter is invariant and the batch is
    not, so a gradient computed from the batch is per-device; a custom VJP
    must return it with the parameter's own type.  Casting first makes that
    type varying, and autodiff of the cast sums the per-device gradients over
    the axis, as it does for any replicated parameter used with the batch.
    Outside ``shard_map`` nothing varies and this returns ``param``.
    """
    axes = (jax.typeof(x).manual_axis_type.varying
            - jax.typeof(param).manual_axis_type.varying)
    return jax.lax.pcast(param, tuple(sorted(axes)), to="varying")


def _global_sum(value: jax.Array, axis_name: str | None) -> jax.Array:
    return value if axis_name is None else jax.lax.psum(value, axis_name)


def _masked_batch_norm_fwd(x, weights, scale, bias, epsilon, axis_name):
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    count = _global_sum(jnp.sum(jnp.broadcast_to(weights, x.shape[:-1] + (1,))),
                        axis_name)
    mean = _global_sum(jnp.sum(x32 * weights, axis=axes), axis_name) / count
    # Two passes rather than E[x^2] - E[x]^2: activations with a large mean
    # and small spread would otherwise lose the variance to rounding.
    var = _global_sum(jnp.sum(jnp.square(x32 - mean) * weights, axis=axes),
                      axis_name) / count
    rstd = jax.lax.rsqrt(var + epsilon)
    y = (x32 - mean) * rstd * scale + bias
    return (y, mean, var), (x, weights, mean, rstd, scale, count)


def _masked_batch_norm_bwd(epsilon, axis_name, residuals, cotangents):
    x, weights, mean, rstd, scale, count = residuals
    dy, dmean, dvar = cotangents
    x32 = x.astype(jnp.float32)
    xhat = (x32 - mean) * rstd
    axes = tuple(range(x.ndim - 1))
    dbias = jnp.sum(dy, axis=axes)
    dscale = jnp.sum(dy * xhat, axis=axes)
    # Gradients through the batch mean and variance, which every frame of the
    # global batch (valid or padded) reads: sums of dL/dxhat and
    # dL/dxhat * xhat over all replicas, plus the moments' own cotangents.
    sum_dxhat = _global_sum(dbias, axis_name) * scale
    sum_dxhat_xhat = _global_sum(dscale, axis_name) * scale
    share = weights / count        # d mean / dx at each position
    dx = (rstd * (dy * scale - share * (sum_dxhat + xhat * sum_dxhat_xhat))
          + share * (dmean + 2 * (x32 - mean) * dvar))
    return dx.astype(x.dtype), jnp.zeros_like(weights), dscale, dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def masked_batch_norm(x, weights, scale, bias, epsilon, axis_name):
    """Batch-normalises ``x`` [B, T, ..., C] with the moments of weighted
    positions: returns (y float32, mean [C], biased var [C]).

    ``weights`` (float32, broadcastable to x's shape with a last axis of 1)
    is 1 at valid positions and 0 at padding; with ``axis_name`` the sums and
    counts are over every replica.  The VJP is the closed form (two sums per
    channel and one elementwise pass), where autodiff of the two-pass moments
    took four sums over the activations and more passes: the backbone's
    BatchNorms are about a fifth of the train step on CPU.
    """
    return _masked_batch_norm_fwd(x, weights, scale, bias, epsilon, axis_name)[0]


masked_batch_norm.defvjp(_masked_batch_norm_fwd, _masked_batch_norm_bwd)


class CosineClassifier(nn.Module):
    """Cosine logits between unit-norm inputs and unit-norm class weights.

    [B, D] -> [B, num_classes] in [-1, 1], float32.  The additive-margin
    softmax loss subtracts the margin from the true class's cosine and scales;
    keeping both out of the module lets the same logits serve prediction and
    OOD scores.
    """
    num_classes: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (x.shape[-1], self.num_classes), self.param_dtype)
        return l2_normalize(x) @ l2_normalize(kernel, axis=0)
