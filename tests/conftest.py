"""Shared fixtures: small generated corpora (the tests never download data)."""

import csv
import os
import tempfile

import numpy as np
import pytest
import soundfile as sf

# Eight simulated devices share two cores in CI, so one device's half of a
# collective can be descheduled for a long time; XLA's CPU rendezvous would then
# abort the whole test process (after 40 s by default).  A generous limit keeps
# a slow participant from killing the run; a true deadlock still ends, with
# XLA's message on stderr (pytest captures sys-level output only: setup.cfg).
# Set before any test imports jax, which reads XLA_FLAGS when it starts.
os.environ["XLA_FLAGS"] = " ".join(filter(None, (
    os.environ.get("XLA_FLAGS"),
    "--xla_cpu_collective_call_warn_stuck_timeout_seconds=60",
    "--xla_cpu_collective_call_terminate_timeout_seconds=900",
    # LLVM at -O1: dozens of toy programs compiled for a few steps each; on a
    # quiet 2-core machine it took a fifth off the default step's compile
    # (about 11 s to 9 s) and left its step time within the run-to-run
    # spread.  XLA's HLO passes are the same; only LLVM's code generation is not.
    "--xla_backend_optimization_level=1")))

# The suite compiles hundreds of programs and runs each for a few steps, so
# the default malloc setting (one heap kept for the whole process, which makes
# steps faster and compiles slower: emodna_jax/host_memory.py) would cost it
# time.  test_host_memory.py checks the default in processes of its own.
# Set before any test imports emodna_jax, which applies it on import.
os.environ.setdefault("EMODNA_JAX_KEEP_HOST_MEMORY", "0")

# numba's on-disk cache of guvectorize functions (librosa's YIN uses one) is
# not safe when two processes compile the same function at once: they can
# write mismatched halves of one entry, and the next call segfaults (numba
# issue 10128).  Each pytest-xdist worker therefore gets a cache of its own.
# Set before any test imports librosa, which imports numba.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
        tempfile.gettempdir(), f"emodna-numba-{os.environ['PYTEST_XDIST_WORKER']}"))

EMOTIONS = ("angry", "happy", "neutral", "sad")


def pytest_configure(config):
    """One XLA compilation cache for the whole run, fresh each run: dozens of
    tests train the same toy configs, in the pytest workers and in the
    subprocesses they start, and each compiled the same programs anew
    (about half of a test file's time).  The controlling process makes it
    before the workers start, so they and their subprocesses inherit it; a
    size limit turns on JAX's file lock, so two workers never read an entry
    half written."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config._jax_cache = tempfile.mkdtemp(prefix="emodna-jax-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=config._jax_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_COMPILATION_CACHE_MAX_SIZE=str(4 << 30))
    import jax   # if a plugin imported it already, it read the environment before this
    jax.config.update("jax_compilation_cache_dir", config._jax_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", 4 << 30)


# The longest test files, longest first: pytest-xdist hands out whole files
# (setup.cfg: --dist loadfile) in collection order, so a long file collected
# last would keep one worker busy minutes after the other has finished.
LONGEST_FIRST = ("test_distributed.py", "test_step.py", "test_cross_corpus.py",
                 "test_evaluate.py", "test_reliability.py", "test_msac_suppression.py",
                 "test_msac.py", "test_train.py", "test_default_run.py",
                 "test_cluster_labels.py", "test_models.py", "test_builder.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
    import shutil
    if getattr(config, "_jax_cache", None):
        shutil.rmtree(config._jax_cache, ignore_errors=True)


def pytest_sessionstart(session):
    """CPU facts first in the log (even with -q): multi-device timing depends on them."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"cpus: {os.cpu_count()} visible, {usable} usable; "
                            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")


