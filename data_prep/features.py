"""Frame-level spectral features, computed with librosa.

The trainer never sees audio: every corpus is turned into log-mel (default) or
MFCC frames once, here.  Kind 'npy' brings features computed elsewhere
(WavLM, HuBERT, emotion2vec ...): each manifest row names a ``[T, D]`` .npy
file, which is checked and stored as it is.  The settings live in :class:`FeatureConfig`, which is
stored beside the shards so that prediction on new audio computes exactly the
same features as the data a model was trained on.
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np

FEATURE_KINDS = ("logmel", "mfcc", "logmel_pitch", "npy")
LOG_FLOOR = 1e-6  # keeps log(mel) finite on digital silence
# Pitch track of kind 'logmel_pitch' (three values per frame after the bands).
PITCH_RANGE_HZ = (60.0, 500.0)   # covers adult speech, low male to high female
VOICING_THRESHOLD = 0.5          # NCCF above it: a periodic (voiced) frame
PITCH_COLUMNS = ("log_f0", "nccf", "log_energy")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How waveforms become frames.

    Attributes:
      kind: 'logmel' (log of mel power), 'mfcc' (cepstra plus deltas and
        delta-deltas, so ``3 * n_mfcc`` values per frame), 'logmel_pitch'
        (log-mel plus log F0, voicing and log energy: ``n_mels + 3``; see
        :func:`pitch_features`) or 'npy' (the user's own).
      sample_rate: every file is resampled to this rate first.
      n_mels: mel bands (64 or 80 are usual for SER).
      n_mfcc: cepstral coefficients before deltas (13 gives the classic 39).
      win_ms: analysis window; 25 ms is the speech standard.
      hop_ms: frame step; 10 ms gives 100 frames per second.
      dtype: 'float32', or 'float16' to halve storage.
      npy_dim: D of the user's ``[T, D]`` features (kind 'npy' only).
    """
    kind: str = "logmel"
    sample_rate: int = 16000
    n_mels: int = 64
    n_mfcc: int = 13
    win_ms: float = 25.0
    hop_ms: float = 10.0
    dtype: str = "float32"
    npy_dim: int = 0

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(
                f"feature dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if self.sample_rate <= 0 or self.n_mels <= 0 or self.n_mfcc <= 0:
            raise ValueError(f"feature sizes must be positive: {self}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(
                f"n_mfcc={self.n_mfcc} cannot exceed n_mels={self.n_mels}")
        if (self.kind == "npy") != (self.npy_dim > 0):
            raise ValueError("npy_dim (--feature_dim) must be given for, and only "
                             f"for, feature kind 'npy': got kind {self.kind!r}, "
                             f"npy_dim {self.npy_dim}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise ValueError(
                f"need 0 < hop_ms <= win_ms, got {self.hop_ms} and {self.win_ms}")

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def n_fft(self) -> int:
        """The smallest power of two holding one window (400 -> 512)."""
        return int(2 ** np.ceil(np.log2(self.win_length)))

    @property
    def num_bins(self) -> int:
        return {"logmel": self.n_mels, "mfcc": 3 * self.n_mfcc,
                "logmel_pitch": self.n_mels + len(PITCH_COLUMNS),
                "npy": self.npy_dim}[self.kind]

    @property
    def num_tracks(self) -> int:
        """Values at the end of each frame that are per-frame tracks (pitch,
        voicing, energy), not spectral bins: an image model must not convolve
        them across the band axis as if they were neighbouring bands."""
        return len(PITCH_COLUMNS) if self.kind == "logmel_pitch" else 0

    def band_hz(self) -> np.ndarray:
        """The centre frequency of each mel band, in Hz: where the triangle of
        ``librosa.filters.mel`` (fmin 0, fmax Nyquist) peaks."""
        return librosa.mel_frequencies(self.n_mels + 2, fmin=0.0,
                                       fmax=self.sample_rate / 2)[1:-1]

    @property
    def name(self) -> str:
        """A short tag for directory names, e.g. 'logmel64-16k' or 'mfcc39-16k'."""
        if self.kind == "npy":  # computed elsewhere: no rate of ours
            return f"npy{self.npy_dim}" + ("-f16" if self.dtype == "float16" else "")
        rate = f"{self.sample_rate / 1000:g}k"
        suffix = "-f16" if self.dtype == "float16" else ""
        return f"{self.kind}{self.num_bins}-{rate}{suffix}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FeatureConfig":
        values = {"npy_dim": 0, **values}  # datasets written before kind 'npy'
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown feature settings: {unknown}")
        return cls(**values)


def load_npy_features(path: str, config: FeatureConfig) -> np.ndarray:
    """The ``[T, npy_dim]`` frames of a user's .npy file, in ``config.dtype``.

    Raises ValueError, naming the file, for anything but a finite 2-D array
    with ``npy_dim`` columns and at least one row.
    """
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read features: {error}") from None
    if frames.ndim != 2 or frames.shape[1] != config.npy_dim or not frames.shape[0]:
        raise ValueError(f"features have shape {frames.shape}; expected [T, "
                         f"{config.npy_dim}] with T >= 1 (--feature_dim="
                         f"{config.npy_dim})")
    if not np.issubdtype(frames.dtype, np.number) or not np.all(np.isfinite(frames)):
        raise ValueError("features are not all finite numbers")
    return np.ascontiguousarray(frames, dtype=config.dtype)


def fill_unvoiced(values: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """``values`` with unvoiced frames linearly interpolated between the
    nearest voiced ones (held flat before the first and after the last), so a
    pitch contour has no holes for normalisation to trip on; all unvoiced:
    the geometric centre of PITCH_RANGE_HZ, in log."""
    if not voiced.any():
        return np.full_like(values, 0.5 * np.log(np.prod(PITCH_RANGE_HZ)))
    index = np.arange(values.size)
    return np.interp(index, index[voiced], values[voiced]).astype(values.dtype)


def pitch_frame_length(sample_rate: int) -> int:
    """Samples of the pitch analysis window: two periods of the lowest F0,
    rounded up to a power of two."""
    return int(2 ** np.ceil(np.log2(2 * sample_rate / PITCH_RANGE_HZ[0])))


def pitch_features(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """``[T, 3]``: log F0, voicing (NCCF) and log energy per frame, on the
    STFT's frame grid (``1 + len // hop_length`` frames, centred).

    The prosody log-mel bands resolve poorly (Kaldi's "fbank + pitch" in
    spirit).  F0 is YIN's (``librosa.yin``, 60-500 Hz, a window of two
    periods of the lowest pitch); the voicing value is the normalised
    cross-correlation of each window with itself one pitch period later
    (near 1 for voiced speech, near 0 for noise and silence), and the log F0
    of frames under VOICING_THRESHOLD is interpolated from the voiced ones
    (:func:`fill_unvoiced`).  Log energy is the log mean square of the
    analysis window, the loudness cue that per-bin normalisation of the mel
    bands can remove.
    """
    cfg = config
    y = np.asarray(waveform, np.float32)
    low, high = PITCH_RANGE_HZ
    frame_length = pitch_frame_length(cfg.sample_rate)
    f0 = librosa.yin(y, fmin=low, fmax=high, sr=cfg.sample_rate,
                     frame_length=frame_length, hop_length=cfg.hop_length,
                     center=True)
    frames = librosa.util.frame(np.pad(y, frame_length // 2), frame_length=frame_length,
                                hop_length=cfg.hop_length)[:, :f0.size].T  # [T, L]
    period = np.clip(np.round(cfg.sample_rate / f0).astype(int), 1, frame_length - 1)
    lead = np.arange(frame_length)[None, :]
    valid = lead < frame_length - period[:, None]
    lagged = np.take_along_axis(frames, np.minimum(lead + period[:, None],
                                                   frame_length - 1), axis=1)
    head = np.where(valid, frames, 0.0)
    lagged = np.where(valid, lagged, 0.0)
    denominator = np.sqrt(np.sum(head ** 2, 1) * np.sum(lagged ** 2, 1))
    nccf = np.sum(head * lagged, 1) / np.maximum(denominator, 1e-10)
    log_f0 = fill_unvoiced(np.log(f0), nccf > VOICING_THRESHOLD)
    rms = librosa.feature.rms(y=y, frame_length=cfg.n_fft, hop_length=cfg.hop_length,
                              center=True)[0, :f0.size]
    log_energy = np.log(np.square(rms) + LOG_FLOOR)
    return np.stack([log_f0, nccf, log_energy], axis=1).astype(np.float32)


class FeatureExtractor:
    """Computes frames for one :class:`FeatureConfig`.

    The mel filterbank is built once per extractor rather than once per file,
    which is what ``librosa.feature.melspectrogram`` would do.
    """

    def __init__(self, config: FeatureConfig):
        if config.kind == "npy":
            raise ValueError(
                "this dataset's features ('npy', D=%d) were computed outside "
                "emodna_jax: audio cannot be turned into them here; compute the "
                "same features for the new audio and prepare them as a "
                "dataset (--feature=npy)" % config.npy_dim)
        self.config = config
        self._mel_basis = librosa.filters.mel(
            sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """Returns ``(num_frames, num_bins)`` features of a mono waveform.

        The waveform must already be at ``config.sample_rate``.  There are
        ``1 + len(waveform) // hop_length`` frames (centred STFT).
        """
        cfg = self.config
        spectrum = librosa.stft(
            np.asarray(waveform, np.float32), n_fft=cfg.n_fft,
            hop_length=cfg.hop_length, win_length=cfg.win_length)
        mel_power = self._mel_basis @ (np.abs(spectrum) ** 2)
        if cfg.kind == "logmel":
            frames = np.log(mel_power + LOG_FLOOR)
        elif cfg.kind == "logmel_pitch":
            frames = np.concatenate([np.log(mel_power + LOG_FLOOR),
                                     pitch_features(waveform, cfg).T], axis=0)
        else:
            cepstra = librosa.feature.mfcc(
                S=librosa.power_to_db(mel_power), n_mfcc=cfg.n_mfcc)
            frames = np.concatenate(
                [cepstra, librosa.feature.delta(cepstra),
                 librosa.feature.delta(cepstra, order=2)], axis=0)
        return np.ascontiguousarray(frames.T).astype(cfg.dtype)
