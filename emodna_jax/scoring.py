"""How a whole utterance is scored: windows, then the mean of their outputs.

Evaluation, the train loop's clustering and prediction all score an
utterance this way, so the UAR a report gives is what a user's prediction
of the same audio computes.  An utterance no longer than ``window`` frames
is one window (padded, masked); a longer one is covered by windows of
``window`` frames every half window, the last one ending at its last frame,
and its outputs are the mean of its windows' (logits and embeddings alike;
unit-length projections are renormalised).  Each window covers the same
number of frames, so the plain mean weighs every part of the utterance
about equally.  Numpy only: the ONNX backend of prediction uses it too.
"""

from __future__ import annotations

import numpy as np

# Outputs that are unit vectors per window, renormalised after the mean.
UNIT_OUTPUTS = ("z_e", "z_c")


def window_starts(num_frames: int, window: int) -> list[int]:
    """First frames of the windows covering ``num_frames`` frames: one
    window when the utterance fits, else every half window with the last
    one ending at the last frame."""
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, window // 2 or 1))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


def window(frames: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(frames [length, F], mask [length])`` of the window at ``start``,
    zero-padded past the utterance's end."""
    piece = frames[start:start + length]
    out = np.zeros((length, frames.shape[1]), np.float32)
    out[:len(piece)] = piece
    return out, np.arange(length) < len(piece)


def combine(outputs: dict, utterance: np.ndarray) -> tuple[np.ndarray, dict]:
    """``(utterances, per-utterance outputs)``: the mean of each output over
    the windows of each utterance; ``utterance`` [W] names each window's
    utterance, and the result is in ascending utterance order."""
    ids, inverse, counts = np.unique(utterance, return_inverse=True, return_counts=True)
    combined = {}
    for key, values in outputs.items():
        values = np.asarray(values)
        total = np.zeros((len(ids),) + values.shape[1:], np.float64)
        np.add.at(total, inverse, values)
        mean = (total / counts.reshape((-1,) + (1,) * (values.ndim - 1))).astype(values.dtype)
        if key in UNIT_OUTPUTS:     # one window stays exactly as it was
            several = counts > 1
            mean[several] /= np.linalg.norm(mean[several], axis=-1, keepdims=True)
        combined[key] = mean
    return ids, combined
