"""The fused step: device-count invariance (with cluster labels too), shard_map == pmap, static loss removal.

Needs 8 devices: run with XLA_FLAGS=--xla_force_host_platform_device_count=8
(as .ci/run and the README's test command do).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from emodna_jax import augment as augment_lib
from emodna_jax import objective as objective_lib
from tests.conftest import objective_settings
from emodna_jax import step as step_lib
from emodna_jax.models import EmoDNAModel

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")

NUM_CLASSES, T, F, BATCH = 3, 24, 8, 16


def make_model():
    return EmoDNAModel(num_classes=NUM_CLASSES, backbone="tim",
                       backbone_kwargs={"features": 8, "num_blocks": 2},
                       projection_dim=8, hidden_dim=16, dropout_rate=0.0,
                       bn_axis_name=step_lib.AXIS)


def objective_config(**weights):
    base = dict(w_cor=0.1, w_cd=0.5, w_ca=1.0, w_mmd=1.0, threshold_momentum=0.9)
    base.update(weights)
    return objective_settings(NUM_CLASSES, 10, **base)


def make_batches(num_steps, seed=0):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num_steps):
        batch = {}
        for side in ("src", "tgt"):
            lengths = rng.integers(5, T + 1, size=BATCH)  # varied padding per device
            batch[f"{side}_frames"] = rng.standard_normal((BATCH, T, F)).astype(np.float32)
            batch[f"{side}_mask"] = np.arange(T)[None] < lengths[:, None]
        batch["src_label"] = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
        batches.append(batch)
    return batches


def initial_state(model, tx, adapt=None):
    variables = model.init(jax.random.key(0), jnp.zeros((2, T, F)),
                           jnp.ones((2, T), bool), train=False)
    return step_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]),
        adapt=adapt or objective_lib.AdaptState.create(NUM_CLASSES, 8),
        rng=jax.random.key_data(jax.random.key(1)))


def run(mode, num_devices, cfg, batches, strong_augment=None, adapt=None):
    model, tx = make_model(), optax.adam(1e-2)
    mesh = jax.make_mesh((num_devices,), (step_lib.AXIS,),
                         devices=jax.devices()[:num_devices])
    parallel = step_lib.Parallel(mode, mesh)
    train_step = parallel.compile_train(step_lib.make_train_step(
        model, tx, cfg, axis_name=step_lib.AXIS,
        sum_gradients=parallel.sum_gradients, strong_augment=strong_augment))
    state = parallel.put_replicated(initial_state(model, tx, adapt))
    history = []
    for batch in batches:
        state, metrics = train_step(state, parallel.put_batch(batch))
        history.append(dict(parallel.get_metrics(metrics),
                            params=parallel.get_replicated(state.params)))
    return parallel.get_replicated(state), history


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def reference():
    batches = make_batches(3)
    return batches, run("shard_map", 1, objective_config(), batches)


@pytest.mark.parametrize("mode, num_devices", [("shard_map", 8), ("pmap", 8)])
def test_every_device_count_and_mode_matches_one_device(reference, mode, num_devices):
    batches, (want, want_metrics) = reference
    got, got_metrics = run(mode, num_devices, objective_config(), batches)
    assert int(got.step) == 3
    assert_trees_close(got.params, want.params, atol=1e-5)
    assert_trees_close(got.batch_stats, want.batch_stats, atol=1e-5)
    assert_trees_close(got.adapt, want.adapt, atol=1e-5)
    for g, w in zip(got_metrics, want_metrics):
        for key in ("loss_cls", "loss_cd", "loss_ca", "loss_mmd", "confident_fraction"):
            np.testing.assert_allclose(g[key], w[key], atol=1e-5)


NUM_TARGET = 40


@pytest.fixture(scope="module")
def clustered_reference():
    """Batches naming their target utterances and carrying their cluster
    labels as the train loop attaches them (``table[tgt_index]``, some -1 as
    before a run's first clustering), and the one-device run on them."""
    rng = np.random.default_rng(3)
    table = rng.integers(-1, NUM_CLASSES, NUM_TARGET).astype(np.int32)
    batches = labelled(make_batches(2), table, rng)
    cfg = objective_config(cluster_labels=True)
    return cfg, table, batches, run("shard_map", 1, cfg, batches)


def labelled(batches, table, rng):
    for batch in batches:
        batch["tgt_index"] = rng.permutation(NUM_TARGET)[:BATCH].astype(np.int32)
        batch["tgt_cluster"] = table[batch["tgt_index"]]
    return batches


def test_cluster_labels_are_read_by_row(clustered_reference):
    """Each target row reads its own cluster label: the share of rows with a
    label is the table's share over the batch's indices, the same batches
    with a shuffled table train differently, and the step hands back each
    row's utterance index and posterior logits for the target bank."""
    cfg, table, batches, (one, one_metrics) = clustered_reference
    for batch, metrics in zip(batches, one_metrics):
        np.testing.assert_allclose(metrics["confident_fraction"],
                                   np.mean(table[batch["tgt_index"]] >= 0), rtol=1e-6)
        np.testing.assert_array_equal(metrics["bank_index"], batch["tgt_index"])
        assert metrics["bank_logits"].shape == (BATCH, NUM_CLASSES)
        assert np.isfinite(metrics["bank_logits"]).all()
    shuffled_table = np.random.default_rng(4).permutation(table)
    shuffled = [dict(b, tgt_cluster=shuffled_table[b["tgt_index"]]) for b in batches]
    moved, _ = run("shard_map", 1, cfg, shuffled)
    assert not np.allclose(jax.tree.leaves(moved.params)[0],
                           jax.tree.leaves(one.params)[0], atol=1e-6)


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_cluster_labels_on_8_devices_match_one_device(clustered_reference, mode):
    """Each device's rows carry their labels and indices through the gather,
    so 8 devices train as one and hand back the same bank entries."""
    cfg, table, batches, (one, one_metrics) = clustered_reference
    eight, eight_metrics = run(mode, 8, cfg, batches)
    assert_trees_close(eight.params, one.params, atol=1e-5)
    for g, w in zip(eight_metrics, one_metrics):
        for key in ("loss_cd", "loss_ca", "confident_fraction", "bank_logits"):
            np.testing.assert_allclose(g[key], w[key], atol=1e-5)
        np.testing.assert_array_equal(g["bank_index"], w["bank_index"])


# Masks of width 0: a "strong" view identical to the plain one, so that what
# the step does with the third block of rows can be checked exactly.
IDENTITY_VIEW = augment_lib.SpecAugment(time_masks=1, time_width=0,
                                        freq_masks=1, freq_width=0)


@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
def test_strong_view_rows_are_gathered_like_the_others(mode):
    """With an identical strong view, the consistency loss is the
    self-training loss (same logits, labels and rows), on 1 and 8 devices
    alike: the third block of rows is gathered and split as the step says."""
    cfg = objective_config(w_consistency=1.0, w_pseudo=1.0)
    batches = make_batches(2)
    one, one_metrics = run("shard_map", 1, cfg, batches, IDENTITY_VIEW)
    eight, eight_metrics = run(mode, 8, cfg, batches, IDENTITY_VIEW)
    assert_trees_close(eight.params, one.params, atol=1e-5)
    for metrics in one_metrics + eight_metrics:
        assert metrics["confident_fraction"] > 0
        np.testing.assert_allclose(metrics["loss_consistency"],
                                   metrics["loss_pseudo"], rtol=1e-5)


def test_the_step_actually_trains(reference):
    batches, (state, history) = reference
    assert all(m["finite"] == 1.0 for m in history)
    fresh = initial_state(make_model(), optax.adam(1e-2))
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params))]
    assert min(moved) > 0  # every parameter received gradient
    assert not np.allclose(state.adapt.prototypes, 0)  # prototypes were updated


