"""Feature extraction over a whole corpus, in parallel across processes.

Each worker reads, checks and converts one file and writes its frames to a
``.npy`` file in a cache directory; only small descriptors travel back to the
parent, which keeps memory flat for large corpora and makes ``--workers N``
scale with cores.  Each worker's BLAS and OpenMP pools are held to one
thread: the workers already fill the cores, and on 2 cores a file took 16 ms
with the pools' threads fighting over them against 9 ms without.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
from typing import Sequence

import numpy as np
import soundfile as sf
import threadpoolctl
import tqdm

from data_prep import audio
from data_prep import features as features_lib
from data_prep.records import Record, Skipped


@dataclasses.dataclass(frozen=True)
class Extracted:
    """One usable utterance whose frames are stored at ``feature_path``.

    The per-bin sums travel with it so that normalisation statistics need no
    second pass over the frames.
    """
    record: Record
    feature_path: str
    num_frames: int
    duration_s: float
    conversions: tuple
    frame_sum: np.ndarray      # float64, per bin
    frame_sum_sq: np.ndarray   # float64, per bin


class StrictModeError(ValueError):
    """A file has a problem and ``--strict`` asks to fail rather than skip."""


def dominant_sample_rate(records: Sequence[Record]) -> int | None:
    """The rate most files of the corpus use (header reads only)."""
    rates = collections.Counter()
    for record in records:
        try:
            rates[sf.info(record.path).samplerate] += 1
        except Exception:  # unreadable files are reported when loaded
            continue
    return rates.most_common(1)[0][0] if rates else None


# Per-process state, set once by _init_worker so each task only carries paths.
_WORKER = {}


# Signals a worker leaves to its parent: the pool stops its workers with
# SIGTERM (after a failed build, and after a successful one too), and Ctrl-C
# reaches the whole process group.
_PARENT_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def _signals_held():
    """Blocks _PARENT_SIGNALS while the pool starts its workers, which
    inherit the block.  A forked worker also inherits the CLI's SIGTERM
    handler (it raises KeyboardInterrupt), so a SIGTERM reaching a worker
    before _quiet_worker_signals printed a KeyboardInterrupt traceback;
    held, it waits until the worker's own settings are in place."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _PARENT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _quiet_worker_signals():
    """A worker stops silently on SIGTERM and ignores Ctrl-C: its parent
    handles both, and reports in one line."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENT_SIGNALS)


def _init_worker(config: features_lib.FeatureConfig, corpus_rate, strict,
                 cache_dir, in_pool: bool = True):
    if in_pool:
        _quiet_worker_signals()
        threadpoolctl.threadpool_limits(1)   # this worker's whole life
    _WORKER.update(config=config, corpus_rate=corpus_rate, strict=strict,
                   cache_dir=cache_dir,
                   extractor=(None if config.kind == "npy"
                              else features_lib.FeatureExtractor(config)))


def _read_npy(index, record):
    """A user's precomputed [T, D] features (kind 'npy')."""
    cfg = _WORKER["config"]
    try:
        frames = features_lib.load_npy_features(record.path, cfg)
    except ValueError as problem:
        return Skipped(record.path, str(problem))
    return _stored(index, record, frames, frames.shape[0] * cfg.hop_ms / 1000, ())


def _stored(index, record, frames, duration_s, conversions) -> Extracted:
    feature_path = os.path.join(_WORKER["cache_dir"], f"{index:08d}.npy")
    np.save(feature_path, frames)
    as_f64 = frames.astype(np.float64)
    return Extracted(record, feature_path, frames.shape[0], duration_s,
                     conversions, as_f64.sum(0), np.square(as_f64).sum(0))


def _extract_one(task):
    index, record = task
    cfg = _WORKER["config"]
    if cfg.kind == "npy":
        return _read_npy(index, record)
    try:
        loaded = audio.load_audio(
            record.path, cfg.sample_rate, corpus_rate=_WORKER["corpus_rate"],
            strict=_WORKER["strict"])
    except audio.AudioProblem as problem:
        return Skipped(record.path, str(problem))
    frames = _WORKER["extractor"](loaded.waveform)
    return _stored(index, record, frames, loaded.duration_s, loaded.conversions)


def _pool_context():
    # Forking a process that already runs JAX's threads can deadlock; plain
    # data preparation has not imported JAX and forks (fast start-up).
    return multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")


def extract_corpus(records: Sequence[Record], config: features_lib.FeatureConfig,
                   cache_dir: str, *, workers: int = 1, strict: bool = False,
                   progress: bool = True, corpus: str = ""):
    """Extracts features of every record into ``cache_dir``; the progress
    bar names ``corpus`` (a run that builds two shows two bars).

    Returns:
      ``(extracted, skipped)``: usable utterances in the order of ``records``,
      and the files left out with the reason for each.

    Raises:
      StrictModeError: under ``strict``, naming the first problem file.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if config.kind == "npy":
        # Nothing to convert or trim: a bad feature file is the user's error.
        strict = True
    os.makedirs(cache_dir, exist_ok=True)
    corpus_rate = None if config.kind == "npy" else dominant_sample_rate(records)
    init_args = (config, corpus_rate, strict, cache_dir)
    tasks = list(enumerate(records))
    extracted, skipped = [], []

    def collect(result):
        bar.update(1)
        if isinstance(result, Skipped):
            if strict:
                raise StrictModeError(f"{result.path}: {result.reason}")
            skipped.append(result)
        else:
            extracted.append(result)

    if config.kind != "npy":
        # Warm librosa up (lazy imports, JIT) once here, so forked workers start hot.
        features_lib.FeatureExtractor(config)(np.zeros(config.sample_rate // 10,
                                                       np.float32))
    # After the warm-up: its seconds are not a file's, and in the first
    # file's rate they made the bar's first ETA hours long.
    bar = tqdm.tqdm(total=len(tasks), unit="file", disable=not progress,
                    desc=f"extracting features ({corpus})" if corpus
                    else "extracting features")
    try:
        if workers == 1:
            _init_worker(*init_args, in_pool=False)
            with threadpoolctl.threadpool_limits(1):
                for task in tasks:
                    collect(_extract_one(task))
        else:
            chunksize = max(1, min(16, len(tasks) // (4 * workers)))
            with _signals_held():
                pool = _pool_context().Pool(workers, _init_worker, init_args)
            with pool:
                for result in pool.imap(_extract_one, tasks, chunksize=chunksize):
                    collect(result)
    finally:
        bar.close()
    return extracted, skipped
