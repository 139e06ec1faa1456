"""Synthetic emotional-speech corpora for the quickstart and the tests.

No real emotional-speech corpus can be downloaded in CI, yet the pipeline needs
two corpora whose emotions are learnable within each and whose recording
conditions differ between them (the cross-corpus shift domain adaptation is
meant to undo).  This module makes such a pair with a small source-filter
synthesiser written in numpy:

* source: a band-limited glottal pulse train following an F0 contour, with
  per-period jitter and shimmer, some aspiration noise and a spectral tilt;
* filter: a cascade of formant resonators per vowel, with noise bursts for
  consonants and pauses in between;
* emotion: F0 level, range, contour and tremor, speaking rate, vocal effort
  (level and tilt), jitter and shimmer, drawn per utterance around a profile so
  the classes overlap;
* corpus: its own speakers, sample rate, class balance, expression intensity
  and channel (band limits, equalisation, reverberation, noise).

Everything is deterministic for a given (spec, seed): each speaker and each
utterance draws from its own ``np.random.SeedSequence`` keyed on the seed, the
corpus name and the utterance's identity, never on generation order.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import zlib
from typing import Mapping, Optional, Sequence

import numpy as np
import soundfile as sf

from data_prep.labels import EMOTIONS

DEFAULT_EMOTIONS = ("neutral", "angry", "happy", "sad", "fear")

MANIFEST_NAME = "manifest.csv"
MANIFEST_HEADER = ("path", "emotion", "speaker", "gender")


@dataclasses.dataclass(frozen=True)
class EmotionProfile:
    """How one emotion is spoken, as the centre of a per-utterance draw.

    Attributes:
      f0_shift: semitones above (below) the speaker's base F0.
      f0_range: semitones spanned by the intonation contour.
      contour: overall intonation shape: 'falling', 'rising', 'flat' or 'arch'.
      tremor: depth in semitones of a 5-7 Hz F0 tremor.
      rate: syllables per second.
      level: peak amplitude of the written file, the vocal-effort cue that
        survives normalisation.
      jitter: standard deviation of the per-period relative F0 perturbation.
      shimmer: standard deviation of the per-period relative amplitude
        perturbation.
      tilt: glottal harmonic k has amplitude k**-tilt; low tilt means a
        pressed, bright voice and high tilt a lax, dull one.
      breath: aspiration-noise amplitude relative to the harmonic source.
    """
    f0_shift: float
    f0_range: float
    contour: str
    tremor: float
    rate: float
    level: float
    jitter: float
    shimmer: float
    tilt: float
    breath: float


# Profiles after the usual findings on acted emotional speech: high-arousal
# emotions (angry, happy, fear) are higher, faster, louder and brighter; sad is
# low, slow, quiet, monotone and breathy; fear trembles and is irregular.
EMOTION_PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(f0_shift=0.0, f0_range=4.0, contour="falling",
                              tremor=0.0, rate=4.0, level=0.55, jitter=0.008,
                              shimmer=0.04, tilt=1.9, breath=0.05),
    "angry": EmotionProfile(f0_shift=4.0, f0_range=7.0, contour="falling",
                            tremor=0.0, rate=5.3, level=0.9, jitter=0.012,
                            shimmer=0.05, tilt=0.9, breath=0.02),
    "happy": EmotionProfile(f0_shift=7.0, f0_range=12.0, contour="rising",
                            tremor=0.0, rate=4.5, level=0.7, jitter=0.010,
                            shimmer=0.05, tilt=1.5, breath=0.05),
    "sad": EmotionProfile(f0_shift=-3.0, f0_range=2.0, contour="falling",
                          tremor=0.0, rate=2.9, level=0.33, jitter=0.015,
                          shimmer=0.07, tilt=2.7, breath=0.18),
    "fear": EmotionProfile(f0_shift=9.0, f0_range=5.0, contour="flat",
                           tremor=0.9, rate=5.8, level=0.6, jitter=0.035,
                           shimmer=0.12, tilt=1.6, breath=0.12),
}

_NUMERIC_FIELDS = ("f0_shift", "f0_range", "tremor", "rate", "level", "jitter",
                   "shimmer", "tilt", "breath")

# Vowel formants F1..F5 (Hz) of an average adult voice; a speaker's formant
# scale stretches them (shorter vocal tract, higher formants).
_VOWELS = np.array([
    [730.0, 1090.0, 2440.0, 3400.0, 4400.0],  # a
    [530.0, 1840.0, 2480.0, 3500.0, 4500.0],  # e
    [270.0, 2290.0, 3010.0, 3700.0, 4600.0],  # i
    [570.0, 840.0, 2410.0, 3300.0, 4300.0],   # o
    [300.0, 870.0, 2240.0, 3300.0, 4300.0],   # u
])
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0, 260.0])


@dataclasses.dataclass(frozen=True)
class ChannelSpec:
    """The recording chain a corpus was captured through.

    Attributes:
      highpass_hz: high-pass corner (4th-order magnitude), 0 for none.
      lowpass_hz: low-pass corner (8th-order magnitude), None for none.
      eq_db_per_octave: equalisation tilt around 1 kHz (microphone colour).
      snr_db: range the per-utterance SNR of a neutral-level utterance is drawn
        from; the noise is at a fixed level, so quieter speech gets less SNR.
      noise_color: noise spectral slope, 0 white, 1 pink, 2 brown.
      rt60_s: range the reverberation time is drawn from; (0, 0) for none.
      drr_db: direct-to-reverberant energy ratio.
    """
    highpass_hz: float = 0.0
    lowpass_hz: Optional[float] = None
    eq_db_per_octave: float = 0.0
    snr_db: tuple[float, float] = (50.0, 60.0)
    noise_color: float = 0.0
    rt60_s: tuple[float, float] = (0.0, 0.0)
    drr_db: float = 10.0


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """What one synthetic corpus looks like.

    Attributes:
      name: corpus name; also the directory name and the speaker-id prefix.
      sample_rate: of the written files.
      n_speakers: speaker count.
      female_fraction: share of female speakers (rounded).
      utterances_per_speaker: utterances each speaker records, spread over the
        emotions by ``class_proportions``.
      emotions: canonical emotion names, each with an entry in
        :data:`EMOTION_PROFILES`.
      class_proportions: emotion -> weight; None for balanced classes.
      channel: the recording chain.
      intensity: how far emotions deviate from neutral (1 = the profiles,
        below 1 subtler, above 1 more exaggerated).
      duration_s: (shortest, longest) utterance duration in seconds.
    """
    name: str
    sample_rate: int
    n_speakers: int = 8
    female_fraction: float = 0.5
    utterances_per_speaker: int = 45
    emotions: tuple[str, ...] = DEFAULT_EMOTIONS
    class_proportions: Optional[Mapping[str, float]] = None
    channel: ChannelSpec = ChannelSpec()
    intensity: float = 1.0
    duration_s: tuple[float, float] = (1.0, 2.5)

    def __post_init__(self):
        unknown = [e for e in self.emotions if e not in EMOTION_PROFILES]
        if unknown:
            raise ValueError(f"{self.name}: no synthesis profile for {unknown}; "
                             f"known: {sorted(EMOTION_PROFILES)}")
        if len(set(self.emotions)) != len(self.emotions) or not self.emotions:
            raise ValueError(f"{self.name}: emotions must be distinct and "
                             f"non-empty, got {self.emotions}")
        if self.class_proportions is not None:
            if set(self.class_proportions) != set(self.emotions):
                raise ValueError(f"{self.name}: class_proportions keys "
                                 f"{sorted(self.class_proportions)} differ from "
                                 f"emotions {sorted(self.emotions)}")
            if any(w < 0 for w in self.class_proportions.values()) or not any(
                    w > 0 for w in self.class_proportions.values()):
                raise ValueError(f"{self.name}: class_proportions must be "
                                 "non-negative and not all zero")
        lo, hi = self.duration_s
        if not 0.5 <= lo <= hi:
            raise ValueError(f"{self.name}: duration_s must satisfy "
                             f"0.5 <= lo <= hi, got {self.duration_s}")
        if self.n_speakers < 1 or self.utterances_per_speaker < 1:
            raise ValueError(f"{self.name}: need at least one speaker and one "
                             "utterance per speaker")
        if self.sample_rate < 8000:
            raise ValueError(f"{self.name}: sample_rate must be >= 8000")

    def counts_per_speaker(self) -> dict[str, int]:
        """Utterances per emotion for each speaker (largest-remainder split)."""
        n = self.utterances_per_speaker
        if self.class_proportions is None:
            weights = np.ones(len(self.emotions))
        else:
            weights = np.array([self.class_proportions[e] for e in self.emotions],
                               dtype=float)
        exact = n * weights / weights.sum()
        counts = np.floor(exact).astype(int)
        # Stable order on ties so counts never depend on float noise.
        order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
        for i in order[: n - counts.sum()]:
            counts[i] += 1
        return {e: int(c) for e, c in zip(self.emotions, counts)}

    def speakers(self) -> list[tuple[str, str]]:
        """(speaker id, gender) pairs; ids carry the corpus name, so unique."""
        n_female = int(round(self.n_speakers * self.female_fraction))
        out = [(f"{self.name}_f{i:02d}", "female") for i in range(n_female)]
        out += [(f"{self.name}_m{i:02d}", "male")
                for i in range(self.n_speakers - n_female)]
        return out

    def to_json(self) -> dict:
        """A plain-dict description, written next to the manifest."""
        return dataclasses.asdict(self)


def default_pair() -> tuple[CorpusSpec, CorpusSpec]:
    """The quickstart pair: a clean balanced source and a shifted target.

    ``synth_studio`` is a clean 16 kHz studio recording with balanced classes
    and full expression; ``synth_field`` is recorded at 22.05 kHz through a
    band-limited, bright, noisy and reverberant chain, with imbalanced classes
    (neutral dominant) and subtler expression.  Both have 8 speakers, disjoint.
    """
    studio = CorpusSpec(
        name="synth_studio",
        sample_rate=16000,
        n_speakers=8,
        female_fraction=0.5,
        utterances_per_speaker=45,
        class_proportions=None,
        channel=ChannelSpec(snr_db=(45.0, 55.0)),
        intensity=1.0,
        duration_s=(1.0, 2.5),
    )
    field = CorpusSpec(
        name="synth_field",
        sample_rate=22050,
        n_speakers=8,
        female_fraction=0.5,
        utterances_per_speaker=45,
        class_proportions={"neutral": 0.34, "angry": 0.14, "happy": 0.18,
                           "sad": 0.22, "fear": 0.12},
        channel=ChannelSpec(highpass_hz=250.0, lowpass_hz=4500.0,
                            eq_db_per_octave=3.0, snr_db=(20.0, 30.0),
                            noise_color=1.0, rt60_s=(0.3, 0.6), drr_db=4.0),
        intensity=0.9,
        duration_s=(1.0, 2.5),
    )
    return studio, field


# ---------------------------------------------------------------------------
# Random streams.

def _name_key(name: str) -> int:
    # crc32 rather than hash(): stable across processes and Python versions.
    return zlib.crc32(name.encode("utf-8"))


def _speaker_rng(seed: int, corpus: str, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, _name_key(corpus), 1, index]))


def _utterance_rng(seed: int, corpus: str, speaker: int, emotion: str,
                   take: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(
        [seed, _name_key(corpus), 2, speaker, EMOTIONS.index(emotion), take]))


@dataclasses.dataclass(frozen=True)
class _Speaker:
    ident: str
    gender: str
    base_f0: float
    formant_scale: float
    # Idiosyncrasies, so that speaker-independent evaluation means something.
    rate_factor: float
    effort: float
    tilt_offset: float
    f0_range_factor: float


def _draw_speaker(rng: np.random.Generator, ident: str, gender: str) -> _Speaker:
    if gender == "female":
        f0 = rng.uniform(180.0, 240.0)
        scale = rng.uniform(1.0, 1.15)
    else:
        f0 = rng.uniform(100.0, 140.0)
        scale = rng.uniform(0.85, 1.0)
    return _Speaker(ident=ident, gender=gender, base_f0=float(f0),
                    formant_scale=float(scale),
                    rate_factor=float(np.exp(rng.normal(0.0, 0.07))),
                    effort=float(np.exp(rng.normal(0.0, 0.07))),
                    tilt_offset=float(rng.normal(0.0, 0.12)),
                    f0_range_factor=float(np.exp(rng.normal(0.0, 0.12))))


def _utterance_profile(emotion: str, intensity: float, speaker: _Speaker,
                       rng: np.random.Generator) -> EmotionProfile:
    """The emotion's profile, scaled by intensity, personalised and jittered."""
    base = EMOTION_PROFILES["neutral"]
    target = EMOTION_PROFILES[emotion]
    v = {f: getattr(base, f) + intensity * (getattr(target, f) - getattr(base, f))
         for f in _NUMERIC_FIELDS}
    # Per-utterance spread: wide enough that neighbouring classes overlap.
    v["f0_shift"] += rng.normal(0.0, 1.0)
    v["f0_range"] *= speaker.f0_range_factor * np.exp(rng.normal(0.0, 0.2))
    v["tremor"] *= np.exp(rng.normal(0.0, 0.25))
    v["rate"] *= speaker.rate_factor * np.exp(rng.normal(0.0, 0.08))
    v["level"] *= speaker.effort * np.exp(rng.normal(0.0, 0.1))
    v["jitter"] *= np.exp(rng.normal(0.0, 0.3))
    v["shimmer"] *= np.exp(rng.normal(0.0, 0.3))
    v["tilt"] += speaker.tilt_offset + rng.normal(0.0, 0.15)
    v["breath"] *= np.exp(rng.normal(0.0, 0.3))
    v["level"] = float(np.clip(v["level"], 0.2, 0.92))
    v["tilt"] = max(v["tilt"], 0.5)
    v["rate"] = max(v["rate"], 1.5)
    return EmotionProfile(contour=target.contour, **{k: float(x) for k, x in v.items()})


