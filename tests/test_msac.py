"""MSAC-SERNet: attribute control, the single-corpus protocol, config errors."""

import jax
import numpy as np
import pytest

from emodna_jax import msac
from emodna_jax import input_pipeline
from emodna_jax import models
from tests.conftest import toy_config


def test_attribute_the_corpus_lacks_is_a_config_error(toy_data_dir):
    config = toy_config(toy_data_dir)
    source, _ = input_pipeline.open_task(config)
    source.corpus.metadata["speaker_gender"] = {s: "unknown" for s in
                                                source.corpus.metadata["speakers"]}
    config.msac.gender = "keep"
    with pytest.raises(ValueError, match="config.msac.gender: toy_src records no"):
        msac.attribute_specs(config, source)
    config.msac.gender = "off"
    config.msac.speaker = "forget"
    with pytest.raises(ValueError, match="config.msac.speaker: must be one of"):
        msac.attribute_specs(config, source)
    config.msac.speaker = "suppress"
    config.msac.suppress_by = "forgetting"
    with pytest.raises(ValueError, match="config.msac.suppress_by: must be one of"):
        msac.attribute_specs(config, source)
    config.msac.suppress_by = "alignment"
    config.msac.speaker = "off"
    config.msac.head_lr_multiplier = 0.0
    with pytest.raises(ValueError, match="config.msac.head_lr_multiplier: must be > 0"):
        msac.attribute_specs(config, source)
    config.msac.head_lr_multiplier = 1.0
    config.msac.corpus = "keep"
    config.data.protocol = "single_corpus"
    with pytest.raises(ValueError, match="config.msac.corpus: corpus control needs"):
        msac.attribute_specs(config, source)


def test_folds_are_speaker_disjoint(toy_data_dir):
    config = toy_config(toy_data_dir)
    config.data.protocol = "single_corpus"
    for weight in ("w_cor", "w_cd", "w_ca", "w_mmd"):
        config.loss[weight] = 0.0
    seen = []
    for fold in range(4):
        config.data.fold = fold
        train_task, held_out = input_pipeline.open_task(config)

        def speakers(task, split):
            source = task.corpus.source(split)
            return {source[i]["speaker"] for i in range(len(source))}

        test_speakers = speakers(held_out, held_out.eval_split)
        assert not test_speakers & speakers(train_task, train_task.train_split)
        seen.append(test_speakers)
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 4


def test_single_corpus_protocol_refuses_adaptation_losses(toy_data_dir):
    from emodna_jax import config_validation
    config = toy_config(toy_data_dir)
    config.data.protocol = "single_corpus"
    with pytest.raises(ValueError, match="single_corpus trains on one corpus"):
        config_validation.validate_config(config)


def _tiny_msac_model(control):
    return models.EmoDNAModel(num_classes=3, backbone="tim",
                              backbone_kwargs={"features": 8, "num_blocks": 1},
                              projection_dim=8, hidden_dim=8, dropout_rate=0.0,
                              attribute_heads={"speaker": (5, control)})


def test_reversed_attribute_flips_its_gradient_into_the_backbone():
    """d(head output)/d(backbone) under 'reverse' is -coefficient x under 'keep'."""
    import jax.numpy as jnp
    frames = jax.random.normal(jax.random.key(0), (4, 20, 8))
    mask = jnp.ones((4, 20), bool)
    grads = {}
    for control in ("keep", "reverse"):
        model = _tiny_msac_model(control)
        # Jitted, here and below: op by op, these take half a minute each.
        variables = jax.jit(model.init, static_argnames="train")(
            jax.random.key(1), frames, mask, train=False)
        params = variables["params"]

        def head_output(backbone):
            out = model.apply({**variables, "params": {**params, "backbone": backbone}},
                              frames, mask, train=False, grl_coefficient=0.3)
            return out["attr_speaker"].sum()

        grads[control] = jax.jit(jax.grad(head_output))(params["backbone"])
    for keep, reverse in zip(jax.tree.leaves(grads["keep"]),
                             jax.tree.leaves(grads["reverse"])):
        np.testing.assert_allclose(reverse, -0.3 * keep, rtol=1e-5, atol=1e-7)
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads["keep"]))


