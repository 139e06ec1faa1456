"""``--mode=predict``: a trained checkpoint on arbitrary audio files.

Features are computed exactly as the training data's were: the feature
settings are read from the prepared source corpus, and each file goes
through the same loading (mix-down, resampling) as in data_prep.  Frames are
standardised with the target corpus's statistics (the domain the model was
adapted to).  A file longer than the evaluation length is covered by
half-overlapping windows of that length, and judged by their mean posterior
and mean OOD score, so no part of it is ignored; ``--json`` lists every
window's posterior with its times.  Each file gets its emotion, the class
probabilities and an OOD flag from the configured score and threshold.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from data_prep import audio
from data_prep.features import FeatureExtractor
from emodna_jax import distributed
from emodna_jax import experiment
from emodna_jax import losses
from emodna_jax import ood as ood_lib
from emodna_jax import step as step_lib

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


@dataclasses.dataclass
class Prediction:
    path: str
    emotion: str | None = None
    probabilities: dict | None = None
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    error: str | None = None
    windows: list | None = None  # per window: start_s, end_s, probabilities


def expand_inputs(inputs) -> list[str]:
    """Files, and the audio files found (recursively) in directories."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                paths += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(AUDIO_EXTENSIONS)]
        else:
            paths.append(item)
    if not paths:
        raise FileNotFoundError(f"no audio files in {list(inputs)}")
    return paths


def _ood_threshold(config, workdir: str) -> float | None:
    """The configured threshold, else the 95%-TPR one found by evaluation."""
    if config.ood_threshold is not None:
        return float(config.ood_threshold)
    summary_path = os.path.join(workdir, "eval", "summary.json")
    if not os.path.exists(summary_path):
        return None
    with open(summary_path) as f:
        ood = json.load(f)["selected"].get("ood", {})
    entry = ood.get(config.ood_score)
    return None if entry is None else float(entry["threshold_at_95_tpr"])


def predict_files(config, workdir: str, inputs, *, checkpoint: int | None = None
                  ) -> list[Prediction]:
    if config.ood_score == "mahalanobis":
        raise ValueError("config.ood_score: prediction supports msp, max_logit "
                         "and energy (Mahalanobis needs the source features)")
    paths = expand_inputs(inputs)
    built = experiment.build(config, parallel=experiment.single_device())
    feature_config = built.source.corpus.feature_config
    extractor = FeatureExtractor(feature_config)  # refuses features made elsewhere
    _, state, _ = experiment.restore(config, workdir, checkpoint, built=built)
    target, parallel, classes = built.target, built.parallel, built.classes
    eval_step = parallel.compile_eval(step_lib.make_eval_step(built.model))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    threshold = _ood_threshold(config, workdir)

    def score(path: str) -> Prediction:
        """One file's verdict, or its error."""
        if not os.path.isfile(path):
            return Prediction(path, error="file not found")
        try:
            loaded = audio.load_audio(path, feature_config.sample_rate)
        except (audio.AudioProblem, OSError) as problem:
            return Prediction(path, error=str(problem))
        frames = target.normalize({"features": extractor(loaded.waveform)})
        starts = window_starts(frames.shape[0], config.data.eval_num_frames)
        logits = np.concatenate([np.asarray(jax.device_get(eval_step(
            variables, parallel.put_batch(chunk)))["logits"])[:valid]
            for chunk, valid in _window_batches(frames, starts,
                                                config.data.eval_num_frames)])
        logits = np.asarray(losses.posterior_logits(
            logits, config.model.classifier, config.loss.am_scale))
        probs = np.asarray(jax.nn.softmax(logits, -1))         # [windows, C]
        scores = np.asarray(ood_lib.SCORES[config.ood_score](logits))
        # The file's verdict: the mean posterior and the mean score of its
        # windows (each window covers the same number of frames).
        combined, ood_score = probs.mean(0), float(scores.mean())
        seconds = feature_config.hop_ms / 1000
        windows = [{"start_s": round(start * seconds, 3),
                    "end_s": round(min(start + config.data.eval_num_frames,
                                       frames.shape[0]) * seconds, 3),
                    "probabilities": {c: float(p) for c, p in zip(classes, row)}}
                   for start, row in zip(starts, probs)]
        return Prediction(
            path, emotion=classes[int(np.argmax(combined))],
            probabilities={c: float(p) for c, p in zip(classes, combined)},
            ood_score=ood_score,
            out_of_distribution=(None if threshold is None
                                 else bool(ood_score < threshold)),
            windows=windows)

    # Several processes: each scores every process_count-th file on its own
    # device, and every process returns all results, in input order.
    shares = distributed.gather_json(
        [dataclasses.asdict(score(path))
         for path in paths[jax.process_index()::jax.process_count()]])
    ordered = [None] * len(paths)
    for k, share in enumerate(shares):
        ordered[k::len(shares)] = [Prediction(**row) for row in share]
    return ordered


def window_starts(num_frames: int, window: int) -> list[int]:
    """First frames of windows of ``window`` frames covering a file of
    ``num_frames``: every half window, the last one ending at the file's
    end; a file no longer than one window is one window."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, window // 2 or 1))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


_WINDOWS_PER_BATCH = 8  # one compiled shape for any file length


def _window_batches(frames: np.ndarray, starts, window: int):
    """(batch, number of real windows) chunks of the windows of one file,
    padded to a fixed batch with empty windows."""
    for first in range(0, len(starts), _WINDOWS_PER_BATCH):
        chunk = starts[first:first + _WINDOWS_PER_BATCH]
        batch = np.zeros((_WINDOWS_PER_BATCH, window, frames.shape[1]), np.float32)
        mask = np.zeros((_WINDOWS_PER_BATCH, window), bool)
        mask[len(chunk):, 0] = True  # padding rows: one valid frame, ignored
        for row, start in enumerate(chunk):
            piece = frames[start:start + window]
            batch[row, :len(piece)] = piece
            mask[row, :len(piece)] = True
        yield {"frames": batch, "mask": mask}, len(chunk)


def format_predictions(results, as_json: bool) -> str:
    if as_json:
        return json.dumps([dataclasses.asdict(r) for r in results], indent=2)
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.path}: ERROR {r.error}")
            continue
        probs = "  ".join(f"{c}={p:.3f}" for c, p in r.probabilities.items())
        flag = {None: "ood=unknown (no threshold)", True: "OOD", False: "in-task"}[
            r.out_of_distribution]
        lines.append(f"{r.path}: {r.emotion}  [{probs}]  {flag}")
    return "\n".join(lines)
