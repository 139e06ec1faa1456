"""Writes one corpus, at one feature setting, as a TFDS array_record dataset.

Layout: ``DATA_DIR/ser_corpus/<corpus>-<feature tag>/1.0.0/`` holding the
array_record shards of every split, TFDS's ``dataset_info.json`` and
``features.json``, and ``metadata.json`` with what the trainer needs beside
the frames: the feature settings, the label map, speaker folds and the
normalisation sums.

A build never exposes a half-written dataset: everything is written under a
hidden staging directory in ``DATA_DIR`` and renamed into place only once
complete.  A failure or Ctrl-C removes the staging directory; a killed build
leaves it hidden, and the next build removes it.  An existing dataset is
replaced only after its successor is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from data_prep import extract as extract_lib
from data_prep import labels
from data_prep import splits as splits_lib
from data_prep import stats as stats_lib
from data_prep import summary as summary_lib
from data_prep.features import FeatureConfig
from data_prep.records import Record, Skipped

DATASET_NAME = "ser_corpus"
DATASET_VERSION = "1.0.0"
DEFAULT_FOLDS = 5
_STAGING_PREFIX = ".staging-"


def config_name(corpus: str, feature_config: FeatureConfig) -> str:
    return f"{corpus}-{feature_config.name}"


def dataset_dir(data_dir: str, corpus: str,
                feature_config: FeatureConfig) -> str:
    """Where the dataset of ``corpus`` at ``feature_config`` lives."""
    return os.path.join(data_dir, DATASET_NAME,
                        config_name(corpus, feature_config), DATASET_VERSION)


def is_complete(path: str) -> bool:
    """True for a finished dataset (TFDS writes its info files last)."""
    return all(os.path.isfile(os.path.join(path, name))
               for name in ("dataset_info.json", "metadata.json"))


class SerCorpus(tfds.core.GeneratorBasedBuilder):
    """A speech-emotion corpus as frames plus labels, one config per corpus.

    The examples come from features already extracted to ``.npy`` files, so
    this class only lays out splits and serialises.
    """

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "Log-mel or MFCC frames with emotion, speaker, "
                              "gender and corpus labels."}

    def __init__(self, *, corpus: str, feature_config: FeatureConfig,
                 extracted: Sequence[extract_lib.Extracted], root: str,
                 splits: dict, metadata: dict, **kwargs):
        self._feature_config = feature_config
        self._extracted = extracted
        self._root = root
        self._splits = splits
        self._metadata = metadata
        config = tfds.core.BuilderConfig(
            name=config_name(corpus, feature_config),
            description=f"{corpus}, {feature_config.name} frames")
        super().__init__(config=config, file_format="array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self._feature_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="Frame-level spectral features of emotional speech.",
            features=tfds.features.FeaturesDict({
                "features": tfds.features.Tensor(
                    shape=(None, cfg.num_bins), dtype=np.dtype(cfg.dtype),
                    encoding=tfds.features.Encoding.BYTES),
                "num_frames": np.int32,
                "duration_s": np.float32,
                "emotion": tfds.features.ClassLabel(
                    names=self._metadata["emotions"]),
                "speaker": tfds.features.ClassLabel(
                    names=self._metadata["speakers"]),
                "gender": tfds.features.ClassLabel(names=labels.GENDERS),
                "corpus": tfds.features.Text(),
                "path": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(self._metadata),
        )

    # TFDS prints where it prepared the data, which here is the staging
    # directory; the caller prints the final location instead.
    def _log_download_bytes(self):
        pass

    def _log_download_done(self):
        pass

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        return {name: self._generate_examples(indices)
                for name, indices in self._splits.items()}

    def _generate_examples(self, indices):
        for index in indices:
            item = self._extracted[index]
            record = item.record
            yield index, {
                "features": np.load(item.feature_path),
                "num_frames": item.num_frames,
                "duration_s": item.duration_s,
                "emotion": record.emotion,
                "speaker": record.speaker,
                "gender": record.gender,
                "corpus": record.corpus,
                "path": os.path.relpath(record.path, self._root),
            }


@dataclasses.dataclass(frozen=True)
class BuildResult:
    path: str
    summary: dict
    reused: bool


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(data_dir: str):
    """Deletes staging directories of builds whose process is gone."""
    if not os.path.isdir(data_dir):
        return
    for entry in os.listdir(data_dir):
        if not entry.startswith(_STAGING_PREFIX):
            continue
        try:
            pid = int(entry[len(_STAGING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(os.path.join(data_dir, entry), ignore_errors=True)


def _metadata(corpus: str, feature_config: FeatureConfig, source: str,
              extracted, splits: dict, fold_speakers, summary: dict) -> dict:
    records = [e.record for e in extracted]
    partition = partition_splits(splits)
    speaker_sums, split_sums = stats_lib.GroupSums(), stats_lib.GroupSums()
    for item in extracted:
        speaker_sums.add(item.record.speaker, item.num_frames, item.frame_sum,
                         item.frame_sum_sq)
    for name in partition:
        for index in splits[name]:
            item = extracted[index]
            split_sums.add(name, item.num_frames, item.frame_sum,
                           item.frame_sum_sq)
    split_sums = split_sums.to_json()
    normalization = {}
    for name, groups in [("all", partition)] + [(n, [n]) for n in partition]:
        mean, std = stats_lib.mean_std(split_sums, groups)
        normalization[name] = {"mean": mean.tolist(), "std": std.tolist()}
    return {
        "corpus": corpus,
        "source": source,
        "feature_config": feature_config.to_dict(),
        "emotions": labels.sort_emotions({r.emotion for r in records}),
        "speakers": sorted({r.speaker for r in records}),
        "speaker_gender": {r.speaker: r.gender for r in records},
        "partition_splits": partition,
        "fold_speakers": fold_speakers,
        "normalization": normalization,
        "speaker_sums": speaker_sums.to_json(),
        "summary": summary,
    }


def partition_splits(splits) -> list[str]:
    """The stored splits that together hold the corpus once (not the folds).

    TFDS reserves the split name 'all'; our 'all' is their concatenation.
    """
    return [name for name in splits if not name.startswith("fold")]


def build_corpus(records: Sequence[Record], *, corpus: str, root: str,
                 data_dir: str, feature_config: FeatureConfig,
                 parse_skipped: Sequence[Skipped] = (), workers: int = 1,
                 strict: bool = False, overwrite: bool = False,
                 num_folds: int | None = None, validation_fraction: float = 0.2,
                 seed: int = 0, progress: bool = True) -> BuildResult:
    """Extracts features of ``records`` and writes the dataset atomically.

    Args:
      records: the corpus's utterances (from a parser in ``corpora``).
      corpus: dataset name, e.g. 'emodb'.
      root: the corpus's raw directory; stored paths are relative to it.
      data_dir: where datasets live.
      feature_config: feature settings.
      parse_skipped: files the parser already left out (shown in the summary).
      workers: feature-extraction processes.
      strict: fail on the first problem file instead of skipping/converting.
      overwrite: rebuild even if a complete dataset exists.
      num_folds: speaker-independent folds; None for min(5, speakers), 0 for
        none.
      validation_fraction: share of speakers held out as 'validation'.
      seed: picks the validation speakers.
      progress: show progress bars.
    """
    final = dataset_dir(data_dir, corpus, feature_config)
    if is_complete(final) and not overwrite:
        return BuildResult(final, read_metadata(final)["summary"], reused=True)
    if not records:
        raise ValueError(f"{corpus}: no records to build a dataset from")
    os.makedirs(data_dir, exist_ok=True)
    remove_stale_staging(data_dir)
    staging = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-",
                               dir=data_dir)
    try:
        extracted, skipped = extract_lib.extract_corpus(
            records, feature_config, os.path.join(staging, "frames"),
            workers=workers, strict=strict, progress=progress, corpus=corpus)
        skipped = list(parse_skipped) + skipped
        if not extracted:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            raise ValueError(f"{corpus}: every file was skipped ({reasons} ...)")
        usable = [e.record for e in extracted]
        if num_folds is None:
            num_folds = min(DEFAULT_FOLDS, len({r.speaker for r in usable}))
        splits, fold_speakers = splits_lib.plan_splits(
            usable, num_folds=num_folds, seed=seed,
            validation_fraction=validation_fraction)
        summary = summary_lib.summarize(extracted, skipped, splits)
        metadata = _metadata(corpus, feature_config, root, extracted, splits,
                             fold_speakers, summary)
        builder = SerCorpus(
            corpus=corpus, feature_config=feature_config, extracted=extracted,
            root=root, splits=splits, metadata=metadata,
            data_dir=os.path.join(staging, "tfds"))
        tfds.display_progress_bar(False)  # one bar per split is noise
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                try_download_gcs=False, verify_ssl=False))
        _move_into_place(builder.data_dir, final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(final, summary, reused=False)


def _move_into_place(built: str, final: str, staging: str):
    """Renames the finished dataset to ``final``, replacing an old one last."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
        os.rename(final, os.path.join(staging, "replaced"))
    os.rename(built, final)


def read_metadata(path: str) -> dict:
    """The ``metadata.json`` of a dataset directory."""
    with open(os.path.join(path, "metadata.json")) as f:
        return json.load(f)
