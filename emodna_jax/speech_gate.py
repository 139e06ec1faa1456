"""Is it speech at all?  A gate in front of the emotion classifier.

A classifier of four emotions has no "none of these" answer: white noise,
a tone or music gets one of the four, often with full confidence, and the
OOD scores of emodna_jax/ood.py, fitted on speech of other emotions, do not
catch it.  Speech has a rhythm no steady sound has: syllables (voiced
stretches of a fraction of a second) alternate with consonants and pauses,
so the frame energy swings by tens of dB and the voicing comes and goes.
The gate reads the pitch tracks data_prep already computes (voicing NCCF,
log energy; ``data_prep.features.pitch_features``) and rejects a file when

* its frame energy hardly varies (the 95th minus the 5th percentile under
  ``MIN_ENERGY_RANGE_DB``): a steady noise, hum, tone or near-silence;
* almost none of it is voiced (under ``MIN_VOICED_SHARE``): noise;
* almost all of it is voiced (over ``MAX_VOICED_SHARE``), or one voiced
  stretch lasts longer than ``MAX_VOICED_RUN_S``: a tone or music;
* its voiced stretches hold their pitch (at least ``MIN_STEADY_SHARE`` of
  the voiced frames lie in stretches whose F0 spans under
  ``STEADY_SEMITONES``) and nothing unvoiced comes near the voiced level
  (under ``MAX_CONSONANT_SHARE`` of the frames unvoiced and within
  ``CONSONANT_BELOW_DB`` of it): notes with pauses between them.  Speech has
  consonants (fricatives, bursts: loud and unvoiced); a monotone synthetic
  voice may hold its pitch, but not without them.

The bounds are fixed, not fitted to a corpus: the utterances of the eight
corpora of the benchmark span energy ranges of 9.3-52 dB, voiced shares of
0.18-0.98 and longest voiced stretches of 0.13-2.4 s, and the gate rejects
none of them (docs/results.md, "The speech gate", with the ranges of the
last rule's two shares).  Known limits: low-pass (brown) noise looks voiced
to the NCCF and passes, and so does music whose notes glide or carry
vibrato.
"""

from __future__ import annotations

import numpy as np

from data_prep.features import VOICING_THRESHOLD

MIN_ENERGY_RANGE_DB = 6.0
MIN_VOICED_SHARE = 0.1
MAX_VOICED_SHARE = 0.99
MAX_VOICED_RUN_S = 4.0
MIN_STEADY_SHARE = 0.9
STEADY_SEMITONES = 0.5     # 10th to 90th percentile of F0 within a stretch
STEADY_MIN_RUN_S = 0.1     # shorter voiced stretches are not judged
MAX_CONSONANT_SHARE = 0.005
CONSONANT_BELOW_DB = 25.0  # an unvoiced frame this close to the voiced median


def _runs(flags: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in ``flags``."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def descriptors(tracks: np.ndarray, hop_s: float) -> dict:
    """What the gate reads of one file's ``tracks`` [T, 3] (log F0, NCCF,
    log energy, as stored by ``logmel_pitch``), ``hop_s`` apart."""
    tracks = np.asarray(tracks, np.float64)
    voiced = tracks[:, 1] >= VOICING_THRESHOLD
    energy_db = tracks[:, 2] * 10 / np.log(10)      # log power -> dB
    runs = _runs(voiced)
    return {"energy_range_db": float(np.percentile(energy_db, 95)
                                     - np.percentile(energy_db, 5)),
            "voiced_share": float(voiced.mean()),
            "longest_voiced_s": float(runs.max() * hop_s) if len(runs) else 0.0,
            "steady_pitch_share": _steady_share(tracks[:, 0], voiced, hop_s),
            "consonant_share": (float(((~voiced) & (energy_db > np.median(
                energy_db[voiced]) - CONSONANT_BELOW_DB)).mean()) if voiced.any()
                else 0.0)}


def _steady_share(log_f0: np.ndarray, voiced: np.ndarray, hop_s: float) -> float:
    """The share of the voiced frames (in stretches of ``STEADY_MIN_RUN_S``
    or more) whose stretch's F0 spans under ``STEADY_SEMITONES``."""
    semitones = log_f0 * 12 / np.log(2)
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    judged = steady = 0
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if (end - start) * hop_s < STEADY_MIN_RUN_S:
            continue
        span = np.percentile(semitones[start:end], 90) - np.percentile(
            semitones[start:end], 10)
        judged += end - start
        steady += (end - start) if span < STEADY_SEMITONES else 0
    return steady / judged if judged else 0.0


def verdict(values: dict) -> str | None:
    """None for speech, else why the file is not."""
    if values["energy_range_db"] < MIN_ENERGY_RANGE_DB:
        return (f"not speech: its level hardly varies ({values['energy_range_db']:.1f} dB "
                f"between quiet and loud frames; speech swings by {MIN_ENERGY_RANGE_DB:g} "
                "dB or more): a steady noise, tone or near-silence")
    if values["voiced_share"] < MIN_VOICED_SHARE:
        return (f"not speech: {values['voiced_share']:.0%} of it is voiced "
                f"(speech: {MIN_VOICED_SHARE:.0%} or more): noise")
    if values["voiced_share"] > MAX_VOICED_SHARE:
        return (f"not speech: {values['voiced_share']:.0%} of it is voiced, without a "
                "pause or consonant: a tone or music")
    if values["longest_voiced_s"] > MAX_VOICED_RUN_S:
        return (f"not speech: one voiced stretch lasts {values['longest_voiced_s']:.1f} s "
                f"(speech: under {MAX_VOICED_RUN_S:g} s): a tone or music")
    if (values["steady_pitch_share"] >= MIN_STEADY_SHARE
            and values["consonant_share"] < MAX_CONSONANT_SHARE):
        return (f"not speech: {values['steady_pitch_share']:.0%} of its voiced sound "
                f"holds one pitch per stretch, and {values['consonant_share']:.1%} of it "
                "is loud and unvoiced (speech has consonants): notes, music")
    return None
