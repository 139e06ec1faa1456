"""What an export says it adapted: export.adaptation_info from a checkpoint's
objective settings, step and agreement verdict, and its one-line summary."""

import numpy as np

from configs import cross_corpus
from emodna_jax import experiment
from emodna_jax import export
from emodna_jax import objective as objective_lib

CLASSES = ("neutral", "angry", "happy", "sad")


def _objective(method="emodna", steps=400):
    config = cross_corpus.get_config(f"src,tgt,{method}")
    config.steps = steps
    return experiment.objective_config(config, len(CLASSES))


def _verdict(agrees, groups):
    adapt = objective_lib.AdaptState.create(len(CLASSES), 8, agreement=True)
    return adapt.replace(cluster_agrees=np.asarray(agrees, bool),
                         class_groups=np.asarray(groups, np.int32))


def test_a_source_only_model_adapted_nothing():
    info = export.adaptation_info(_objective("source_only"), CLASSES,
                                  objective_lib.AdaptState.create(4, 8), 400)
    assert info == {"adapted": False, "why": "trained on the source corpus alone",
                    "unadapted": list(CLASSES), "not_told_apart": []}


def test_a_warm_up_checkpoint_is_not_adapted_and_the_next_one_is():
    objective = _objective()     # the recipe: a warm-up of 30% of 400 steps
    assert objective.adapt_start == 0.3
    adapt = _verdict([True] * 4, [0, 1, 2, 3])
    warm = export.adaptation_info(objective, CLASSES, adapt, 120)
    assert not warm["adapted"] and warm["unadapted"] == list(CLASSES)
    assert warm["why"] == "step 120 is in the source-only warm-up (the first 30% of 400 steps)"
    assert export.adaptation_info(objective, CLASSES, adapt, 121) == {
        "adapted": True, "why": None, "unadapted": [], "not_told_apart": []}


def test_a_contradicted_class_is_named_with_the_class_that_took_its_cluster():
    # angry's cluster mostly called happy: angry joins happy's group (2).
    info = export.adaptation_info(_objective(), CLASSES,
                                  _verdict([True, False, True, True], [0, 2, 2, 3]), 400)
    assert info["adapted"] and info["unadapted"] == ["angry"]
    assert info["not_told_apart"] == [["angry", "happy"]]
    assert export.describe_adaptation(info) == (
        "left unadapted: angry (the target's clusters contradicted the source "
        "classifier's naming of these classes); predictions of angry and happy "
        "are flagged 'not adapted'")


def test_without_the_agreement_check_every_class_adapts():
    objective = _objective("no_agreement")
    info = export.adaptation_info(objective, CLASSES, objective_lib.AdaptState.create(4, 8),
                                  400)
    assert info["adapted"] and info["unadapted"] == [] and info["not_told_apart"] == []
    assert export.describe_adaptation(info) is None
    assert export.describe_adaptation(export.adaptation_info(
        objective, CLASSES, objective_lib.AdaptState.create(4, 8), 10)) == (
        "not adapted to the target corpus: step 10 is in the source-only warm-up "
        "(the first 30% of 400 steps)")


def test_a_model_of_one_corpus_has_no_target_to_adapt_to():
    config = cross_corpus.get_config("src,tgt")
    config.data.protocol = "single_corpus"
    assert export.served_adaptation(config, None, None, 400) is None
    assert export.describe_adaptation(None) is None
