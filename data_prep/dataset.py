"""Reading a prepared corpus: data sources per split plus the metadata.

This is the one place the trainer, the evaluator and the tests open shards,
through ``tfds.builder_from_directory(...).as_data_source()`` (random access,
no TensorFlow).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow_datasets as tfds

from data_prep import builder as builder_lib
from data_prep import stats as stats_lib
from data_prep.features import FeatureConfig


class PreparedCorpus:
    """A built corpus dataset directory."""

    def __init__(self, path: str):
        if not builder_lib.is_complete(path):
            raise FileNotFoundError(
                f"no complete prepared dataset at {path}; build it with "
                "`python -m data_prep --corpus=... --data_dir=...`")
        self.path = path
        self.metadata = builder_lib.read_metadata(path)
        self.feature_config = FeatureConfig.from_dict(
            self.metadata["feature_config"])
        self._columns = {}

    @classmethod
    def find(cls, data_dir: str, corpus: str,
             feature_config: FeatureConfig) -> "PreparedCorpus":
        return cls(builder_lib.dataset_dir(data_dir, corpus, feature_config))

    @property
    def name(self) -> str:
        return self.metadata["corpus"]

    @property
    def emotions(self) -> list[str]:
        """Class names, in the order of the stored 'emotion' indices."""
        return list(self.metadata["emotions"])

    @property
    def splits(self) -> list[str]:
        return list(self.metadata["summary"]["per_split"])

    @functools.cached_property
    def _builder(self):
        return tfds.builder_from_directory(self.path)

    def columns(self, split: str) -> dict:
        """``num_frames``, ``emotion`` and ``speaker`` of every example of
        ``split`` as arrays: one pass over its records, the first time only
        (a dataset never changes once built), so that every later evaluation
        reads its labels and lengths without decoding a frame."""
        if split not in self._columns:
            data, keys = self.source(split), ("num_frames", "emotion", "speaker")
            values = np.empty((len(data), len(keys)), np.int64)
            for i in range(len(data)):     # one record's frames at a time
                record = data[i]
                values[i] = [int(record[key]) for key in keys]
            self._columns[split] = dict(zip(keys, values.T.copy()))
        return self._columns[split]

    def source(self, split: str):
        """Random-access data source of ``split``.

        ``split`` is a stored split ('train', 'fold3'), 'all', or several
        joined by '+' ('fold0+fold2': the training folds of a fold run).
        """
        parts = split.split("+")
        unknown = [p for p in parts if p not in self.splits]
        if unknown:
            raise KeyError(f"{self.name} has no split {unknown[0]!r}; it has "
                           f"{', '.join(self.splits)}")
        stored = [name for p in parts for name in (
            self.metadata["partition_splits"] if p == "all" else [p])]
        return self._builder.as_data_source(split="+".join(stored))

    def fold_training_split(self, fold: int) -> str:
        """The '+'-joined folds other than ``fold``: its training data."""
        folds = self.metadata["fold_speakers"]
        if not 0 <= fold < len(folds):
            raise KeyError(f"{self.name} has {len(folds)} folds, no fold {fold}")
        return "+".join(f"fold{k}" for k in range(len(folds)) if k != fold)

    def normalization(self, split: str = "train"):
        """Per-bin (mean, std) over the frames of ``split`` ('train', 'all')."""
        stored = self.metadata["normalization"]
        if split not in stored:
            raise KeyError(f"{self.name} stores normalisation for "
                           f"{sorted(stored)}, not {split!r}")
        return (np.asarray(stored[split]["mean"]),
                np.asarray(stored[split]["std"]))

    def fold_normalization(self, fold: int):
        """(mean, std) over the speakers *outside* fold ``fold``."""
        self.fold_training_split(fold)  # validates ``fold``
        held_out = set(self.metadata["fold_speakers"][fold])
        speakers = [s for s in self.metadata["speakers"] if s not in held_out]
        return stats_lib.mean_std(self.metadata["speaker_sums"], speakers)

    def __repr__(self):
        return f"PreparedCorpus({os.path.relpath(self.path)})"
