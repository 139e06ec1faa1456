"""Models: shapes, dtypes, padding invariance, masked and cross-replica BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emodna_jax.models import BACKBONES, EmoDNAModel
from emodna_jax.models.layers import (AttentiveStatisticsPooling, BatchNorm,
                                      downsample_mask, masked_batch_norm,
                                      masked_mean,
                                      masked_window_mean, reverse_within_length)

NUM_FEATURES = 16
SMALL_BACKBONES = {
    "tim": {"features": 8, "num_blocks": 3},
    "cnn": {"channels": (4, 8, 8), "attention_dim": 8},
}
# One utterance fills SHORT_T exactly, and SHORT_T and the other lengths are
# odd, so the CNN's pooling meets partial windows at the end of an utterance
# (floor pooling would drop a valid frame at SHORT_T but not at LONG_T).
# Split in two shards, the batch has 154 and 92 valid frames.
SHORT_T, LONG_T = 117, 200
LENGTHS = (SHORT_T, 37, 83, 9)


def small_model(backbone, **overrides):
    fields = dict(num_classes=4, num_corpora=3, backbone=backbone,
                  backbone_kwargs=SMALL_BACKBONES[backbone], projection_dim=16,
                  hidden_dim=16, dropout_rate=0.0)
    fields.update(overrides)
    return EmoDNAModel(**fields)


def utterances(lengths, seed=0, num_features=NUM_FEATURES):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, num_features)).astype(np.float32)
            for n in lengths]


def pad_batch(utts, steps, fill=None, seed=1):
    """Pads utterances to ``steps`` frames with zeros, or noise * ``fill``."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((len(utts), steps, utts[0].shape[1]), np.float32)
    if fill is not None:
        frames[:] = fill * rng.normal(size=frames.shape)
    mask = np.zeros((len(utts), steps), bool)
    for i, u in enumerate(utts):
        frames[i, :len(u)] = u
        mask[i, :len(u)] = True
    return jnp.asarray(frames), jnp.asarray(mask)


def random_variables(model, frames, mask, seed=0):
    """Variables of ``model`` with random values everywhere, without ``init``.

    Random rather than initial values: at init BatchNorm maps a zero frame to
    zero (zero bias, zero running mean), which would hide a missing re-zeroing
    of padded frames.  Only shapes are traced (``init`` compiles every
    initializer, seconds per model on CPU).  Kernels get variance 1/fan_in so
    activations stay O(1).
    """
    shapes = jax.eval_shape(functools.partial(model.init, train=False),
                            jax.random.key(0), frames, mask)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        noise = rng.normal(size=leaf.shape)
        if "kernel" in name:
            value = noise / np.sqrt(np.prod(leaf.shape[:-1]))
        elif "'var'" in name:
            value = 1 + 0.5 * rng.random(leaf.shape)
        elif "scale" in name:
            value = 1 + 0.3 * noise
        else:  # biases, running means, fusion logits
            value = 0.3 * noise
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnums=0)
def apply_eval(model, variables, frames, mask):
    return model.apply(variables, frames, mask, train=False)


@functools.partial(jax.jit, static_argnums=0)
def apply_train(model, variables, frames, mask, rng):
    return model.apply(variables, frames, mask, train=True,
                       row_keys=jax.random.split(rng, frames.shape[0]),
                       mutable=["batch_stats"])


def assert_trees_close(a, b, atol=1e-5):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(
        np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol,
        rtol=0), a, b)


# --- layers ---------------------------------------------------------------

def test_reverse_within_length_hand_worked():
    x = jnp.array([[1, 2, 3, 8, 9],
                   [1, 2, 3, 4, 5],
                   [7, 6, 6, 6, 6]], jnp.float32)[..., None]
    mask = jnp.arange(5)[None, :] < jnp.array([3, 5, 1])[:, None]
    got = reverse_within_length(x, mask)[..., 0]
    np.testing.assert_array_equal(got, [[3, 2, 1, 8, 9],
                                        [5, 4, 3, 2, 1],
                                        [7, 6, 6, 6, 6]])