# ---------------------------------------------------------------------------
# Synthesis.

def _raised_cosine_envelope(n: int, attack: int, decay: int) -> np.ndarray:
    """1 in the middle, half-cosine ramps at both ends: no clicks."""
    env = np.ones(n)
    attack = min(attack, n // 2)
    decay = min(decay, n - attack)
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(attack) + 0.5) / attack)
    if decay > 0:
        env[n - decay:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(decay) + 0.5) / decay)
    return env


def _contour_shape(kind: str, u: np.ndarray) -> np.ndarray:
    """Intonation shape over normalised time u in [0, 1], spanning [-0.5, 0.5]."""
    if kind == "falling":
        return 0.5 - u
    if kind == "rising":
        return u - 0.5
    if kind == "arch":
        return np.sin(np.pi * u) - 0.5
    if kind == "flat":
        return np.zeros_like(u)
    raise ValueError(f"unknown contour {kind!r}")


def _plan_syllables(duration: float, rate: float, rng: np.random.Generator):
    """Splits the utterance into (consonant, vowel) spans, in seconds."""
    lead = rng.uniform(0.05, 0.15)
    tail = rng.uniform(0.08, 0.2)
    end = duration - tail
    t = lead
    spans = []  # (kind, start, stop); kind 'burst', 'pause' or 'vowel'
    while True:
        period = np.exp(rng.normal(0.0, 0.15)) / rate
        cons = period * rng.uniform(0.2, 0.35)
        if spans and t + period > end:
            break
        if not spans:
            # The first syllable must fit even in the shortest utterance.
            period = min(period, end - t)
            cons = period * 0.25
        kind = "burst" if rng.random() < 0.65 else "pause"
        spans.append((kind, t, t + cons))
        spans.append(("vowel", t + cons, t + period))
        t += period
        if rng.random() < 0.08:  # an occasional phrase break
            t += rng.uniform(0.08, 0.2)
    return spans


