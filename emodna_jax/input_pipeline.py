"""Grain pipelines over the prepared corpora (TFDS data sources).

Training reads two endless streams: labelled source utterances and
unlabelled target utterances, each shuffled, normalised with its own corpus's
statistics and randomly cropped or padded to a fixed number of frames, then
batched and zipped so that every step sees one source and one target batch.
The target stream never reads labels (not even to pick utterances of the
task's classes): nothing in training depends on them.

Evaluation reads a split once, in order, with a deterministic centre crop,
and pads the last batch with zero-weight examples so every batch has the
same shape (one compiled eval step).

Each process reads only its share (``process_index::process_count``), so the
same code runs on one GPU box or a multi-host TPU VM.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Iterator, Sequence

import grain
import jax
import numpy as np

from data_prep import prepare
from data_prep import stats as stats_lib
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig
from emodna_jax import distributed
from emodna_jax import scoring
from emodna_jax import utterance_stats as utterance_stats_lib

EXCLUDED = -1  # task label of an utterance whose emotion the task leaves out


def read_options() -> grain.ReadOptions:
    """How batches are read: by 2 worker threads, 4 batches ahead, on an
    accelerator; in the calling thread on CPU, where a reader thread takes
    cycles from XLA's kernels on the same cores.  On 2 cores the default
    step fed in the calling thread took 1.01x the step on prefetched
    batches, against 1.16x with the threads (benchmarks/train_step.py)."""
    if jax.default_backend() == "cpu":
        return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@dataclasses.dataclass
class TaskCorpus:
    """A prepared corpus seen through a task: splits, class map, normalisation.

    Attributes:
      corpus: the prepared dataset.
      corpus_id: index of this corpus in the task (source 0, target 1).
      class_map: corpus emotion index -> task class index, or EXCLUDED.
      mean, std: per-bin normalisation (std already floored).
      train_split: what training reads ('train', 'all', 'fold0+fold2'...).
      eval_split: what evaluation reports on ('validation', 'all', 'fold1').
      speaker_mean, speaker_std: [speakers, bins] per-speaker normalisation
        (``data.normalization='speaker'``), indexed by the stored speaker
        id, or None: per-corpus ``mean``/``std`` for everyone.
      std_floor: the floor applied to every std, per-utterance ones included.
    """
    corpus: PreparedCorpus
    corpus_id: int
    class_map: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    train_split: str
    eval_split: str
    speaker_mean: np.ndarray | None = None
    speaker_std: np.ndarray | None = None
    std_floor: float = 0.0
    band_mask: np.ndarray | None = None  # [bins] 0 for bins a task drops
    # data.utterance_stats: per-speaker statistics appended to every frame.
    utterance_stats: utterance_stats_lib.SpeakerStats | None = None

    @classmethod
    def create(cls, corpus: PreparedCorpus, corpus_id: int,
               classes: Sequence[str], *, train_split: str, eval_split: str,
               normalization, std_floor: float, per_speaker: bool = False,
               ) -> "TaskCorpus":
        """``normalization``: (mean, std) per bin, e.g. ``corpus.normalization()``.

        ``per_speaker``: standardise each utterance with its own speaker's
        statistics instead (from the stored per-speaker sums, which need no
        labels), the usual practice across corpora: it removes voice and
        channel level while keeping each speaker's emotional variation.
        """
        class_map = np.array([classes.index(e) if e in classes else EXCLUDED
                              for e in corpus.emotions], np.int32)
        mean, std = normalization
        speaker_mean = speaker_std = None
        if per_speaker:
            stats = [stats_lib.mean_std(corpus.metadata["speaker_sums"], [name])
                     for name in corpus.metadata["speakers"]]
            speaker_mean = np.asarray([m for m, _ in stats], np.float32)
            speaker_std = np.maximum([s for _, s in stats], std_floor).astype(np.float32)
        return cls(corpus, corpus_id, class_map, np.asarray(mean, np.float32),
                   np.maximum(std, std_floor).astype(np.float32), train_split,
                   eval_split, speaker_mean, speaker_std, std_floor)

    def normalize(self, raw: dict) -> np.ndarray:
        """The stored frames of one example, standardised per bin: with its
        speaker's statistics under per-speaker normalisation (an utterance of
        unknown speaker, as in prediction, with its own), else the corpus's."""
        stored = raw["features"]
        frames = stored.astype(np.float32)
        if self.speaker_mean is None:
            frames = (frames - self.mean) / self.std
        elif "speaker" in raw:
            speaker = int(raw["speaker"])
            frames = (frames - self.speaker_mean[speaker]) / self.speaker_std[speaker]
        else:
            frames = ((frames - frames.mean(0))
                      / np.maximum(frames.std(0), self.std_floor)).astype(np.float32)
        if self.band_mask is not None:
            frames = frames * self.band_mask
        if self.utterance_stats is None:
            return frames
        stats = self.utterance_stats.standardised(stored, raw.get("speaker"),
                                                  raw.get("path"))
        return np.concatenate(
            [frames, np.broadcast_to(stats, (len(frames), len(stats)))], axis=1)

    @property
    def appended(self) -> int:
        """Values the pipeline appends to each stored frame."""
        return 0 if self.utterance_stats is None else utterance_stats_lib.NUM_STATS

    @property
    def num_values(self) -> int:
        """Values per frame the model reads: the stored ones and the appended."""
        return self.corpus.feature_config.num_bins + self.appended

    @property
    def num_tracks(self) -> int:
        """The values at the end of a frame that are not mel bands."""
        return self.corpus.feature_config.num_tracks + self.appended

    @property
    def num_train(self) -> int:
        """Utterances in ``train_split``."""
        return len(self.corpus.source(self.train_split))

    def utterance_statistics(self, split: str) -> np.ndarray:
        """[N, 17] the utterance statistics ``normalize`` appends, of every
        utterance of ``split``, kept from the corpus's one pass (needs
        ``data.utterance_stats``)."""
        if self.utterance_stats is None:
            raise ValueError(f"{self.corpus.name}: no utterance statistics "
                             "(config.data.utterance_stats is off)")
        return self.utterance_stats.of_split(split)

    def lengths(self, split: str) -> np.ndarray:
        """Frames of every example of ``split``."""
        return self.corpus.columns(split)["num_frames"]

    def task_labels(self, split: str) -> np.ndarray:
        """Task label of every example of ``split``."""
        return self.class_map[self.corpus.columns(split)["emotion"]].astype(np.int32)

    def example(self, raw: dict, num_frames: int,
                rng: np.random.Generator | None, with_label: bool) -> dict:
        """Normalises and crops/pads one stored example to ``num_frames``.

        A random crop when ``rng`` is given (training), else a centre crop.
        """
        out = _fit(self.normalize(raw), num_frames,
                   None if rng is None else rng.random())
        if with_label:
            out.update(self.attributes(raw))
        return out

    def attributes(self, raw: dict) -> dict:
        """The emotion and the speech attributes MSAC can use, of one example."""
        return {"label": np.int32(self.class_map[raw["emotion"]]),
                "speaker": np.int32(raw["speaker"]),
                "gender": np.int32(raw["gender"])}

    def frames_mib(self) -> float:
        """The whole corpus's frames as the model reads them, in MiB
        (float32): an upper bound on any of its splits held in memory."""
        summary = self.corpus.metadata["summary"]
        return summary["frames"] * self.num_values * 4 / 2**20


