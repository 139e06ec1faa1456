"""The config files' arguments: one parser, and the real-speech preset's sizes."""

import pytest

from configs import ablation, arguments, casia_to_emodb, cross_corpus, default
from configs import emodb_to_enterface


def _parse(arg):
    return arguments.parse(arg, "configs/x.py", source=arguments.REQUIRED,
                           target=arguments.REQUIRED, method="emodna", steps=400,
                           fast=False)


def test_positional_and_named_values_fill_the_names_and_take_the_defaults_types():
    assert _parse("a,b").to_dict() == dict(source="a", target="b", method="emodna",
                                           steps=400, fast=False)
    assert _parse(" a , b , dann ").method == "dann"
    parsed = _parse("a,target=b,steps=50,fast=true")
    assert (parsed.target, parsed.steps, parsed.fast) == ("b", 50, True)
    assert _parse("target=b,source=a").source == "a"


@pytest.mark.parametrize("arg, message", [
    ("", "configs/x.py needs SOURCE,TARGET[,method=emodna][,steps=400][,fast=False] "
         "after the colon, got ''"),
    ("a", "needs SOURCE,TARGET"),
    ("a,b,mode=x", "configs/x.py: unknown argument 'mode' in 'a,b,mode=x'; "
                   "configs/x.py takes SOURCE,TARGET"),
    ("a,b,c,1,0,f", "configs/x.py: 'f' in 'a,b,c,1,0,f' has no name and no place"),
    ("source=a,b", "'b' in 'source=a,b' has no name and no place"),
    ("a,b,steps=many", "configs/x.py: steps='many' is not int"),
    ("a,b,fast=maybe", "configs/x.py: fast='maybe' is not true or false"),
    ("a,,c", "configs/x.py: target is empty in 'a,,c'"),
    ("a,b,source=c", "configs/x.py: source is given twice in 'a,b,source=c'"),
])
def test_a_bad_argument_is_refused_with_what_the_file_takes(arg, message):
    with pytest.raises(ValueError) as error:
        _parse(arg)
    assert message in str(error.value)


def test_full_size_is_the_suite_recipe_on_a_wider_model_trained_longer():
    suite = cross_corpus.get_config("emodb,enterface")
    full = cross_corpus.get_config("emodb,enterface,emodna,size=full")
    assert (suite.steps, suite.model.channels, suite.batch_size) == (400, 32, 32)
    assert (full.steps, full.model.channels, full.model.num_blocks, full.batch_size) \
        == (8000, 64, 6, 64)
    # Everything that is not size is the same recipe.
    assert full.loss.cluster_labels and full.loss.cluster_agreement
    assert full.data.feature == suite.data.feature
    assert full.data.utterance_stats == suite.data.utterance_stats
    assert full.loss.to_dict() == {**suite.loss.to_dict(), "cluster_every": 500,
                                   "threshold_momentum": 0.999}
    with pytest.raises(ValueError, match="size='huge' is not one of suite, full"):
        cross_corpus.get_config("a,b,size=huge")


@pytest.mark.parametrize("task, arg, classes", [
    (emodb_to_enterface, "emodb,enterface,size=full",
     ("angry", "disgust", "fear", "happy", "sad")),
    (casia_to_emodb, "casia,emodb,size=full",
     ("angry", "fear", "happy", "neutral", "sad")),
])
def test_the_real_task_files_are_the_full_preset_with_their_classes(task, arg, classes):
    config = task.get_config()
    expected = cross_corpus.get_config(arg)
    expected.data.classes = classes
    assert config.to_dict() == expected.to_dict()


def test_the_ablation_config_takes_one_method():
    assert ablation.get_config("dann").method == "dann"
    assert ablation.get_config("method=no_cd").loss.w_cd == 0
    with pytest.raises(ValueError, match="configs/ablation.py needs METHOD after the colon"):
        ablation.get_config("")
    assert default.get_config().method == "emodna"


@pytest.mark.parametrize("evals, message", [
    (("classification", "odd"), "config.evals: unknown evaluator 'odd'; the evaluators "
                                "are classification, embeddings, ood, pseudo_labels"),
    (("ood",), "config.evals: must include 'classification' (checkpoint selection "
               "reads its table)"),
    (("classification", "ood", "ood"), "config.evals: names an evaluator twice"),
])
def test_bad_evals_are_refused_before_anything_runs(evals, message):
    from emodna_jax import config_validation
    config = default.get_config()
    config.evals = evals
    with pytest.raises(ValueError) as error:
        config_validation.validate_config(config)
    assert message in str(error.value)