def test_downsample_mask_keeps_partial_windows():
    mask = jnp.arange(7)[None, :] < jnp.array([7, 5, 1, 2])[:, None]
    got = downsample_mask(mask, 2)
    np.testing.assert_array_equal(got, [[1, 1, 1, 1], [1, 1, 1, 0],
                                        [1, 0, 0, 0], [1, 0, 0, 0]])


def test_masked_window_mean_matches_a_loop():
    utts = utterances((7, 5, 1, 16), num_features=3)
    frames, mask = pad_batch(utts, 16, fill=100.0)
    got = np.asarray(masked_window_mean(frames, mask, 4))
    assert got.shape == (4, 4, 3)
    for i, u in enumerate(utts):
        for w in range(4):
            window = u[4 * w:4 * w + 4]      # the valid frames of window w
            want = window.mean(0) if len(window) else np.zeros(3)
            np.testing.assert_allclose(got[i, w], want, atol=1e-5)


def test_masked_mean_uses_valid_frames_only():
    utts = utterances((5, 2, 9), num_features=3)
    frames, mask = pad_batch(utts, 9, fill=100.0)
    np.testing.assert_allclose(masked_mean(frames, mask),
                               [u.mean(0) for u in utts], atol=1e-5)


def test_attentive_pooling_ignores_padded_frames():
    utts = utterances((6, 11), num_features=4)
    frames, mask = pad_batch(utts, 11, fill=50.0)
    pool = AttentiveStatisticsPooling(hidden_dim=5)
    variables = jax.jit(pool.init)(jax.random.key(0), frames, mask)
    apply = jax.jit(pool.apply)
    got = apply(variables, frames, mask)
    assert got.shape == (2, 8)
    for i, u in enumerate(utts):
        alone = apply(variables, u[None], jnp.ones((1, len(u)), bool))
        np.testing.assert_allclose(got[i], alone[0], atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 10, 4), (3, 10, 5, 4)])
def test_batchnorm_statistics_are_those_of_valid_frames(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(3.0 + rng.normal(size=shape), jnp.float32)
    mask = jnp.arange(10)[None, :] < jnp.array([10, 4, 1])[:, None]
    bn = BatchNorm(momentum=0.9)
    variables = bn.init(jax.random.key(0), x, mask, train=True)
    y, updates = bn.apply(variables, x, mask, train=True,
                          mutable=["batch_stats"])
    valid = np.asarray(x)[np.asarray(mask)].reshape(-1, shape[-1])
    np.testing.assert_allclose(updates["batch_stats"]["mean"],
                               0.1 * valid.mean(0), atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["var"],
                               0.9 + 0.1 * valid.var(0), atol=1e-5)
    normalised = np.asarray(y)[np.asarray(mask)].reshape(-1, shape[-1])
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-3)


def test_batchnorm_across_replicas_equals_whole_batch():
    # Shards hold 14 and 3 valid frames: a pmean of per-shard means would
    # weight them equally and fail this.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 8, 3)) + np.arange(4)[:, None, None],
                    jnp.float32)
    mask = jnp.arange(8)[None, :] < jnp.array([8, 6, 2, 1])[:, None]
    whole = BatchNorm()
    variables = whole.init(jax.random.key(0), x, mask, train=True)
    want_y, want = whole.apply(variables, x, mask, train=True,
                               mutable=["batch_stats"])

    def shard_step(xs, ms):
        return BatchNorm(axis_name="batch").apply(
            variables, xs, ms, train=True, mutable=["batch_stats"])

    got_y, got = jax.vmap(shard_step, axis_name="batch")(
        x.reshape(2, 2, 8, 3), mask.reshape(2, 2, 8))
    for shard in range(2):
        assert_trees_close(jax.tree.map(lambda s: s[shard], got), want)
    np.testing.assert_allclose(got_y.reshape(want_y.shape), want_y, atol=1e-5)
    # Evaluation reads the running statistics: no named axis is needed.
    np.testing.assert_array_equal(
        BatchNorm(axis_name="batch").apply(variables, x, mask, train=False),
        whole.apply(variables, x, mask, train=False))