def _resonators(freqs: np.ndarray, centres: np.ndarray,
                bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of 2-pole resonators (unit gain at DC), per row of centres.

    centres, bandwidths: (rows, n_formants); returns (rows, len(freqs)).
    """
    f = freqs[None, None, :]
    c = centres[:, :, None]
    b = bandwidths[:, :, None]
    h = c * c / (c * c - f * f + 1j * f * b)
    return np.prod(h, axis=1)


def _synthesise(p: EmotionProfile, speaker: _Speaker, sr: int, duration: float,
                rng: np.random.Generator) -> np.ndarray:
    """One dry utterance: source-filter synthesis of a syllable sequence."""
    n = int(round(duration * sr))
    spans = _plan_syllables(duration, p.rate, rng)
    vowels = [(a, b) for kind, a, b in spans if kind == "vowel"]
    bursts = [(a, b) for kind, a, b in spans if kind == "burst"]

    # F0 contour in semitones, on a 5 ms grid: global shape, one pitch accent
    # per syllable, tremor.
    hop = 0.005
    grid = np.arange(0.0, duration + hop, hop)
    u = grid / duration
    semis = p.f0_shift + p.f0_range * _contour_shape(p.contour, u)
    centres = np.array([(a + b) / 2 for a, b in vowels])
    accents = rng.normal(0.0, 0.3 * p.f0_range, size=len(centres))
    semis += np.interp(grid, centres, accents)
    if p.tremor > 0:
        tremor_hz = rng.uniform(5.0, 7.0)
        semis += p.tremor * np.sin(2 * np.pi * tremor_hz * grid + rng.uniform(0, 2 * np.pi))
    f0_grid = speaker.base_f0 * 2.0 ** (semis / 12.0)
    f0_grid = np.clip(f0_grid, 60.0, 600.0)
    t = np.arange(n) / sr
    f0 = np.interp(t, grid, f0_grid)

    # Jitter: a random relative F0 offset per glottal period, interpolated
    # between periods so the phase stays continuous.
    cycles = np.cumsum(f0) / sr
    n_periods = int(cycles[-1]) + 3
    idx = np.arange(n_periods)
    f0 = f0 * (1.0 + p.jitter * np.interp(cycles, idx, rng.standard_normal(n_periods)))
    cycles = np.cumsum(f0) / sr
    amp = 1.0 + p.shimmer * np.interp(cycles, idx, rng.standard_normal(n_periods))
    amp = np.maximum(amp, 0.0)

    # Band-limited pulse train: sum_{k=1..K} cos(k*theta) in closed form, with
    # K fixed so that K * max(F0) stays below 0.9 * Nyquist (no aliasing).  The
    # k**-tilt harmonic roll-off is applied in the frequency domain below,
    # together with the vocal tract, which is exact for a steady F0 and cheaper
    # than summing a hundred sines per sample.
    k_max = max(1, int(0.45 * sr / f0.max()))
    theta = 2 * np.pi * np.mod(cycles, 1.0)
    half = np.sin(theta / 2)
    safe = np.abs(half) > 1e-9
    dirichlet = np.where(safe, np.sin((k_max + 0.5) * theta) / np.where(safe, 2 * half, 1.0),
                         k_max + 0.5) - 0.5
    source = amp * dirichlet / k_max
    source += p.breath * amp * rng.standard_normal(n) * np.sqrt(2.0 / k_max)

    # Every segment is filtered in one batch: rows of a padded matrix.
    pad = int(0.04 * sr)
    seg_bounds = [(int(a * sr), int(b * sr)) for a, b in vowels + bursts]
    longest = max(b - a for a, b in seg_bounds)
    n_fft = 1 << int(np.ceil(np.log2(longest + pad)))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    rows = np.zeros((len(seg_bounds), n_fft))
    for r, (a, b) in enumerate(seg_bounds):
        m = b - a
        is_vowel = r < len(vowels)
        attack = int((0.02 if is_vowel else 0.008) * sr)
        decay = int((0.035 if is_vowel else 0.015) * sr)
        exc = source[a:b] if is_vowel else rng.standard_normal(m)
        rows[r, :m] = exc * _raised_cosine_envelope(m, attack, decay)

    spectra = np.fft.rfft(rows, axis=1)
    nv = len(vowels)
    # Vowels: glottal tilt, lip radiation (+6 dB/oct) and formant cascade.
    which = rng.integers(0, len(_VOWELS), size=nv)
    formants = _VOWELS[which] * speaker.formant_scale
    formants *= np.exp(rng.normal(0.0, 0.04, size=formants.shape))
    fl = np.maximum(freqs, 50.0)
    glottal = (fl / 100.0) ** (-p.tilt) * (fl / 100.0)
    dc_block = 1.0 / np.sqrt(1.0 + (60.0 / np.maximum(freqs, 1e-3)) ** 4)
    h_vowel = _resonators(freqs, formants, np.broadcast_to(_BANDWIDTHS, formants.shape))
    spectra[:nv] *= h_vowel * (glottal * dc_block)[None, :]
    # Bursts: broad frication noise centred between 2.5 and 6 kHz.
    nb = len(bursts)
    if nb:
        fc = np.minimum(rng.uniform(2500.0, 6000.0, size=(nb, 1)), 0.4 * sr)
        h_burst = _resonators(freqs, fc, 0.6 * fc) * (fl / fc) ** 2
        spectra[nv:] *= h_burst / np.abs(h_burst).max(axis=1, keepdims=True)
    out_rows = np.fft.irfft(spectra, n=n_fft, axis=1)

    # Syllable stress, and frication at a fixed level below the vowels.
    stress = np.exp(rng.normal(0.0, 0.2, size=nv))
    out_rows[:nv] *= stress[:, None]
    vowel_rms = np.sqrt(np.mean(np.concatenate(
        [out_rows[r, : b - a] for r, (a, b) in enumerate(seg_bounds[:nv])]) ** 2))
    if nb:
        burst_rms = np.sqrt(np.mean(out_rows[nv:] ** 2, axis=1, keepdims=True)) + 1e-12
        rel = np.exp(rng.normal(np.log(0.1), 0.3, size=(nb, 1)))
        out_rows[nv:] *= rel * vowel_rms / burst_rms * np.sqrt(
            np.array([(b - a) / n_fft for a, b in seg_bounds[nv:]])[:, None])

    y = np.zeros(n + n_fft)
    for r, (a, _) in enumerate(seg_bounds):
        y[a:a + n_fft] += out_rows[r]
    return y[:n]


def _apply_channel(x: np.ndarray, sr: int, ch: ChannelSpec, level: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Room, then noise, then microphone/codec band limits and colour.

    Done in one frequency-domain pass (noise drawn directly as a spectrum,
    powers by Parseval): three power-of-two FFTs per utterance at most.
    """
    n = x.size
    # Noise at a fixed absolute level: loud (effortful) speech gets more SNR.
    snr = rng.uniform(*ch.snr_db) + 20 * np.log10(level / EMOTION_PROFILES["neutral"].level)
    rt60 = rng.uniform(*ch.rt60_s)
    ir_len = int(rt60 * sr) if rt60 > 0 else 0
    filtered = ch.highpass_hz > 0 or ch.lowpass_hz is not None or ch.eq_db_per_octave
    if not ir_len and not filtered and ch.noise_color == 0:
        noise = rng.standard_normal(n)
        return x + noise * np.sqrt(np.mean(x * x) * 10 ** (-snr / 10))

    n_fft = 1 << int(np.ceil(np.log2(n + ir_len + 1)))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    spec = np.fft.rfft(x, n_fft)
    if ir_len:
        # Direct path plus an exponentially decaying noise tail (-60 dB at rt60).
        tt = np.arange(1, ir_len) / sr
        tail = rng.standard_normal(ir_len - 1) * np.exp(-6.9078 * tt / rt60)
        tail *= np.sqrt(10 ** (-ch.drr_db / 10) / np.sum(tail * tail))
        spec *= np.fft.rfft(np.concatenate([[1.0], tail]), n_fft)

    white = rng.standard_normal((2, freqs.size))
    noise = white[0] + 1j * white[1]
    noise *= (np.maximum(freqs, 20.0) / 1000.0) ** (-ch.noise_color / 2.0)
    noise[0] = 0.0
    # Per-sample powers; the speech energy lives in the first n samples.
    sig_power = 2 * np.sum(np.abs(spec) ** 2) / n_fft / n
    noise_power = 2 * np.sum(np.abs(noise) ** 2) / n_fft / n_fft
    spec += noise * np.sqrt(sig_power * 10 ** (-snr / 10) / noise_power)

    if filtered:
        fl = np.maximum(freqs, 1.0)
        if ch.highpass_hz > 0:
            spec /= np.sqrt(1.0 + (ch.highpass_hz / fl) ** 8)
        if ch.lowpass_hz is not None:
            spec /= np.sqrt(1.0 + (freqs / ch.lowpass_hz) ** 16)
        if ch.eq_db_per_octave:
            spec *= 10 ** (ch.eq_db_per_octave * np.log2(np.maximum(freqs, 50.0) / 1000.0) / 20)
    return np.fft.irfft(spec, n_fft)[:n]


def synthesise_utterance(spec: CorpusSpec, speaker: _Speaker, emotion: str,
                         rng: np.random.Generator) -> np.ndarray:
    """One utterance as float32 in [-1, 1], through the corpus's channel."""
    p = _utterance_profile(emotion, spec.intensity, speaker, rng)
    duration = rng.uniform(*spec.duration_s)
    n = int(round(duration * spec.sample_rate))
    duration = n / spec.sample_rate
    dry = _synthesise(p, speaker, spec.sample_rate, duration, rng)
    dry /= np.abs(dry).max() + 1e-12
    wet = _apply_channel(dry, spec.sample_rate, spec.channel, p.level, rng)
    # Peak follows vocal effort, so level stays a cue after normalisation.
    wet *= p.level / (np.abs(wet).max() + 1e-12)
    return wet.astype(np.float32)


# ---------------------------------------------------------------------------
# Writing corpora.

def _is_complete(corpus_dir: pathlib.Path) -> bool:
    return (corpus_dir / MANIFEST_NAME).is_file()


def _write_corpus(spec: CorpusSpec, root: pathlib.Path, seed: int) -> None:
    rows = []
    counts = spec.counts_per_speaker()
    for s_idx, (ident, gender) in enumerate(spec.speakers()):
        speaker = _draw_speaker(_speaker_rng(seed, spec.name, s_idx), ident, gender)
        spk_dir = root / "wav" / ident
        spk_dir.mkdir(parents=True)
        for emotion in spec.emotions:
            for take in range(counts[emotion]):
                rng = _utterance_rng(seed, spec.name, s_idx, emotion, take)
                audio = synthesise_utterance(spec, speaker, emotion, rng)
                name = f"{ident}_{emotion}_{take:03d}.wav"
                sf.write(spk_dir / name, audio, spec.sample_rate, subtype="PCM_16",
                         format="WAV")
                rows.append((f"wav/{ident}/{name}", emotion, ident, gender))
    rows.sort()
    with open(root / "synthetic.json", "w", encoding="utf-8") as f:
        json.dump({"seed": seed, "spec": spec.to_json()}, f, indent=2, sort_keys=True)
        f.write("\n")
    # The manifest is written last: its presence marks a complete corpus.
    with open(root / MANIFEST_NAME, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)


def generate_corpus(spec: CorpusSpec, out_dir, seed: int = 0, *,
                    overwrite: bool = False) -> pathlib.Path:
    """Writes ``out_dir/<spec.name>/`` (WAVs and manifest.csv); returns the manifest.

    The corpus is built in a temporary directory beside the target and renamed
    into place at the end, so an interrupted run never leaves a partial corpus
    under the final name.  An existing complete corpus is kept unless
    ``overwrite``; one without a manifest (not ours, or broken) is replaced.
    """
    out_dir = pathlib.Path(out_dir)
    target = out_dir / spec.name
    if _is_complete(target) and not overwrite:
        return target / MANIFEST_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=out_dir))
    try:
        _write_corpus(spec, tmp, seed)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if target.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{spec.name}.old-", dir=out_dir))
            os.replace(target, old / spec.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, target)
            except OSError:
                # Someone else finished the same corpus meanwhile; keep theirs.
                if not _is_complete(target):
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target / MANIFEST_NAME


def generate_default_pair(out_dir, seed: int = 0,
                          overwrite: bool = False) -> dict[str, pathlib.Path]:
    """Generates both corpora of :func:`default_pair`; name -> manifest path."""
    return {spec.name: generate_corpus(spec, out_dir, seed, overwrite=overwrite)
            for spec in default_pair()}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description="Generate the synthetic source/target emotional-speech pair.")
    parser.add_argument("out_dir", help="directory to write the corpora under")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    for name, manifest in generate_default_pair(args.out_dir, args.seed,
                                                args.overwrite).items():
        print(f"{name}: {manifest}")


if __name__ == "__main__":
    main()
