r"""Data-preparation speed on the synthetic corpora.

  python benchmarks/prep.py [--repeat 3]

Measures, in one run: feature-extraction files/s with 1 worker and with 2
workers (and their ratio), end-to-end build files/s (extraction + TFDS
array_record writing) for both, and seconds of extraction per hour of audio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time


from data_prep import builder
from data_prep import corpora
from data_prep import extract
from data_prep import synthetic
from data_prep.features import FeatureConfig


def _records(raw_dir: str, repeat: int):
    manifests = synthetic.generate_default_pair(raw_dir)
    records = []
    for name, manifest in manifests.items():
        records += corpora.parse_csv(str(manifest), name=name)[0]
    return records * repeat  # the same files again: more work per timing


def _time_extraction(records, config, workers, scratch):
    cache = tempfile.mkdtemp(dir=scratch)
    start = time.perf_counter()
    extracted, _ = extract.extract_corpus(records, config, cache, workers=workers,
                                          progress=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(cache)
    return elapsed, extracted


def _time_build(records, config, workers, scratch):
    data_dir = tempfile.mkdtemp(dir=scratch)
    start = time.perf_counter()
    builder.build_corpus(records, corpus="bench", root=scratch, data_dir=data_dir,
                         feature_config=config, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    shutil.rmtree(data_dir)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3,
                        help="process the synthetic pair this many times per timing")
    parser.add_argument("--trials", type=int, default=3, help="timings per setting")
    args = parser.parse_args()

    config = FeatureConfig()
    scratch = tempfile.mkdtemp(prefix="prep_bench_")
    try:
        records = _records(os.path.join(scratch, "raw"), args.repeat)
        _time_extraction(records[:8], config, 1, scratch)  # warm caches, librosa
        results = {}
        for workers in (1, 2):
            times = [_time_extraction(records, config, workers, scratch)
                     for _ in range(args.trials)]
            results[workers] = statistics.median(t for t, _ in times)
            hours = sum(e.duration_s for e in times[0][1]) / 3600
        builds = {w: statistics.median(_time_build(records, config, w, scratch)
                                       for _ in range(args.trials)) for w in (1, 2)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    n = len(records)
    print(f"synthetic pair x{args.repeat}: {n} files, {hours:.3f} h of audio, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'':24}{'1 worker':>12}{'2 workers':>12}")
    print(f"{'extraction files/s':24}{n / results[1]:12.1f}{n / results[2]:12.1f}")
    print(f"{'full build files/s':24}{n / builds[1]:12.1f}{n / builds[2]:12.1f}")
    print(f"extraction speed-up with 2 workers: {results[1] / results[2]:.2f}x "
          "(target >= 1.6x on 2 cores)")
    print(f"full build speed-up with 2 workers: {builds[1] / builds[2]:.2f}x")
    print(f"feature extraction: {results[1] / hours:.1f} s per hour of audio "
          f"(1 worker), {results[2] / hours:.1f} s (2 workers)")


if __name__ == "__main__":
    main()
