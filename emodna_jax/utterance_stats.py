"""Prosody statistics of a whole utterance, standardised per speaker.

``data.utterance_stats`` appends 18 numbers to every frame of an utterance,
as speech recognisers append an i-vector: statistics of its three prosody
tracks (``logmel_pitch``: log F0, voicing NCCF, log energy) over the whole
utterance, standardised with its speaker's statistics over all of the
speaker's utterances (no labels needed).

Why: the networks read the tracks frame by frame, standardised per speaker,
but that leaves utterance-level statistics speaker-dependent (a speaker's
usual pitch range or voicing rate).  On the five development corpora the
first 17 alone, standardised per speaker, reached 0.92-0.98 UAR on held-out
speakers with a logistic regression, against 0.70-0.87 standardised over the
corpus and 0.77-0.95 for MSAC-SERNet (docs/results.md, "Probe: what the
prosody tracks hold as utterance statistics").

The 18th, the energy velocity, is a tempo that does not grow with the
utterance: how fast loudness rises and falls, per frame.  Actors speak sad
slowly and angry fast; without it the statistics held no tempo but the
onset rate, and the utterance's length (which would mean nothing for a
file that is not one sentence) was worth 5 to 6 points on the shifted
corpora (docs/results.md, "What bounds the base model").  A checkpoint or
export made with the 17 reads frames one value narrower: train or export
it again.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NUM_STATS = 18
VOICED = 0.5   # NCCF of a voiced frame (data_prep/features.py)
SMOOTH_FRAMES = 5   # 50 ms at data_prep's 10 ms hop: under a syllable


def _five(values: np.ndarray) -> list[float]:
    return [values.mean(), values.std(), *np.percentile(values, (20, 50, 80))]


def energy_velocity(energy: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of the log energy, averaged over
    ``SMOOTH_FRAMES`` first: a per-frame rate, so it follows tempo and not
    length.  The average is over whole windows only (no padding, whose
    edges would add a term that shrinks with length); 0 for an utterance
    shorter than two windows' worth."""
    if len(energy) <= SMOOTH_FRAMES:
        return 0.0
    smooth = np.convolve(energy, np.full(SMOOTH_FRAMES, 1.0 / SMOOTH_FRAMES), "valid")
    return float(np.abs(np.diff(smooth)).mean())


def functionals(frames: np.ndarray, with_length: bool = False) -> np.ndarray:
    """18 (or 19) statistics of one utterance's last three columns (log F0,
    NCCF, log energy), as stored: F0 over voiced frames (every frame when
    none is voiced: unvoiced frames hold interpolated values); energy over
    all frames and over voiced frames (each mean, std, 20th/50th/80th
    percentile); the voiced share; voiced onsets per 100 frames; the energy
    velocity; with ``with_length`` the number of frames."""
    frames = np.asarray(frames, np.float64)
    f0, nccf, energy = frames[:, -3], frames[:, -2], frames[:, -1]
    voiced = nccf >= VOICED
    some = voiced if voiced.any() else np.ones_like(voiced)
    onsets = np.count_nonzero(np.diff(voiced.astype(np.int8)) == 1)
    out = (_five(f0[some]) + _five(energy) + _five(energy[some])
           + [voiced.mean(), 100.0 * onsets / len(frames), energy_velocity(energy)])
    return np.asarray(out + ([len(frames)] if with_length else []), np.float64)


@dataclasses.dataclass
class SpeakerStats:
    """Mean and std of the statistics over each speaker's utterances, and
    over the corpus's (for an utterance of unknown speaker, as in
    prediction).  A speaker's std is floored at a tenth of the corpus's: a
    speaker with few utterances would otherwise blow values up.  The raw
    statistics of every stored utterance are kept, by stored split, so that
    a whole split's come without a second pass over its audio features, and
    by stored path, so that reading an utterance again does not compute them
    again (158 us an utterance, a quarter of evaluation's host time)."""
    speaker_mean: dict
    speaker_std: dict
    corpus_mean: np.ndarray
    corpus_std: np.ndarray
    by_split: dict          # stored split -> (raw statistics [N, NUM_STATS], speakers [N])
    by_path: dict = dataclasses.field(default_factory=dict)   # path -> raw [NUM_STATS]

    @classmethod
    def of_corpus(cls, corpus) -> "SpeakerStats":
        """One pass over every utterance of a PreparedCorpus (no labels)."""
        by_split, by_path = {}, {}
        for split in corpus.metadata["partition_splits"]:
            data = corpus.source(split)
            values = np.empty((len(data), NUM_STATS))
            speakers = np.empty(len(data), np.int64)
            for i in range(len(data)):      # one utterance's frames at a time
                raw = data[i]
                values[i], speakers[i] = functionals(raw["features"]), int(raw["speaker"])
                if raw.get("path") is not None:
                    by_path[raw["path"]] = values[i]
            by_split[split] = (values, speakers)
        every = np.concatenate([values for values, _ in by_split.values()])
        speakers = np.concatenate([who for _, who in by_split.values()])
        corpus_mean, corpus_std = every.mean(0), every.std(0) + 1e-6
        floor = 0.1 * corpus_std
        ids = np.unique(speakers)
        return cls({int(s): every[speakers == s].mean(0) for s in ids},
                   {int(s): np.maximum(every[speakers == s].std(0), floor) for s in ids},
                   corpus_mean, corpus_std, by_split, by_path)

    def _standardise(self, values: np.ndarray, speaker: int | None) -> np.ndarray:
        if speaker is not None and int(speaker) in self.speaker_mean:
            mean, std = self.speaker_mean[int(speaker)], self.speaker_std[int(speaker)]
        else:
            mean, std = self.corpus_mean, self.corpus_std
        return ((values - mean) / std).astype(np.float32)

    def standardised(self, features: np.ndarray, speaker: int | None,
                     path=None) -> np.ndarray:
        """The statistics of one utterance's stored ``features``,
        standardised with its speaker's (the corpus's if ``speaker`` is None
        or unknown); those kept for its stored ``path`` when there are."""
        values = self.by_path.get(path) if path is not None else None
        return self._standardise(functionals(features) if values is None else values,
                                 speaker)

    def of_group(self, values: np.ndarray) -> np.ndarray:
        """[N, NUM_STATS] raw statistics of one speaker's utterances (a speaker this
        corpus has not seen, as in prediction) standardised with their own
        mean and std, the std floored as ``of_corpus`` floors a speaker's."""
        values = np.asarray(values, np.float64)
        std = np.maximum(values.std(0), 0.1 * self.corpus_std)
        return ((values - values.mean(0)) / std).astype(np.float32)

    def of_split(self, split: str) -> np.ndarray:
        """[N, NUM_STATS] every utterance of ``split`` ('train', 'all', 'train+test';
        not the folds, which repeat the partition), standardised, in the
        order of ``PreparedCorpus.source(split)``."""
        parts = [p for part in split.split("+")
                 for p in (self.by_split if part == "all" else [part])]
        missing = [p for p in parts if p not in self.by_split]
        if missing:
            raise KeyError(f"no utterance statistics of split {missing[0]!r}; "
                           f"they are kept for {', '.join(self.by_split)}")
        rows = [self._standardise(values, speaker) for p in parts
                for values, speaker in zip(*self.by_split[p])]
        return np.stack(rows).reshape(-1, NUM_STATS)