def _reference_batch_norm(x, weights, scale, bias, epsilon=1e-5):
    """The same arithmetic in plain jnp, for autodiff to differentiate."""
    axes = tuple(range(x.ndim - 1))
    count = jnp.sum(jnp.broadcast_to(weights, x.shape[:-1] + (1,)))
    mean = jnp.sum(x * weights, axis=axes) / count
    var = jnp.sum(jnp.square(x - mean) * weights, axis=axes) / count
    y = (x - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
    return y, mean, var


@pytest.mark.parametrize("shape", [(3, 10, 4), (3, 10, 5, 4)])
def test_batchnorm_gradient_is_autodiff_of_the_masked_moments(shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(3.0 + rng.normal(size=shape), jnp.float32)
    mask = jnp.arange(10)[None, :] < jnp.array([10, 4, 1])[:, None]
    weights = mask.astype(jnp.float32).reshape(mask.shape + (1,) * (len(shape) - 2))
    scale = jnp.asarray(rng.uniform(0.5, 2, size=shape[-1]), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    # A loss of y at every position (padded ones too) and of the moments.
    g_y, g_mean, g_var = (jnp.asarray(rng.normal(size=s), jnp.float32)
                          for s in (shape, shape[-1:], shape[-1:]))

    def loss(norm):
        def f(x, scale, bias):
            y, mean, var = norm(x, weights, scale, bias)
            return jnp.sum(y * g_y) + jnp.sum(mean * g_mean) + jnp.sum(var * g_var)
        return jax.grad(f, (0, 1, 2))(x, scale, bias)

    got = loss(lambda *a: masked_batch_norm(*a, 1e-5, None))
    want = loss(_reference_batch_norm)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_batchnorm_gradients_across_replicas_equal_whole_batch():
    # Parameters replicated, batch split over 4 devices with unequal valid
    # frames: the gradients must be those of the whole batch.
    devices = 4
    mesh = jax.make_mesh((devices,), ("batch",),
                         devices=jax.devices()[:devices])
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(8, 6, 3)) + np.arange(8)[:, None, None],
                    jnp.float32)
    mask = jnp.arange(6)[None, :] < jnp.array([6, 5, 1, 2, 6, 3, 1, 4])[:, None]
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    variables = BatchNorm().init(jax.random.key(0), x, mask, train=True)
    params = {"params": {"scale": jnp.asarray([0.5, 1.0, 2.0]),
                         "bias": jnp.asarray([0.1, -0.2, 0.3])}}

    def grads(bn, x, mask, g):
        def f(params, x):
            y, _ = bn.apply({**variables, **params}, x, mask, train=True,
                            mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y) * g)
        return jax.grad(f, (0, 1))(params, x)

    want = grads(BatchNorm(), x, mask, g)
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    got = jax.jit(jax.shard_map(
        lambda x, m, g: grads(BatchNorm(axis_name="batch"), x, m, g), mesh=mesh,
        in_specs=(jax.sharding.PartitionSpec("batch"),) * 3,
        out_specs=(jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("batch"))))(
            *(jax.device_put(a, shard) for a in (x, mask, g)))
    assert_trees_close(got, want)


# --- EmoDNAModel ----------------------------------------------------------

@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("classifier", ["linear", "am"])
def test_output_shapes_dtypes_and_norms(backbone, classifier):
    model = small_model(backbone, classifier=classifier)
    frames, mask = pad_batch(utterances(LENGTHS), SHORT_T)
    variables = random_variables(model, frames, mask)
    out = apply_eval(model, variables, frames, mask)
    # cnn: mean and std of 8 channels x 2 bands (16 bins pooled 3 times).
    h_dim = {"tim": 8, "cnn": 2 * 8 * 2}[backbone]
    want = {"h": (4, h_dim), "e": (4, 16), "z_e": (4, 16), "z_c": (4, 16),
            "logits": (4, 4), "corpus_logits": (4, 3)}
    assert {k: v.shape for k, v in out.items()} == want
    assert all(v.dtype == jnp.float32 for v in out.values())
    for key in ("z_e", "z_c"):
        np.testing.assert_allclose(jnp.linalg.norm(out[key], axis=-1), 1,
                                   atol=1e-5)
    logits = np.asarray(out["logits"])
    if classifier == "am":
        assert np.all(np.abs(logits) <= 1 + 1e-6)
        z_w = variables["params"]["classifier"]["kernel"]
        z_w = z_w / jnp.linalg.norm(z_w, axis=0)
        np.testing.assert_allclose(logits, out["z_e"] @ z_w, atol=1e-5)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_eval_outputs_do_not_depend_on_padding(backbone):
    model = small_model(backbone)
    utts = utterances(LENGTHS)
    short = pad_batch(utts, SHORT_T)
    variables = random_variables(model, *short)
    want = apply_eval(model, variables, *short)
    assert_trees_close(apply_eval(model, variables, *pad_batch(utts, LONG_T)),
                       want)
    # Garbage where the padding is: the model must zero it itself.
    for steps in (SHORT_T, LONG_T):
        garbage = pad_batch(utts, steps, fill=10.0)
        assert_trees_close(apply_eval(model, variables, *garbage), want)


