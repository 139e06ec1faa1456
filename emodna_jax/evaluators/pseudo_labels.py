"""pseudo_labels.csv: what training's own rule would pseudo-label.

For each checkpoint, the target utterances that its stored state (adaptive
thresholds and prototypes, or with ``loss.cluster_labels`` the target's
clusters saved in the checkpoint's target bank) selects, how accurate those are, and with
``loss.cluster_agreement`` which classes it left unadapted.  Target labels
are read here, in evaluation, never by training.
"""

from __future__ import annotations

import jax
import numpy as np

from emodna_jax import input_pipeline
from emodna_jax import losses
from emodna_jax import objective as objective_lib
from emodna_jax import target_bank


def pseudo_label_report(passed: np.ndarray, pseudo: np.ndarray,
                        labels: np.ndarray, classes) -> dict:
    """How the pseudo-labels of a state look on the whole target.

    ``passed`` [N] and ``pseudo`` [N] are what training's rule
    (``objective.select_pseudo_labels`` or the stored clusters) selects among
    all target utterances; ``labels`` [N] are the task labels (EXCLUDED for
    out-of-task emotions).  Returns the share of utterances that pass, the
    accuracy of the in-task ones that pass, and per class how many passing
    utterances are predicted as it and how many truly are it.
    """
    passed, pseudo = np.asarray(passed), np.asarray(pseudo)
    in_task = labels != input_pipeline.EXCLUDED
    judged = passed & in_task
    row = {"passed_fraction": float(passed.mean()) if passed.size else 0.0,
           "passed_count": int(passed.sum()),
           "passed_accuracy": (float((pseudo[judged] == labels[judged]).mean())
                               if judged.any() else float("nan"))}
    for k, name in enumerate(classes):
        row[f"predicted_{name}"] = int((pseudo[passed] == k).sum())
        row[f"true_{name}"] = int((labels[judged] == k).sum())
    return row


class Evaluator:
    splits = ("target",)

    def __init__(self, context):
        self.context = context
        self.table = context.table("pseudo_labels.csv", "split")

    def _bank(self, step: int):
        """The target bank saved with ``step`` (its cluster labels), or None."""
        context = self.context
        empty = target_bank.TargetBank(context.target.num_train, len(context.classes))
        stored = context.checkpointer.restore_bank(step, empty.arrays())
        return None if stored is None else target_bank.TargetBank.from_arrays(stored)

    def run(self, step: int, predictions: dict, state) -> None:
        context, target = self.context, predictions["target"]
        adapt = jax.device_get(state.adapt)
        bank = (self._bank(step) if context.objective.cluster_labels
                and context.target.eval_split == context.target.train_split else None)
        if bank is not None:
            passed, pseudo = map(np.asarray, objective_lib.clustered_pseudo_labels(
                bank.pseudo_labels(target["index"])))
        else:
            posterior = losses.config_posterior_logits(context.config, target["logits"])
            passed, pseudo = objective_lib.select_pseudo_labels(
                context.objective, jax.nn.softmax(posterior, -1), target["z_e"], adapt)
        self.table.put(step, "target", pseudo_label_report(
            passed, pseudo, target["label"], context.classes))
        if adapt.cluster_agrees is not None:   # loss.cluster_agreement's verdict
            self.table.rows[(step, "target")].update(
                {f"adapted_{name}": int(a) for name, a in
                 zip(context.classes, np.asarray(adapt.cluster_agrees))})