def _fit(frames: np.ndarray, num_frames: int, share: float | None) -> dict:
    """``frames`` cropped (at ``share`` in [0, 1) of the possible starts, or
    centred when None) or zero-padded to ``num_frames``, with the mask of its
    real frames."""
    length = frames.shape[0]
    if length > num_frames:
        excess = length - num_frames
        start = int(share * (excess + 1)) if share is not None else excess // 2
        frames = frames[start:start + num_frames]
    elif length < num_frames:
        frames = np.pad(frames, ((0, num_frames - length), (0, 0)))
    return {"frames": frames, "mask": np.arange(num_frames) < min(length, num_frames)}


def _task_indices(task: TaskCorpus, split: str) -> np.ndarray:
    labels = task.task_labels(split)
    indices = np.flatnonzero(labels != EXCLUDED)
    if indices.size == 0:
        raise ValueError(f"{task.corpus.name}/{split} has no utterance of the "
                         "task's classes")
    return indices


def _loader(task: TaskCorpus, split: str, indices: np.ndarray, *,
            with_label: bool, cache_mib: float):
    """index -> one utterance of ``split``, normalised, with its attributes
    if ``with_label``.  Read from the shards at every access, or, when the
    corpus's frames fit in ``cache_mib``, read once into memory: decoding a
    record costs about 4x normalising and cropping it, and most emotional
    speech corpora are a few hundred MiB of frames."""
    source = task.corpus.source(split)

    def load(i):
        raw = source[int(i)]
        item = {"frames": task.normalize(raw)}
        # An unlabelled utterance carries its index: what its cluster label
        # is looked up by (emodna_jax/cluster_labels.py).
        return {**item, **task.attributes(raw)} if with_label else {**item, "index": i}

    if cache_mib <= 0 or task.frames_mib() > cache_mib:
        return load
    return {int(i): load(i) for i in indices}.__getitem__


