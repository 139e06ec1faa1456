"""The target posterior averaged over every checkpoint of a run.

Choosing one checkpoint of an adaptation run without target labels costs
the recipe much of what it gains (docs/results.md, "Target UAR by
checkpoint selection rule"): source validation reads 40 utterances of
another corpus, and each label-free target score fails on some group of
tasks.  The
mean of the class posteriors of every checkpoint the run kept, the
source-only warm-up's included, chooses nothing: it is a snapshot ensemble
(Huang et al. 2017) of the training trajectory.  With checkpoints evenly
spaced, the warm-up's carry about ``loss.adapt_start`` of the weight, so
where adaptation commits to a wrong naming the source-only model still
holds part of the vote, and where it helps the adapted checkpoints
outnumber it.

It reads the stored predictions of ``--mode=evaluate``
(``eval/predictions/step_N.npz``, the ``embeddings`` evaluator); numpy only.
"""

from __future__ import annotations

import os

import numpy as np
from scipy.special import softmax

from emodna_jax import input_pipeline
from emodna_jax import metrics as metrics_lib
from emodna_jax import ood as ood_lib
from emodna_jax.evaluators import embeddings
from emodna_jax.evaluators import ood as ood_evaluator

# What the ensemble reads of each step's stored predictions: not the
# embeddings, the largest arrays there.
TARGET_ARRAYS = ("target/logits", "target/label", "target/index")


def mean_posterior(posterior_logits: list[np.ndarray]) -> np.ndarray:
    """[N, C] mean over checkpoints of softmax(logits), each [N, C]."""
    if not posterior_logits:
        raise ValueError("a checkpoint ensemble needs at least one checkpoint")
    shapes = {np.shape(p) for p in posterior_logits}
    if len(shapes) != 1:
        raise ValueError(f"checkpoint ensemble: the checkpoints' predictions "
                         f"have different shapes {sorted(shapes)}")
    return np.mean([softmax(np.asarray(p, np.float64), axis=1)
                    for p in posterior_logits], axis=0)


def stored_posteriors(out_dir: str, steps, posterior_logits_of):
    """``(index, label, [posterior logits of each step])`` of the target, from
    the stored predictions of ``steps``; None when one of them is missing.
    A step whose target utterances differ from the first's is a one-line
    error naming its file."""
    paths = [embeddings.path(out_dir, step) for step in steps]
    if not paths or not all(os.path.exists(p) for p in paths):
        return None
    posteriors, labels, index = [], None, None
    for step, path in zip(steps, paths):
        outputs = embeddings.load(out_dir, step, names=TARGET_ARRAYS)["target"]
        if index is None:
            index, labels = outputs["index"], outputs["label"]
        elif not np.array_equal(outputs["index"], index):
            raise ValueError(f"{path}: its target utterances are not those of step "
                             f"{steps[0]}; evaluate the run again with --force")
        posteriors.append(posterior_logits_of(outputs))
    return index, labels, posteriors


def target_figures(out_dir: str, steps, classes, posterior_logits_of,
                   ood_score: str | None = None) -> dict | None:
    """UAR, WAR, macro-F1 and per-class recall on the target of the mean
    posterior over ``steps``, and the steps themselves; None when a step's stored
    predictions are missing (an evaluation without the ``embeddings``
    evaluator), since an ensemble of some checkpoints would be another one.

    ``posterior_logits_of(outputs)`` turns the stored target ``logits``
    (with ``label`` and ``index``) into
    logits whose softmax is the class posterior (the margin's scale
    applied).

    With a logit ``ood_score`` (ood.SCORES) and a target holding excluded
    emotions, ``ood`` gives that score's study for the ensemble
    (ood.checkpoint_ensemble_score, the evaluators/ood.py metrics and the
    95%-TPR threshold an export of the ensemble flags below)."""
    stored = stored_posteriors(out_dir, steps, posterior_logits_of)
    if stored is None:
        return None
    _, labels, posteriors = stored
    keep = labels != input_pipeline.EXCLUDED
    predicted = np.argmax(mean_posterior(posteriors), axis=1)
    report = metrics_lib.classification_report(labels[keep], predicted[keep],
                                               len(classes))
    figures = {"steps": [int(s) for s in steps], "uar": report["uar"],
               "war": report["war"], "macro_f1": report["macro_f1"],
               **{f"recall_{c}": r for c, r in zip(classes, report["per_class_recall"])}}
    if ood_score in ood_lib.SCORES and keep.any() and not keep.all():
        scores = ood_lib.checkpoint_ensemble_score(ood_score, posteriors)
        figures["ood"] = {ood_score: ood_evaluator.score_study(scores, ~keep)}
    return figures