def test_cnn_tracks_bypass_the_convolutions():
    """Per-frame tracks (pitch, energy) reach h as their own pooled level and
    range: a track constant over an utterance comes out as exactly that
    constant (the attention weights sum to 1) with zero spread, and the
    tracks are as padding-proof as the bands."""
    num_tracks, channels = 3, SMALL_BACKBONES["cnn"]["channels"]
    model = small_model("cnn", backbone_kwargs=dict(SMALL_BACKBONES["cnn"],
                                                    num_tracks=num_tracks))
    utts = utterances(LENGTHS)
    levels = np.random.default_rng(3).normal(size=(len(utts), num_tracks))
    for u, level in zip(utts, levels):
        u[:, -num_tracks:] = level
    frames, mask = pad_batch(utts, SHORT_T)
    variables = random_variables(model, frames, mask)
    out = apply_eval(model, variables, frames, mask)
    # 13 bands pooled 3 times leave 2: the map gives 2 x 8 features a frame.
    maps = -(-(NUM_FEATURES - num_tracks) // 2 ** len(channels)) * channels[-1]
    width = maps + num_tracks
    assert out["h"].shape == (len(utts), 2 * width)
    np.testing.assert_allclose(out["h"][:, maps:width], levels, atol=1e-5)
    np.testing.assert_allclose(out["h"][:, width + maps:], 0, atol=1e-2)
    assert_trees_close(apply_eval(model, variables,
                                  *pad_batch(utts, LONG_T, fill=10.0)), out)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_train_batch_statistics_ignore_padding(backbone):
    model = small_model(backbone)
    utts = utterances(LENGTHS)
    short = pad_batch(utts, SHORT_T)
    variables = random_variables(model, *short)
    rng = jax.random.key(7)
    want_out, want = apply_train(model, variables, *short, rng)
    got_out, got = apply_train(model, variables,
                               *pad_batch(utts, LONG_T, fill=10.0), rng)
    assert_trees_close(got["batch_stats"], want["batch_stats"])
    assert_trees_close(got_out, want_out)
    # And the statistics did move: the comparison is not between init values.
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                         want["batch_stats"], variables["batch_stats"])
    assert min(jax.tree.leaves(moved)) > 1e-4


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_eval_samples_are_independent(backbone):
    model = small_model(backbone)
    frames, mask = pad_batch(utterances(LENGTHS), SHORT_T)
    variables = random_variables(model, frames, mask)
    want = apply_eval(model, variables, frames, mask)
    other = utterances(LENGTHS, seed=5)
    changed = pad_batch([utterances(LENGTHS)[0], other[1][:50],
                         *utterances(LENGTHS)[2:]], SHORT_T)
    got = apply_eval(model, variables, *changed)
    for i in (0, 2, 3):
        assert_trees_close(jax.tree.map(lambda a: a[i], got),
                           jax.tree.map(lambda a: a[i], want))
    assert not np.allclose(got["logits"][1], want["logits"][1], atol=1e-3)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_bfloat16_compute_keeps_float32_params(backbone):
    utts = utterances(LENGTHS)
    frames, mask = pad_batch(utts, SHORT_T)
    model16 = small_model(backbone, dtype=jnp.bfloat16)
    variables = random_variables(model16, frames, mask)
    dtypes = {x.dtype for x in jax.tree.leaves(variables)}
    assert dtypes == {jnp.dtype(jnp.float32)}
    rng = jax.random.key(0)
    out, updates = apply_train(model16, variables, frames, mask, rng)
    assert out["h"].dtype == out["e"].dtype == jnp.bfloat16
    for key in ("z_e", "z_c", "logits", "corpus_logits"):
        assert out[key].dtype == jnp.float32
        assert np.all(np.isfinite(out[key]))
    assert {x.dtype for x in jax.tree.leaves(updates)} == {
        jnp.dtype(jnp.float32)}
    # Same weights in float32 give nearly the same embedding.
    out32, _ = apply_train(small_model(backbone), variables, frames, mask, rng)
    cosine = jnp.sum(out32["z_e"] * out["z_e"], axis=-1)
    assert np.all(cosine > 0.95), cosine


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_cross_replica_batchnorm_matches_whole_batch(backbone):
    # The shards hold unequal numbers of valid frames (see LENGTHS), so the
    # mean of per-shard statistics differs from the whole batch's.
    frames, mask = pad_batch(utterances(LENGTHS), SHORT_T)
    whole = small_model(backbone)
    sharded = small_model(backbone, bn_axis_name="batch")
    variables = random_variables(whole, frames, mask)
    want_out, want = apply_train(whole, variables, frames, mask,
                                 jax.random.key(0))  # dropout off

    def shard_step(f, m):
        return sharded.apply(variables, f, m, train=True,
                             mutable=["batch_stats"])

    got_out, got = jax.jit(jax.vmap(shard_step, axis_name="batch"))(
        frames.reshape(2, 2, SHORT_T, -1), mask.reshape(2, 2, SHORT_T))
    for shard in range(2):
        assert_trees_close(jax.tree.map(lambda s: s[shard], got), want)
    assert_trees_close(jax.tree.map(lambda a: a.reshape(4, -1), got_out),
                       want_out)