def _batch(items: list[dict], num_frames: int, shares: np.ndarray) -> dict:
    """Crops of a batch of loaded utterances at ``shares`` (one per item),
    stacked."""
    fitted = [_fit(item["frames"], num_frames, float(u)) for item, u in zip(items, shares)]
    out = {key: np.stack([f[key] for f in fitted]) for key in ("frames", "mask")}
    for key in (k for k in items[0] if k != "frames"):
        out[key] = np.asarray([item[key] for item in items], np.int32)
    return out


class _Order:
    """Stream position -> utterance: ``indices`` in a fresh permutation per
    epoch, drawn from (seed, epoch), so any position is computed without
    the ones before it (what resuming and sharding need), a whole batch of
    positions in one call."""

    def __init__(self, indices: np.ndarray, seed: int):
        self.indices, self.seed = indices, seed
        self._cached = (-1, indices)   # (epoch, its order); one tuple: thread-safe

    def _permutation(self, epoch: int) -> np.ndarray:
        cached = self._cached
        if cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            cached = (epoch, self.indices[rng.permutation(len(self.indices))])
            self._cached = cached
        return cached[1]

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        n = len(self.indices)
        epochs = positions // n
        out = np.empty(len(positions), self.indices.dtype)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            out[chosen] = self._permutation(int(epoch))[positions[chosen] % n]
        return out


def _stream(task: TaskCorpus, split: str, *, batch_size: int, num_frames: int,
            seed: int, with_label: bool, process_index: int,
            process_count: int, cache_mib: float) -> grain.MapDataset:
    """Endless shuffled batches of ``split``: element k is this process's
    share (every ``process_count``-th row) of global batch k, with ``row``,
    each row's position in the global batch.  Crops are drawn for the whole
    global batch from (seed, k), each process taking its rows' draws: a row
    is cropped the same whatever the number of processes.

    A labelled stream keeps only the task's classes.  An unlabelled stream
    keeps every utterance: choosing target utterances by their labels would
    let the labels influence training.  Each batch is ordered, loaded and
    cropped in one call: grain's own per-element work cost 5 ms a batch.
    """
    indices = (_task_indices(task, split) if with_label
               else np.arange(len(task.corpus.source(split))))
    load = _loader(task, split, indices, with_label=with_label, cache_mib=cache_mib)
    order = _Order(indices, seed)
    rows = process_index + process_count * np.arange(batch_size)
    global_size = batch_size * process_count

    def make(k):
        utterances = order(k * global_size + rows)
        shares = np.random.default_rng([seed, k]).random(global_size)[rows]
        out = _batch([load(i) for i in utterances], num_frames, shares)
        return {**out, "row": rows.astype(np.int32)}

    return grain.MapDataset.range(sys.maxsize).map(make)


