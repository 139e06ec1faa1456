"""Dilated causal 1-D convolution whose backward pass is two matmuls.

For kernel ``W`` [k, C_in, C_out] and dilation ``d``, the causal convolution is
``y[t] = sum_j x[t - (k-1-j) d] @ W[j]`` (frames before the start read as 0).
Its transpose reads the output gradient ``g`` *ahead* by the same offsets, so
with ``G = [g[s + (k-1) d], ..., g[s + d], g[s]]`` (zero past the end; k C_out
channels):

* input gradient:  ``dx[s] = G[s] @ [W[0]; ...; W[k-1]]^T``
* kernel gradient: ``dW[j] = sum_{b,s} x[b, s]^T G[b, s, j-th block]``

Autodiff of ``lax.conv_general_dilated`` computes the kernel gradient as
another convolution that XLA:CPU runs in a different layout, so every layer
transposes its input and its output gradient first: in the fused train step
these transposes took about a fifth of the time on one core.  The matmul form
needs only the shifted copy ``G``, which both gradients share.  The forward
pass stays ``lax.conv_general_dilated``, so outputs are unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emodna_jax.models.layers import varying_like


def _read_ahead(g: jax.Array, offset: int) -> jax.Array:
    """``g[:, t + offset]`` for each t of [B, T, C], zero past the end."""
    if offset == 0:
        return g
    steps = g.shape[1]
    ahead = g[:, min(offset, steps):]
    return jnp.pad(ahead, ((0, 0), (0, steps - ahead.shape[1]), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def causal_conv(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Causal dilated conv: x [B, T, C_in], kernel [k, C_in, C_out] -> [B, T, C_out].

    Frame t sees t, t - d, ..., t - (k-1) d and never the future.
    """
    pad = (kernel.shape[0] - 1) * dilation
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(1,), padding=[(pad, 0)],
        rhs_dilation=(dilation,), dimension_numbers=("NWC", "WIO", "NWC"))


def _causal_conv_fwd(x, kernel, dilation):
    return causal_conv(x, kernel, dilation), (x, kernel)


def _causal_conv_bwd(dilation, residuals, g):
    x, kernel = residuals
    taps, c_in, c_out = kernel.shape
    ahead = jnp.concatenate(
        [_read_ahead(g, (taps - 1 - j) * dilation) for j in range(taps)],
        axis=-1)                                         # [B, T, k C_out]
    stacked = jnp.transpose(kernel, (0, 2, 1)).reshape(taps * c_out, c_in)
    dx = jnp.matmul(ahead, stacked, preferred_element_type=jnp.float32)
    # Sums over B x T frames: accumulate in float32 whatever the dtype.
    dkernel = jnp.einsum("bti,btj->ij", x, ahead,
                         preferred_element_type=jnp.float32)
    dkernel = dkernel.reshape(c_in, taps, c_out).transpose(1, 0, 2)
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


causal_conv.defvjp(_causal_conv_fwd, _causal_conv_bwd)


class CausalConv(nn.Module):
    """Flax layer for :func:`causal_conv`: [B, T, C_in] -> [B, T, features].

    Its parameters are those of ``nn.Conv(features, (kernel_size,),
    kernel_dilation=dilation, padding=[((kernel_size - 1) * dilation, 0)])``
    (``kernel`` [k, C_in, features], same initialiser, optional ``bias``), so
    checkpoints and initial values are interchangeable with that layer.
    """
    features: int
    kernel_size: int = 1
    dilation: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(),
            (self.kernel_size, x.shape[-1], self.features), self.param_dtype)
        bias = (self.param("bias", nn.initializers.zeros, (self.features,),
                           self.param_dtype) if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                                  dtype=self.dtype)
        y = causal_conv(x, varying_like(kernel, x), self.dilation)
        return y if bias is None else y + bias