def test_dropout_follows_the_dropout_rng():
    model = small_model("cnn", dropout_rate=0.5)
    frames, mask = pad_batch(utterances(LENGTHS), SHORT_T)
    variables = random_variables(model, frames, mask)
    first, _ = apply_train(model, variables, frames, mask, jax.random.key(0))
    again, _ = apply_train(model, variables, frames, mask, jax.random.key(0))
    other, _ = apply_train(model, variables, frames, mask, jax.random.key(1))
    np.testing.assert_array_equal(first["logits"], again["logits"])
    assert not np.allclose(first["logits"], other["logits"], atol=1e-3)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_a_rows_dropout_follows_its_key_not_its_place_in_the_batch(backbone):
    """Rows permuted with their keys: every output permutes alike (BatchNorm's
    batch statistics do not see the order), so a row's masks are its own."""
    model = small_model(backbone, dropout_rate=0.5)
    frames, mask = pad_batch(utterances(LENGTHS), SHORT_T)
    variables = random_variables(model, frames, mask)
    keys = jax.random.split(jax.random.key(3), frames.shape[0])
    order = np.arange(frames.shape[0])[::-1]
    call = jax.jit(lambda f, m, k: model.apply(variables, f, m, train=True, row_keys=k,
                                               mutable=["batch_stats"])[0]["logits"])
    np.testing.assert_allclose(call(frames[order], mask[order], keys[order]),
                               np.asarray(call(frames, mask, keys))[order], atol=1e-5)
    # And the keys are what the masks come from.
    changed = keys.at[0].set(jax.random.key(99))
    assert np.abs(np.asarray(call(frames, mask, changed)) - call(frames, mask, keys)
                  )[0].max() > 1e-3
    with pytest.raises(ValueError, match="needs row_keys"):
        model.apply(variables, frames, mask, train=True, mutable=["batch_stats"])


def test_invalid_configurations_are_rejected():
    frames, mask = pad_batch(utterances((5,)), 5)
    for bad, message in ((dict(backbone="lstm"), "backbone must be one of"),
                         (dict(classifier="softmax"), "classifier must be one of"),
                         (dict(num_corpora=1), "num_corpora must be >= 2, got 1"),
                         (dict(backbone_kwargs={"features": 8, "dtype": jnp.float16}),
                          r"backbone_kwargs may not set \['dtype'\]")):
        fields = dict(num_classes=4, backbone="tim",
                      backbone_kwargs={"features": 8, "num_blocks": 1})
        fields.update(bad)
        with pytest.raises(ValueError, match=message):
            EmoDNAModel(**fields).init(jax.random.key(0), frames, mask,
                                       train=False)