def test_aligned_attribute_head_only_monitors_and_exposes_standardised_h():
    """Under 'align' the head's loss cannot move the backbone; the features
    the objective aligns are h standardised over the batch."""
    import jax.numpy as jnp
    frames = jax.random.normal(jax.random.key(0), (6, 20, 8))
    mask = jnp.ones((6, 20), bool)
    model = _tiny_msac_model("align")
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(1), frames, mask, train=False)
    params = variables["params"]

    @jax.jit
    def run(backbone):
        out, _ = model.apply({**variables, "params": {**params, "backbone": backbone}},
                             frames, mask, train=True, mutable=["batch_stats"])
        return out

    head_grads = jax.jit(jax.grad(lambda b: run(b)["attr_speaker"].sum()))(params["backbone"])
    assert all(np.abs(g).max() == 0 for g in jax.tree.leaves(head_grads))
    out = run(params["backbone"])
    h = np.asarray(out["h"], np.float64)
    want = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
    np.testing.assert_allclose(out["attr_speaker_features"], want, rtol=1e-4, atol=1e-5)
    feature_grads = jax.jit(jax.grad(lambda b: jnp.sum(
        run(b)["attr_speaker_features"][:3] ** 3)))(params["backbone"])
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(feature_grads))
    # Evaluation needs neither the features nor the batch axis.
    assert "attr_speaker_features" not in jax.eval_shape(
        lambda: model.apply(variables, frames, mask, train=False))


def test_probe_reads_a_linearly_coded_attribute_and_not_noise():
    from emodna_jax import probe
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    noise = rng.standard_normal((100, 6))
    coded = noise.copy()
    coded[:, :4] += 5.0 * np.eye(4)[labels]  # one direction per value
    assert probe.probe_accuracy(coded, labels) == 1.0
    # Pure noise: cross-validated accuracy stays near chance (0.25).
    assert probe.probe_accuracy(noise, labels) < 0.45


def test_probe_rejects_bad_input():
    from emodna_jax import probe
    with pytest.raises(ValueError, match=r"\[N, D\] with one label per row"):
        probe.probe_accuracy(np.zeros((10, 3)), np.zeros(9))
    with pytest.raises(ValueError, match="needs 2\\+ classes with 5\\+ examples"):
        probe.probe_accuracy(np.zeros((12, 3)), np.array([0] * 9 + [1] * 3))


def test_head_learning_rate_multiplier_scales_only_attribute_heads():
    from configs import default
    from emodna_jax import experiment
    params = {"backbone": {"w": np.ones(3, np.float32)},
              "speaker_head": {"w": np.ones(2, np.float32)}}
    grads = {"backbone": {"w": np.array([0.1, -0.2, 0.3], np.float32)},
             "speaker_head": {"w": np.array([0.5, -0.4], np.float32)}}
    updates = {}
    for multiplier in (1.0, 7.0):
        config = default.get_config()
        config.msac.head_lr_multiplier = multiplier
        tx = experiment.create_optimizer(config)
        state = tx.init(params)
        for _ in range(3):  # past the first (zero learning rate) warm-up step
            update, state = tx.update(grads, state, params)
        updates[multiplier] = update
    np.testing.assert_allclose(updates[7.0]["speaker_head"]["w"],
                               7.0 * updates[1.0]["speaker_head"]["w"], rtol=1e-6)
    np.testing.assert_array_equal(updates[7.0]["backbone"]["w"],
                                  updates[1.0]["backbone"]["w"])
    assert np.abs(updates[1.0]["speaker_head"]["w"]).min() > 0


def test_the_flattened_optimizer_updates_as_the_per_array_chain():
    """create_optimizer runs clipping and AdamW on one flat vector; per array
    with optax's own chain, the same gradients give the same updates,
    including a step where the global norm clips."""
    import optax
    from configs import default
    from emodna_jax import experiment
    config = default.get_config()
    config.optim.grad_clip = 1.0
    per_array = optax.chain(
        optax.clip_by_global_norm(config.optim.grad_clip),
        optax.adamw(experiment.learning_rate_schedule(config),
                    weight_decay=config.optim.weight_decay))
    flat = experiment.create_optimizer(config)
    rng = np.random.default_rng(0)
    params = {"a": {"w": rng.normal(size=(3, 4)).astype(np.float32)},
              "b": rng.normal(size=5).astype(np.float32)}
    states = [per_array.init(params), flat.init(params)]
    assert len(jax.tree.leaves(states[1])) < len(jax.tree.leaves(states[0]))
    for scale in (0.1, 10.0, 0.5):  # 10: a global norm far above grad_clip
        grads = jax.tree.map(lambda p: scale * rng.normal(size=p.shape).astype(np.float32),
                             params)
        (u_ref, states[0]), (u_flat, states[1]) = (
            tx.update(grads, state, params)
            for tx, state in zip((per_array, flat), states))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9),
                     u_ref, u_flat)
        params = optax.apply_updates(params, u_ref)


@pytest.mark.parametrize("name", ["msac_single_corpus", "msac_cross_corpus"])
def test_msac_configs_are_valid_and_train_msac_sernet_without_adaptation(name):
    import importlib
    from emodna_jax import config_validation, config_variants
    config = importlib.import_module(f"configs.{name}").get_config()
    config_validation.validate_config(config)
    assert not config_variants.adapts(config)
    assert (config.model.classifier, config.msac.speaker, config.msac.gender) == (
        "am", "suppress", "keep")
    assert config.augment.warp > 0 and config.data.normalization == "speaker"
    assert config.data.utterance_stats and config.data.feature == "logmel_pitch"
