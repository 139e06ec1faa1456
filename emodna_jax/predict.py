"""``--mode=predict``: a trained checkpoint on arbitrary audio files.

A thin user of :class:`emodna_jax.serving.Predictor` with the model run in
this process (``export.in_process``): the features are computed exactly as
the training data's were (the feature settings are read from the prepared
source corpus), frames are standardised as an utterance of unknown speaker
is in training, with the target corpus's utterance statistics (the domain
the model was adapted to), and every file is scored in windows as
evaluation scores an utterance (emodna_jax/scoring.py), so no part of it is
ignored; ``--json`` lists every window's posterior with its times.  Each
file gets its emotion, the class probabilities and an OOD flag from the
configured score and threshold.  An export folder gives the same
predictions without the training data (emodna_jax/export.py).
"""

from __future__ import annotations

import dataclasses

import jax

from emodna_jax import distributed
from emodna_jax import export
from emodna_jax import serving
from emodna_jax.serving import Prediction, expand_inputs, format_predictions  # noqa: F401


def predict_files(config, workdir: str, inputs, *, checkpoint: int | None = None
                  ) -> list[Prediction]:
    if config.ood_score == "mahalanobis":
        raise ValueError("config.ood_score: prediction supports msp, max_logit "
                         "and energy (Mahalanobis needs the source features)")
    paths = expand_inputs(inputs)
    predictor = export.in_process(config, workdir, checkpoint)
    # Several processes: each scores every process_count-th file on its own
    # device, and every process returns all results, in input order.
    shares = distributed.gather_json(
        [dataclasses.asdict(p) for p in predictor.predict_batch(
            paths[jax.process_index()::jax.process_count()])])
    ordered = [None] * len(paths)
    for k, share in enumerate(shares):
        ordered[k::len(shares)] = [Prediction(**row) for row in share]
    return ordered