def train_dataset(source: TaskCorpus, target: TaskCorpus, *,
                  global_batch_size: int, num_frames: int, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  cache_mib: float = 1024) -> grain.IterDataset:
    """Endless zipped (source, target) batches of this process's share.

    Reads ``source.train_split`` and ``target.train_split``.  Yields dicts:
    ``src_frames [b,T,F]``, ``src_mask [b,T]``, ``src_label [b]``,
    ``src_speaker [b]``, ``src_gender [b]``, ``tgt_frames``, ``tgt_mask``,
    ``tgt_index`` (each target row's index in ``target.train_split``),
    ``src_row``, ``tgt_row`` (each row's position in the global batch, which
    the step keys its random draws by), with
    ``b = global_batch_size / process_count``.  Iterators over it have
    ``get_state``/``set_state`` for checkpoints.  A corpus whose frames fit
    in ``cache_mib`` MiB is held in memory after one pass (0: never).
    """
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} is not divisible by "
                         f"{process_count} processes")
    local = global_batch_size // process_count
    common = dict(batch_size=local, num_frames=num_frames, cache_mib=cache_mib,
                  process_index=process_index, process_count=process_count)
    src = _stream(source, source.train_split, seed=seed, with_label=True, **common)
    tgt = _stream(target, target.train_split, seed=seed + 1, with_label=False,
                  **common)

    def merge(pair):
        s, t = pair
        return {**{f"src_{k}": v for k, v in s.items()},
                "tgt_frames": t["frames"], "tgt_mask": t["mask"],
                "tgt_index": t["index"], "tgt_row": t["row"]}

    zipped = grain.experimental.ZipMapDataset([src, tgt]).map(merge)
    return zipped.to_iter_dataset(read_options())


def eval_batches(task: TaskCorpus, split: str, *, batch_size: int,
                 num_frames: int, include_excluded: bool = False,
                 process_index: int = 0, process_count: int = 1,
                 ) -> Iterator[dict]:
    """One ordered pass over ``split``'s utterances in fixed-shape batches
    of windows (emodna_jax/scoring.py: an utterance longer than
    ``num_frames`` is several windows; ``scoring.combine`` averages them).

    Every process plans the same windows and takes its ``batch_size //
    process_count`` rows of each batch, so all run the same number of
    batches.  Yields dicts with ``frames``, ``mask``, and per row ``label``
    (task class, or EXCLUDED for out-of-task emotions when
    ``include_excluded``), ``emotion`` (the corpus's own emotion index, for
    OOD studies), ``index`` (the utterance) and ``weight`` (0 for the
    padding rows that fill the last batch).
    """
    source = task.corpus.source(split)
    labels = task.task_labels(split)
    keep = np.arange(len(source)) if include_excluded else np.flatnonzero(
        labels != EXCLUDED)
    lengths = task.lengths(split)
    plan = [(int(i), start) for i in keep
            for start in scoring.window_starts(int(lengths[i]), num_frames)]
    num_batches = -(-len(plan) // batch_size)
    local = batch_size // process_count
    num_feat = task.num_values

    def make(batch: int) -> dict:
        first = batch * batch_size + process_index * local
        rows, frames = [], {}   # the plan visits an utterance's windows in a row
        for i, start in plan[first:first + local]:
            if i not in frames:
                raw = source[i]
                frames = {i: (task.normalize(raw), np.int32(raw["emotion"]))}
            values, mask = scoring.window(frames[i][0], start, num_frames)
            rows.append({"frames": values, "mask": mask, "label": labels[i],
                         "emotion": frames[i][1], "index": np.int32(i),
                         "weight": np.float32(1.0)})
        while len(rows) < local:
            rows.append({"frames": np.zeros((num_frames, num_feat), np.float32),
                         "mask": np.arange(num_frames) < 1,
                         "label": np.int32(0), "emotion": np.int32(0),
                         "index": np.int32(-1), "weight": np.float32(0.0)})
        return {k: np.stack([row[k] for row in rows]) for k in rows[0]}

    # On an accelerator, worker threads decode and window the next batches,
    # in order, while the device runs this one (read_options).
    return iter(grain.MapDataset.source(range(num_batches)).map(make)
                .to_iter_dataset(read_options()))


def feature_config(data_config):
    """The FeatureConfig a data config asks for (selects the shards)."""
    return FeatureConfig(kind=data_config.feature,
                         sample_rate=data_config.sample_rate,
                         n_mels=data_config.n_mels, n_mfcc=data_config.n_mfcc,
                         dtype="float16" if data_config.float16 else "float32",
                         npy_dim=data_config.feature_dim)


def _find_corpus(config, role: str) -> PreparedCorpus:
    """The prepared corpus ``config.data.<role>`` names; a clear error if absent."""
    data = config.data
    name = data[role]
    try:
        return PreparedCorpus.find(data.data_dir or prepare.default_data_dir(),
                                   name, feature_config(data))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"config.data.{role}={name!r}: {error}") from None