def plain_classifier_step(model, tx):
    """The baseline: cross-entropy on the source batch, nothing else."""

    def step_fn(state, batch):
        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["src_frames"], batch["src_mask"], train=True,
                mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(
                outputs["logits"], batch["src_label"]).mean(), updates
        grads, updates = jax.grad(loss_fn, has_aux=True)(state.params)
        step_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(params=optax.apply_updates(state.params, step_updates),
                             opt_state=opt_state,
                             batch_stats=updates["batch_stats"]), {}

    return step_fn


def compiled_flops(cfg=None, strong_augment=None):
    model, tx = make_model(), optax.adam(1e-2)
    parallel = step_lib.Parallel("shard_map", jax.make_mesh(
        (1,), (step_lib.AXIS,), devices=jax.devices()[:1]))
    step_fn = (plain_classifier_step(model, tx) if cfg is None else
               step_lib.make_train_step(model, tx, cfg, axis_name=step_lib.AXIS,
                                        sum_gradients=False,
                                        strong_augment=strong_augment))
    state = parallel.put_replicated(initial_state(model, tx))
    batch = parallel.put_batch(make_batches(1)[0])
    fn = parallel.compile_train(step_fn)
    return fn.lower(state, batch).compile().cost_analysis()["flops"]


def test_zero_weights_remove_their_losses_from_the_graph():
    plain = compiled_flops(None)
    source_only = compiled_flops(objective_config(w_cor=0.0, w_cd=0.0, w_ca=0.0, w_mmd=0.0))
    mmd_only = compiled_flops(objective_config(w_cor=0.0, w_cd=0.0, w_ca=0.0))
    full = compiled_flops(objective_config())
    # Source-only is a plain classifier (label smoothing and the finiteness
    # guard add a few elementwise ops); each switched-on loss adds compute.
    assert source_only <= 1.05 * plain
    assert source_only < mmd_only < full
    # The strong view is a third block of rows through the model.
    assert compiled_flops(objective_config(w_consistency=1.0), IDENTITY_VIEW) > 1.3 * full


def test_consistency_without_a_strong_view_is_refused():
    with pytest.raises(ValueError, match="w_consistency=1.0 needs a strong view"):
        step_lib.make_train_step(make_model(), optax.adam(1e-2),
                                 objective_config(w_consistency=1.0),
                                 axis_name=step_lib.AXIS, sum_gradients=False)


def test_non_finite_step_leaves_the_state_unchanged(reference):
    batches = make_batches(2)
    batches[1]["src_frames"][0, 0, 0] = np.nan
    state, history = run("shard_map", 1, objective_config(), batches)
    _, (_, want_history) = reference  # the same first batch, all finite
    assert history[0]["finite"] == 1.0 and history[1]["finite"] == 0.0
    assert int(state.step) == 2
    assert_trees_close(state.params, want_history[0]["params"], atol=0)
