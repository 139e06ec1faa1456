"""Reading one audio file and deciding whether it is usable.

Real corpora contain broken files: truncated headers, zero-length files,
recordings of silence, stereo or odd-rate exports.  Each problem is either
*fixable* (stereo is mixed down; a file whose rate differs from the rest of
its corpus is resampled like the others: both recorded as a conversion) or *fatal for that file* (raised as :class:`AudioProblem`, which
the builder turns into a skip with the reason, or into an error under
``--strict``).
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import soundfile as sf

# A file whose peak stays below this is treated as silence (-80 dBFS).
SILENCE_PEAK = 1e-4
# Shorter than this there is too little speech for an utterance-level label.
MIN_DURATION_S = 0.25


class AudioProblem(Exception):
    """A file cannot be used; ``str(exc)`` is the reason shown to the user."""


@dataclasses.dataclass(frozen=True)
class LoadedAudio:
    waveform: np.ndarray       # float32, mono, at the requested rate
    duration_s: float          # of the original recording
    conversions: tuple         # e.g. ('stereo->mono', '44100Hz->16000Hz')


def load_audio(path: str, sample_rate: int, *, corpus_rate: int | None = None,
               strict: bool = False,
               min_duration_s: float = MIN_DURATION_S) -> LoadedAudio:
    """Reads ``path`` as mono float32 at ``sample_rate``.

    Every file is resampled to ``sample_rate``; that alone is routine.  A file
    whose rate differs from ``corpus_rate`` (the rate most of its corpus uses)
    is an odd one out and is reported as converted.

    Raises:
      AudioProblem: the file is unreadable, empty, holds NaN/inf, is silent or
        too short; under ``strict`` also when it would need converting.
    """
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        raise AudioProblem(f"unreadable audio ({type(exc).__name__}: {exc})")
    if data.shape[0] == 0:
        raise AudioProblem("empty audio (0 samples)")
    if not np.all(np.isfinite(data)):
        raise AudioProblem("audio holds NaN or infinite samples")

    conversions = []
    if data.shape[1] > 1:
        conversions.append(f"{data.shape[1]} channels->mono")
    waveform = data.mean(axis=1)
    if corpus_rate is not None and file_rate != corpus_rate:
        conversions.append(f"odd rate {file_rate}Hz (corpus: {corpus_rate}Hz)")
    if strict and conversions:
        raise AudioProblem(
            "needs conversion (" + ", ".join(conversions) + ") and --strict is set")

    duration_s = waveform.shape[0] / file_rate
    if duration_s < min_duration_s:
        raise AudioProblem(
            f"too short ({duration_s:.3f} s < {min_duration_s} s)")
    if np.max(np.abs(waveform)) < SILENCE_PEAK:
        raise AudioProblem("silent (peak below -80 dBFS)")
    return LoadedAudio(to_rate(waveform, file_rate, sample_rate), duration_s,
                       tuple(conversions))


def to_rate(waveform: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """A mono waveform at ``rate`` resampled to ``sample_rate`` (float32)."""
    if rate != sample_rate:
        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(waveform, np.float32)
