"""Speaker-independent splits of a corpus.

SER results are only meaningful when test speakers are unseen in training, so
every split here is a partition of *speakers*, never of utterances.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np
from sklearn import model_selection

from data_prep.records import Record

MANIFEST_SPLITS = ("train", "validation", "test")


def validation_speakers(speakers: Sequence[str], fraction: float,
                        seed: int) -> list[str]:
    """Picks about ``fraction`` of the speakers, at least one, never all."""
    speakers = sorted(set(speakers))
    if len(speakers) < 2:
        raise ValueError(
            f"a train/validation split by speaker needs at least 2 speakers, "
            f"found {len(speakers)}: {speakers}")
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    count = min(len(speakers) - 1, max(1, int(round(fraction * len(speakers)))))
    order = np.random.default_rng(seed).permutation(len(speakers))
    return sorted(speakers[i] for i in order[:count])


def speaker_folds(utterances_per_speaker: dict[str, int],
                  num_folds: int) -> list[list[str]]:
    """Splits speakers into ``num_folds`` groups of similar utterance counts:
    sklearn's ``GroupKFold`` (the speaker with most utterances goes to the
    lightest fold; ties by name), so the folds depend only on the counts and
    names and are reproducible."""
    if num_folds < 2:
        raise ValueError(f"speaker folds need at least 2 folds, got {num_folds}")
    if num_folds > len(utterances_per_speaker):
        raise ValueError(
            f"{num_folds} folds need at least {num_folds} speakers, the corpus "
            f"has {len(utterances_per_speaker)}")
    speakers = np.array(sorted(utterances_per_speaker))
    groups = np.repeat(speakers, [utterances_per_speaker[s] for s in speakers])
    splitter = model_selection.GroupKFold(n_splits=num_folds)
    return [sorted(map(str, set(groups[held_out]))) for _, held_out in
            splitter.split(np.zeros(len(groups)), groups=groups)]


def plan_splits(records: Sequence[Record], *, num_folds: int,
                validation_fraction: float, seed: int):
    """Assigns record indices to splits.

    Returns:
      ``(splits, fold_speakers)``: split name -> record indices, with 'train'
      and 'validation' (or the splits a manifest prescribes), which together
      hold every record once, and 'fold0'.. 'fold{K-1}' (fold k holds the
      utterances of fold k's speakers, the folds again partition the corpus);
      and the speakers of each fold.
    """
    indices = range(len(records))
    splits = {}
    prescribed = [r.split for r in records]
    if any(prescribed):
        missing = [r.path for r in records if not r.split]
        if missing:
            raise ValueError(
                f"the manifest gives a split for some rows but not for "
                f"{len(missing)} others, e.g. {missing[0]}")
        for name in MANIFEST_SPLITS:
            chosen = [i for i in indices if records[i].split == name]
            if chosen:
                splits[name] = chosen
    else:
        held_out = set(validation_speakers(
            [r.speaker for r in records], validation_fraction, seed))
        splits["train"] = [i for i in indices if records[i].speaker not in held_out]
        splits["validation"] = [i for i in indices if records[i].speaker in held_out]

    fold_speakers = []
    if num_folds:
        counts = collections.Counter(r.speaker for r in records)
        fold_speakers = speaker_folds(counts, num_folds)
        for k, speakers in enumerate(fold_speakers):
            members = set(speakers)
            splits[f"fold{k}"] = [i for i in indices
                                  if records[i].speaker in members]
    return splits, fold_speakers
