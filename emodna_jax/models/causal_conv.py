"""Dilated causal 1-D convolution written as matmuls, forward and backward.

For kernel ``W`` [k, C_in, C_out] and dilation ``d``, the causal convolution is
``y[t] = sum_j x[t - (k-1-j) d] @ W[j]`` (frames before the start read as 0),
that is ``y = X @ [W[0]; ...; W[k-1]]`` with ``X[t] = [x[t - (k-1) d], ...,
x[t]]`` (k C_in channels).  Its transpose reads the output gradient ``g``
*ahead* by the same offsets, so with ``G = [g[s + (k-1) d], ..., g[s]]``:

* input gradient:  ``dx[s] = G[s] @ [W[0]^T, ..., W[k-1]^T]^T`` (k C_out rows)
* kernel gradient: ``dW[j] = sum_{b,s} x[b, s]^T G[b, s, j-th block]``

Why matmuls: autodiff of ``lax.conv_general_dilated`` computes the kernel
gradient as another convolution that XLA:CPU runs in a different layout, so
every layer transposed its input and output gradient first (a fifth of the
fused step on one core); and TIM-Net runs its two directions, which have
their own kernels, as one batched call (``jax.vmap``), where a batched
convolution would become a grouped one, 15x slower on XLA:CPU, while a
batched matmul is one library call.  Only ``x`` is kept for the backward
pass, not its k shifted copies.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _shifted(x: jax.Array, offset: int) -> jax.Array:
    """``x[:, t - offset]`` for each t of [B, T, C] (ahead for a negative
    offset), zero where that falls outside the utterance."""
    steps = x.shape[1]
    if offset == 0:
        return x
    if offset > 0:
        kept = x[:, :max(steps - offset, 0)]
        return jnp.pad(kept, ((0, 0), (steps - kept.shape[1], 0), (0, 0)))
    kept = x[:, min(-offset, steps):]
    return jnp.pad(kept, ((0, 0), (0, steps - kept.shape[1]), (0, 0)))


def _taps(x: jax.Array, dilation: int, taps: int, direction: int) -> jax.Array:
    """The k shifted copies side by side, [B, T, k C]: behind (direction 1)
    for the convolution, ahead (-1) for its transpose."""
    return jnp.concatenate(
        [_shifted(x, direction * (taps - 1 - j) * dilation) for j in range(taps)],
        axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def causal_conv(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Causal dilated conv: x [B, T, C_in], kernel [k, C_in, C_out] -> [B, T, C_out].

    Frame t sees t, t - d, ..., t - (k-1) d and never the future.
    """
    taps, c_in, c_out = kernel.shape
    return jnp.matmul(_taps(x, dilation, taps, 1), kernel.reshape(taps * c_in, c_out))


def _causal_conv_fwd(x, kernel, dilation):
    return causal_conv(x, kernel, dilation), (x, kernel)


def _causal_conv_bwd(dilation, residuals, g):
    x, kernel = residuals
    taps, c_in, c_out = kernel.shape
    ahead = _taps(g, dilation, taps, -1)                 # [B, T, k C_out]
    stacked = jnp.transpose(kernel, (0, 2, 1)).reshape(taps * c_out, c_in)
    dx = jnp.matmul(ahead, stacked, preferred_element_type=jnp.float32)
    # Sums over B x T frames: accumulate in float32 whatever the dtype.
    dkernel = jnp.einsum("bti,btj->ij", x, ahead,
                         preferred_element_type=jnp.float32)
    dkernel = dkernel.reshape(c_in, taps, c_out).transpose(1, 0, 2)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


causal_conv.defvjp(_causal_conv_fwd, _causal_conv_bwd)


def conv_variables(module: nn.Module, kernel_shape: tuple[int, ...],
                   use_bias: bool, param_dtype: Any = jnp.float32):
    """A causal conv's ``kernel`` [..., k, C_in, C_out] (and ``bias`` [...,
    C_out], or None), created in ``module`` under ``nn.Conv``'s names and
    initialisers; leading axes stack layers, each initialised as one
    ``nn.Conv`` kernel (LeCun normal over its own k C_in inputs)."""
    stacked = tuple(range(len(kernel_shape) - 3))
    kernel = module.param("kernel", nn.initializers.lecun_normal(batch_axis=stacked),
                          kernel_shape, param_dtype)
    bias = (module.param("bias", nn.initializers.zeros,
                         kernel_shape[:-3] + kernel_shape[-1:], param_dtype)
            if use_bias else None)
    return kernel, bias