def shared_classes(config) -> tuple[str, ...]:
    """The emotions the source and target corpora both have, in the source's
    order; an error when they share fewer than two."""
    source = _find_corpus(config, "source")
    target = _find_corpus(config, "target")
    shared = tuple(e for e in source.emotions if e in target.emotions)
    if len(shared) < 2:
        raise ValueError(
            f"config.data.classes: {source.name} ({', '.join(source.emotions)}) "
            f"and {target.name} ({', '.join(target.emotions)}) share "
            f"{len(shared)} emotion(s); a task needs at least 2")
    return shared


def open_task(config) -> tuple[TaskCorpus, TaskCorpus]:
    """Opens the source and target corpora of ``config`` as TaskCorpus.

    ``config.data.protocol``:
      'cross_corpus': source trains on ``source_split`` and is validated on
        ``source_eval_split``; the target trains (unlabelled) and is evaluated
        on ``target_split``; each corpus standardised with its own statistics.
      'single_corpus': one corpus, speaker-independent fold ``config.data.fold``:
        training reads the other folds, evaluation the held-out fold (as the
        "target"), both standardised with the training folds' statistics.

    Builds the synthetic pair first when the config asks for it and the
    shards are missing.  Raises with a clear message when a corpus is not
    prepared or lacks one of the task's classes.
    """
    data = config.data
    if data.build_synthetic:
        if distributed.is_primary():  # one builder; the others wait for it
            prepare.prepare_corpus(prepare.SYNTHETIC,
                                   data_dir=data.data_dir or prepare.default_data_dir(),
                                   feature_config=feature_config(data), workers=1)
        distributed.barrier("synthetic corpora built")
    classes = list(data.classes)

    def find(role: str) -> PreparedCorpus:
        corpus = _find_corpus(config, role)
        name = corpus.name
        missing = [c for c in classes if c not in corpus.emotions]
        if missing:
            raise ValueError(
                f"config.data.classes: {name} has no utterances of {missing} "
                f"(it has {corpus.emotions})")
        return corpus

    speaker_stats = {}

    def task(corpus, corpus_id, train_split, eval_split, normalization):
        out = TaskCorpus.create(corpus, corpus_id, classes, train_split=train_split,
                                eval_split=eval_split, normalization=normalization,
                                std_floor=data.std_floor,
                                per_speaker=data.normalization == "speaker")
        if data.get("utterance_stats", False):
            if corpus.name not in speaker_stats:
                speaker_stats[corpus.name] = utterance_stats_lib.SpeakerStats.of_corpus(corpus)
            out.utterance_stats = speaker_stats[corpus.name]
        return out

    source = find("source")
    if data.protocol == "single_corpus":
        try:
            train_split = source.fold_training_split(data.fold)
        except KeyError as error:
            raise ValueError(f"config.data.fold: {error.args[0]}") from None
        held_out = f"fold{data.fold}"
        normalization = source.fold_normalization(data.fold)
        return (task(source, 0, train_split, train_split, normalization),
                task(source, 1, held_out, held_out, normalization))
    target = find("target")
    tasks = (task(source, 0, data.source_split, data.source_eval_split,
                  source.normalization(data.source_split)),
             task(target, 1, data.target_split, data.target_split,
                  target.normalization(data.target_split)))
    if data.shared_bands:
        mask = shared_band_mask(source.normalization(data.source_split)[1],
                                target.normalization(data.target_split)[1])
        for t in tasks:
            t.band_mask = mask
    return tasks


# A bin whose frames vary less than this (std, in log units) carries no
# signal in that corpus: above the Nyquist frequency of audio recorded at a
# lower rate, or outside a telephone band.
DEAD_BAND_STD = 0.1


def shared_band_mask(source_std, target_std) -> np.ndarray:
    """[bins] 1.0 where both corpora carry signal, 0.0 where either is dead.

    Dropping a bin from both corpora (``config.data.shared_bands``) keeps a
    model from learning cues on the source that the target cannot show,
    e.g. a 16 kHz source's fricative energy against an 8 kHz telephone
    target; it reads the corpora's unlabelled statistics only.
    """
    live = (np.asarray(source_std) > DEAD_BAND_STD) & (np.asarray(target_std) > DEAD_BAND_STD)
    return live.astype(np.float32)
