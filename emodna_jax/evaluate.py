"""Evaluation of a model state on a corpus split: predictions and metrics."""

from __future__ import annotations

import numpy as np

from emodna_jax import input_pipeline
from emodna_jax import metrics as metrics_lib
from emodna_jax import step as step_lib


class Evaluator:
    """Runs the jitted, data-parallel eval step over whole splits."""

    def __init__(self, model, parallel: step_lib.Parallel, config):
        self.parallel = parallel
        self.batch_size = config.eval_batch_size
        self.num_frames = config.data.eval_num_frames
        self.num_classes = len(config.data.classes)
        self.source_eval_split = config.data.source_eval_split
        self.target_split = config.data.target_split
        self._eval_step = parallel.compile_eval(step_lib.make_eval_step(model))

    def predict(self, state, task: input_pipeline.TaskCorpus, split: str, *,
                include_excluded: bool = False) -> dict:
        """Model outputs and labels for every utterance of ``split``.

        Returns numpy arrays over the split's utterances: the model outputs of
        ``step.OUTPUT_KEYS`` plus ``label`` (task class or EXCLUDED),
        ``emotion`` (the corpus's own emotion index) and ``index``.
        """
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        chunks = []
        for batch in input_pipeline.eval_batches(
                task, split, batch_size=self.batch_size,
                num_frames=self.num_frames, include_excluded=include_excluded):
            outputs = self.parallel.get_outputs(self._eval_step(
                variables, self.parallel.put_batch(
                    {"frames": batch["frames"], "mask": batch["mask"]})))
            keep = batch["weight"] > 0
            chunks.append({**{k: v[keep] for k, v in outputs.items()},
                           **{k: batch[k][keep] for k in ("label", "emotion", "index")}})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def report(self, state, task, split: str) -> dict:
        """UAR, WAR, macro-F1, per-class recall and confusion of ``split``."""
        out = self.predict(state, task, split)
        return metrics_lib.classification_report(
            out["label"], np.argmax(out["logits"], -1), self.num_classes)

    def scalars(self, state, source, target) -> dict:
        """The headline figures logged during training."""
        tgt = self.report(state, target, self.target_split)
        src = self.report(state, source, self.source_eval_split)
        return {"target_uar": tgt["uar"], "target_war": tgt["war"],
                "source_val_uar": src["uar"], "source_val_war": src["war"]}
