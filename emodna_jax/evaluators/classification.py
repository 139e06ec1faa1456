"""metrics.csv: how well each checkpoint classifies, per split.

UAR, WAR, macro-F1, per-class recall and the true class's NLL on the target
and on the source's validation speakers; on the target row also the
label-free selection scores (emodna_jax/selection.py), which read the
target's outputs but none of its labels.  Checkpoint selection reads this
table, so every evaluation runs it.
"""

from emodna_jax import evaluate


class Evaluator:
    splits = ("target", "source_val")

    def __init__(self, context):
        self.context = context
        self.table = context.table("metrics.csv", "split")

    def run(self, step: int, predictions: dict, state) -> None:
        evaluate.put_metric_rows(self.table, step, self.context.config,
                                 {s: predictions[s] for s in self.splits},
                                 self.context.classes)
