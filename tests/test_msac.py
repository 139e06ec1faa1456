"""MSAC-SERNet: attribute control, the single-corpus protocol, config errors."""

import jax
import numpy as np
import pytest

from emodna_jax import attributes
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
        attributes.attribute_specs(config, source)
    config.msac.gender = "off"
    config.msac.speaker = "forget"
    with pytest.raises(ValueError, match="config.msac.speaker: must be one of"):
        attributes.attribute_specs(config, source)
    config.msac.speaker = "off"
    config.msac.corpus = "keep"
    config.data.protocol = "single_corpus"
    with pytest.raises(ValueError, match="config.msac.corpus: corpus control needs"):
        attributes.attribute_specs(config, source)


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


def test_suppressed_attribute_reverses_its_gradient_into_e():
    """d(head loss)/d(backbone) flips sign between 'keep' and 'suppress'."""
    import jax.numpy as jnp
    frames = jax.random.normal(jax.random.key(0), (4, 20, 8))
    mask = jnp.ones((4, 20), bool)
    grads = {}
    for suppress in (False, True):
        model = models.EmoDNAModel(num_classes=3, backbone="tim",
                                   backbone_kwargs={"features": 8, "num_blocks": 1},
                                   projection_dim=8, hidden_dim=8, dropout_rate=0.0,
                                   attribute_heads={"speaker": (5, suppress)})
        variables = model.init(jax.random.key(1), frames, mask, train=False)
        params = variables["params"]

        def head_loss(backbone):
            out = model.apply({**variables, "params": {**params, "backbone": backbone}},
                              frames, mask, train=False, grl_coefficient=0.3)
            return out["attr_speaker"].sum()

        grads[suppress] = jax.grad(head_loss)(params["backbone"])
    for keep, reverse in zip(jax.tree.leaves(grads[False]), jax.tree.leaves(grads[True])):
        np.testing.assert_allclose(reverse, -0.3 * keep, rtol=1e-5, atol=1e-7)