def tone(seconds, sample_rate, seed, channels=1):
    """A short harmonic tone with noise: a stand-in utterance with real content."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 100 + 150 * rng.random()
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    wave = 0.2 * wave + 0.02 * rng.standard_normal(t.shape)
    wave = (wave * np.hanning(t.size)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_manifest(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "emotion", "speaker", "gender"])
        writer.writerows(rows)
    return str(path)


def make_corpus(root, num_speakers=5, per_speaker=4, sample_rate=16000,
                seconds=0.6):
    """Writes a clean manifest corpus of tones; returns the manifest path."""
    os.makedirs(root, exist_ok=True)
    rows = []
    for s in range(num_speakers):
        for u in range(per_speaker):
            name = f"spk{s}_{u}.wav"
            sf.write(os.path.join(root, name),
                     tone(seconds, sample_rate, seed=100 * s + u), sample_rate)
            rows.append([name, EMOTIONS[u % len(EMOTIONS)], f"spk{s}",
                         "female" if s % 2 else "male"])
    return write_manifest(os.path.join(root, "corpus.csv"), rows)


def make_npy_corpus(root, dim, *, seed=0, odd_one=None):
    """Writes a manifest corpus of [T, dim] .npy features (features made
    elsewhere, --feature=npy): 4 speakers x 8 utterances, with the emotion
    in the features' mean; ``odd_one``: the shape of the first file instead."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    rows = []
    for s in range(4):
        for u in range(8):
            path = os.path.join(root, f"s{s}_{u}.npy")
            shape = odd_one if odd_one and not rows else (40 + 3 * u, dim)
            np.save(path, (rng.standard_normal(shape) + u % 4).astype(np.float32))
            rows.append([path, EMOTIONS[u % 4], f"{seed}_{s}", "male"])
    return write_manifest(f"{root}.csv", rows)


@pytest.fixture
def clean_manifest(tmp_path):
    return make_corpus(tmp_path / "raw")


def build_toy_task(data_dir, raw_root, *, permute_target_labels=False):
    """Builds tiny 'toy_src' and 'toy_tgt' corpora of tones into ``data_dir``."""
    from data_prep import builder, corpora
    from data_prep.features import FeatureConfig
    for name, seed_offset in (("toy_src", 0), ("toy_tgt", 50)):
        root = os.path.join(raw_root, name)
        manifest = make_corpus(root, num_speakers=4, per_speaker=8, seconds=0.5)
        if name == "toy_tgt" and permute_target_labels:
            rows = [line.strip().split(",") for line in open(manifest)][1:]
            emotions = [r[1] for r in rows]
            shuffled = np.random.default_rng(seed_offset).permutation(emotions)
            manifest = write_manifest(manifest, [
                [r[0], e, r[2], r[3]] for r, e in zip(rows, shuffled)])
        records, skipped = corpora.parse_csv(manifest, name=name)
        builder.build_corpus(records, corpus=name, root=root, data_dir=data_dir,
                             feature_config=FeatureConfig(n_mels=16),
                             parse_skipped=skipped, progress=False)
    return data_dir


def toy_config(data_dir, **overrides):
    """configs/default.py shrunk to the toy task: a few CPU seconds a run."""
    from configs import default
    config = default.get_config()
    config.data.data_dir = str(data_dir)
    config.data.build_synthetic = False
    config.data.source = "toy_src"
    config.data.target = "toy_tgt"
    config.data.n_mels = 16
    config.data.num_frames = 24
    config.data.eval_num_frames = 56
    config.speech_gate = False   # the toy corpora are tones
    config.model.channels = 8
    config.model.num_blocks = 2
    config.model.projection_dim = 8
    config.batch_size = 8
    config.eval_batch_size = 16
    config.steps = 6
    config.log_every = 2
    config.eval_every = 0
    config.checkpoint_every = 2
    config.compare_source_only = False
    config.update_from_flattened_dict(overrides)
    return config


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return build_toy_task(str(root / "data"), str(root / "raw"))


def objective_settings(num_classes, total_steps, **overrides):
    """The objective's settings as configs/default.py makes them (the one
    source of defaults), for ``num_classes`` and ``total_steps``, with
    ``overrides``."""
    import dataclasses
    from configs import default
    from emodna_jax import experiment
    config = default.get_config()
    config.steps = total_steps
    return dataclasses.replace(experiment.objective_config(config, num_classes),
                               **overrides)
