"""TIM-Net's stacked layout computes the two-stream network it stands for.

The reference below is TIM-Net written the plain way, with flax's own
``nn.Conv`` and one module per direction and block (the layout before the
weights were stacked).  Given the same weights, stacked [block, direction,
...], the two must agree in training (outputs, BatchNorm statistics,
gradients, with dropout drawn from the same row noise) and in evaluation.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodna_jax.models.layers import (BatchNorm, masked_mean,
                                      reverse_within_length, zero_padding)
from emodna_jax.models.row_noise import RowNoise
from emodna_jax.models.tim import TIMNet

DIRECTIONS = ("forward", "backward")
B, T, F, C, BLOCKS, RATE = 4, 30, 7, 8, 3, 0.3


class ReferenceTIMNet(nn.Module):
    features: int
    num_blocks: int
    rate: float

    @nn.compact
    def __call__(self, frames, mask, *, train, noise=None):
        x = zero_padding(frames, mask)
        streams = {"forward": x, "backward": reverse_within_length(x, mask)}
        for d in DIRECTIONS:
            streams[d] = zero_padding(
                nn.Conv(self.features, (1,), name=f"{d}_input")(streams[d]), mask)
        scales = []
        for k in range(self.num_blocks):
            for d in DIRECTIONS:
                x, y = streams[d], streams[d]
                for i in range(2):
                    y = nn.Conv(self.features, (2,), kernel_dilation=(2 ** k,),
                                padding=[(2 ** k, 0)], use_bias=False,
                                name=f"{d}_block{k}_conv{i}")(y)
                    y = nn.relu(BatchNorm(name=f"{d}_block{k}_bn{i}")(y, mask, train=train))
                    if noise is not None:
                        y = noise.dropout(y, self.rate, broadcast_dims=(1,))
                streams[d] = zero_padding(x * jax.nn.sigmoid(y), mask)
            scales.append(masked_mean(streams["forward"] + streams["backward"], mask))
        logits = self.param("fusion_logits", nn.initializers.zeros, (self.num_blocks,))
        return jnp.einsum("nbc,n->bc", jnp.stack(scales), jax.nn.softmax(logits))


def stacked(tree):
    """The reference's variables in TIMNet's layout."""
    out = {}
    for collection, t in tree.items():
        o = {}
        if collection == "params":
            o["input"] = {n: jnp.stack([t[f"{d}_input"][n] for d in DIRECTIONS])
                          for n in ("kernel", "bias")}
            o["fusion_logits"] = t["fusion_logits"]
        names = ("scale", "bias") if collection == "params" else ("mean", "var")
        for i in range(2):
            if collection == "params":
                o[f"blocks_conv{i}"] = {"kernel": jnp.stack([jnp.stack(
                    [t[f"{d}_block{k}_conv{i}"]["kernel"] for d in DIRECTIONS])
                    for k in range(BLOCKS)])}
            o[f"blocks_bn{i}"] = {n: jnp.stack([jnp.stack(
                [t[f"{d}_block{k}_bn{i}"][n] for d in DIRECTIONS])
                for k in range(BLOCKS)]) for n in names}
        out[collection] = o
    return out


@pytest.fixture(scope="module")
def setup():
    frames = jax.random.normal(jax.random.key(1), (B, T, F))
    mask = jnp.arange(T)[None] < jnp.array([T, 12, 25, 3])[:, None]
    reference = ReferenceTIMNet(C, BLOCKS, RATE)
    # Jitted, here and below: op by op, these small models take a minute.
    ref_vars = jax.jit(reference.init, static_argnames="train")(
        jax.random.key(0), frames, mask, train=False)
    # Non-trivial BatchNorm statistics and scales, so evaluation tests them.
    ref_vars = jax.tree.map(
        lambda a: a + 0.1 * jax.random.uniform(jax.random.key(a.size), a.shape), ref_vars)
    return frames, mask, reference, ref_vars


@functools.partial(jax.jit, static_argnums=0)
def run(model, variables, frames, mask):
    keys = jax.random.split(jax.random.key(5), B)
    units = BLOCKS * 2 * 2 * C

    def loss(params, frames):
        h, updates = model.apply({**variables, "params": params}, frames, mask,
                                 train=True, noise=RowNoise(keys, units),
                                 mutable=["batch_stats"])
        return jnp.sum(jnp.sin(3 * h)), (h, updates["batch_stats"])

    (_, (h, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], frames)
    return h, stats, grads, model.apply(variables, frames, mask, train=False)


def test_stacked_layout_equals_the_two_stream_network(setup):
    frames, mask, reference, ref_vars = setup
    model = TIMNet(features=C, num_blocks=BLOCKS, dropout_rate=RATE)
    variables = stacked(ref_vars)
    assert (jax.tree.map(jnp.shape, variables)
            == jax.tree.map(jnp.shape, jax.eval_shape(
                lambda: model.init(jax.random.key(0), frames, mask, train=False))))
    h, stats, (dparams, dframes), h_eval = run(model, variables, frames, mask)
    ref_h, ref_stats, (ref_dparams, ref_dframes), ref_eval = run(
        reference, ref_vars, frames, mask)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # noqa: E731
    close(h, ref_h)
    close(h_eval, ref_eval)
    close(dframes, ref_dframes)
    jax.tree.map(close, stats, stacked({"batch_stats": ref_stats})["batch_stats"])
    jax.tree.map(close, dparams, stacked({"params": ref_dparams})["params"])
    assert float(jnp.max(jnp.abs(h_eval - h))) > 1e-3   # dropout and BN modes acted


def test_each_stacked_kernel_is_initialised_as_one_conv():
    # LeCun normal over each kernel's own k * C_in inputs, not the stack's.
    model = TIMNet(features=64, num_blocks=5)
    params = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), jnp.ones((2, 10, 7)), jnp.ones((2, 10), bool),
        train=False)["params"]
    kernel = params["blocks_conv0"]["kernel"]                  # [5, 2, 2, 64, 64]
    np.testing.assert_allclose(np.std(kernel), 1 / np.sqrt(2 * 64), rtol=0.03)
    assert np.std(params["input"]["kernel"]) == pytest.approx(1 / np.sqrt(7), rel=0.05)
    # Each block and direction draws its own values.
    assert not np.allclose(kernel[0, 0], kernel[1, 0])
    assert not np.allclose(kernel[0, 0], kernel[0, 1])
