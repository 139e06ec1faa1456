"""ood.csv: how well each OOD score tells the task's emotions from the rest.

In-distribution: target utterances of the task's classes; out of
distribution: target utterances of the emotions the task excludes (none:
no rows).  Mahalanobis fits its class Gaussians on the source's training
split, the one pass over it an evaluation makes, so a config without this
evaluator skips that pass.  Each utterance's scores join the target's
predictions (``score_<name>``), for the report's histograms.
"""

from __future__ import annotations

import numpy as np

from emodna_jax import input_pipeline
from emodna_jax import losses
from emodna_jax import ood as ood_lib

SCORES = ("msp", "max_logit", "energy", "mahalanobis")


def ood_study(target: dict, source_train: dict, num_classes: int):
    """Every OOD score's metrics, ID = in-task target, OOD = excluded target.

    ``target["logits"]`` are posterior logits.  Returns ``(study, scores)``:
    score name -> metrics plus the score's 95%-TPR threshold, and score name
    -> per-utterance scores; both empty when the target corpus has no
    excluded emotion.
    """
    is_ood = target["label"] == input_pipeline.EXCLUDED
    if not is_ood.any() or is_ood.all():
        return {}, {}
    gaussian = ood_lib.fit_mahalanobis(source_train["e"], source_train["label"],
                                       num_classes)
    scores = ood_lib.compute_scores(target["logits"], target["e"], gaussian)
    return {name: score_study(scores[name], is_ood) for name in SCORES}, scores


def score_study(scores: np.ndarray, is_ood: np.ndarray) -> dict:
    """One score's metrics, ID = the rows not ``is_ood``, and the threshold
    that keeps 95% of them (what prediction flags below)."""
    id_scores, ood_scores = scores[~is_ood], scores[is_ood]
    return dict(ood_lib.ood_metrics(id_scores, ood_scores),
                threshold_at_95_tpr=ood_lib.threshold_at_tpr(id_scores),
                n_id=int((~is_ood).sum()), n_ood=int(is_ood.sum()))


class Evaluator:
    splits = ("target", "source_train")

    def __init__(self, context):
        self.context = context
        self.table = context.table("ood.csv", "score")

    def run(self, step: int, predictions: dict, state) -> None:
        target = predictions["target"]
        posterior = np.asarray(losses.config_posterior_logits(
            self.context.config, target["logits"]))
        study, scores = ood_study({**target, "logits": posterior},
                                  predictions["source_train"], len(self.context.classes))
        for score, values in study.items():
            self.table.put(step, score, values)
        target.update({f"score_{k}": v for k, v in scores.items()})
