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
their own kernels, as one call with a leading group axis, where a batched
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
    """``x[..., t - offset, :]`` for each frame t of [..., T, C] (ahead for a
    negative offset), zero where that falls outside the utterance."""
    if offset == 0:
        return x
    # Pad, then slice: T may be symbolic (jax.export), so no arithmetic on it.
    lead = [(0, 0)] * (x.ndim - 2)
    if offset > 0:
        return jnp.pad(x, lead + [(offset, 0), (0, 0)])[..., :x.shape[-2], :]
    return jnp.pad(x, lead + [(0, -offset), (0, 0)])[..., -offset:, :]


def _taps(x: jax.Array, dilation: int, taps: int, direction: int) -> jax.Array:
    """The k shifted copies side by side, [..., T, k C]: behind (direction 1)
    for the convolution, ahead (-1) for its transpose."""
    return jnp.concatenate(
        [_shifted(x, direction * (taps - 1 - j) * dilation) for j in range(taps)],
        axis=-1)


def _matmul(x: jax.Array, w: jax.Array, **kwargs) -> jax.Array:
    """[G?, B, T, I] @ [G?, I, O] -> [G?, B, T, O], as ``lax.dot_general``
    with the optional group axis G as a batch dimension.  Not ``jnp.matmul``
    or ``vmap``: converters such as jax2onnx replace jnp functions with
    versions whose batching rules fail."""
    grouped = ((0,), (0,)) if w.ndim == 3 else ((), ())
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (w.ndim - 2,)), grouped),
                               **kwargs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def causal_conv(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Causal dilated conv: x [B, T, C_in], kernel [k, C_in, C_out] -> [B, T, C_out];
    or, with a leading group axis G (TIM-Net's directions, each with its own
    kernel), x [G, B, T, C_in] and kernel [G, k, C_in, C_out].

    Frame t sees t, t - d, ..., t - (k-1) d and never the future.
    """
    *group, taps, c_in, c_out = kernel.shape
    return _matmul(_taps(x, dilation, taps, 1),
                   kernel.reshape(*group, taps * c_in, c_out))


def _causal_conv_fwd(x, kernel, dilation):
    return causal_conv(x, kernel, dilation), (x, kernel)


def _causal_conv_bwd(dilation, residuals, g):
    x, kernel = residuals
    *group, taps, c_in, c_out = kernel.shape
    ahead = _taps(g, dilation, taps, -1)                 # [G?, B, T, k C_out]
    stacked = jnp.swapaxes(kernel, -1, -2).reshape(*group, taps * c_out, c_in)
    dx = _matmul(ahead, stacked, preferred_element_type=jnp.float32)
    # Sums over B x T frames: accumulate in float32 whatever the dtype.
    g_axes = (0,) if group else ()
    frames = tuple(range(len(group), len(group) + 2))
    dkernel = jax.lax.dot_general(x, ahead, ((frames, frames), (g_axes, g_axes)),
                                  preferred_element_type=jnp.float32)   # [G?, I, k O]
    dkernel = jnp.swapaxes(dkernel.reshape(*group, c_in, taps, c_out), -3, -2)
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
