"""The causal convolution and its matmul passes, against numpy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from emodna_jax.models.causal_conv import causal_conv
from emodna_jax.models.layers import varying_like

# (kernel taps, dilation, frames): a dilation as long as the utterance, and one
# longer, leave some taps reading only the zeros before the start.
CASES = [(2, 1, 12), (2, 4, 12), (3, 2, 11), (1, 1, 5), (2, 12, 12), (2, 16, 12)]


def numpy_conv(x, w, d):
    """y[b, t] = sum_j x[b, t - (k-1-j) d] @ w[j], frames before 0 are zero."""
    k = w.shape[0]
    y = np.zeros(x.shape[:2] + (w.shape[-1],))
    for t in range(x.shape[1]):
        for j in range(k):
            s = t - (k - 1 - j) * d
            if s >= 0:
                y[:, t] += x[:, s] @ w[j]
    return y


def numpy_grads(x, w, d, g):
    """The adjoint of numpy_conv, written as the same loop run backwards."""
    k = w.shape[0]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for t in range(x.shape[1]):
        for j in range(k):
            s = t - (k - 1 - j) * d
            if s >= 0:
                dx[:, s] += g[:, t] @ w[j].T
                dw[j] += x[:, s].T @ g[:, t]
    return dx, dw


def random_inputs(k, t, seed=0, batch=3, c_in=4, c_out=5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, t, c_in)), rng.normal(size=(k, c_in, c_out)),
            rng.normal(size=(batch, t, c_out)))


@pytest.mark.parametrize("k,d,t", CASES)
def test_values_and_gradients_match_numpy_loops(k, d, t):
    x, w, g = random_inputs(k, t)
    y, vjp = jax.vjp(lambda x, w: causal_conv(x, w, d),
                     jnp.float32(x), jnp.float32(w))
    dx, dw = vjp(jnp.float32(g))
    want_dx, want_dw = numpy_grads(x, w, d, g)
    np.testing.assert_allclose(y, numpy_conv(x, w, d), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-5)


def test_both_directions_at_once_equal_each_alone():
    # TIM-Net runs its two directions' kernels as one grouped call.
    x, w, g = random_inputs(2, 12)
    x2 = np.stack([x, x[:, ::-1]]); w2 = np.stack([w, -0.5 * w])
    both, vjp = jax.vjp(lambda x, w: causal_conv(x, w, 4), jnp.float32(x2), jnp.float32(w2))
    dx, dw = vjp(jnp.float32(np.stack([g, 2 * g])))
    for d in range(2):
        np.testing.assert_allclose(both[d], numpy_conv(x2[d], w2[d], 4), rtol=1e-5, atol=1e-5)
        want_dx, want_dw = numpy_grads(x2[d], w2[d], 4, (1 + d) * g)
        np.testing.assert_allclose(dx[d], want_dx, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dw[d], want_dw, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_their_dtypes():
    x = jax.random.normal(jax.random.key(1), (2, 9, 4), jnp.bfloat16)
    w = jax.random.normal(jax.random.key(0), (2, 4, 5), jnp.float32)
    dw, dx = jax.grad(
        lambda w, x: jnp.sum(causal_conv(x, w.astype(x.dtype), 2).astype(jnp.float32)),
        (0, 1))(w, x)
    assert dx.dtype == jnp.bfloat16
    assert dw.dtype == jnp.float32


def test_kernel_gradient_under_shard_map_is_the_whole_batch_gradient():
    # The kernel is replicated and the batch split: each device's gradient is
    # of its own rows, and with the kernel cast to varying (as TIM-Net does)
    # autodiff sums them, not returning one device's share.
    devices = jax.device_count()
    mesh = jax.make_mesh((devices,), ("batch",))
    x, w, g = random_inputs(2, 10, batch=2 * devices)
    x, w, g = jnp.float32(x), jnp.float32(w), jnp.float32(g)
    params = {"kernel": w}

    def loss(params, x):
        y = causal_conv(x, varying_like(params["kernel"], x), 3)
        return jnp.sum(y * g_shard(x))

    def g_shard(x):  # this device's rows of g
        index = jax.lax.axis_index("batch")
        return jax.lax.dynamic_slice_in_dim(g, index * x.shape[0], x.shape[0])

    sharded = jax.jit(jax.shard_map(jax.grad(loss), mesh=mesh,
                                    in_specs=(P(), P("batch")), out_specs=P()))
    got = sharded(params, jax.device_put(x, NamedSharding(mesh, P("batch"))))
    _, want = numpy_grads(np.asarray(x, np.float64), np.asarray(w, np.float64),
                          3, np.asarray(g, np.float64))
    np.testing.assert_allclose(got["kernel"], want, rtol=1e-5, atol=1e-4)
