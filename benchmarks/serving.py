r"""What an export costs a user: its size, its load time, predictions per
second for 4 s files on this machine's CPU, and the peak memory of
predicting a 5 s and a one-hour file (each in a fresh process), for both
backends, in one run.

  python benchmarks/serving.py --export_dir=E --audio=clip.wav [--files=40] [--hour_minutes=60]

The table is printed and, with ``--doc``, written into that markdown file's
generated section (``serving``); nothing in it is typed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from emodna_jax import serving


def looped(audio: str, folder: str, seconds: float) -> str:
    """``audio`` cut or looped to ``seconds``, written block by block."""
    data, rate = sf.read(audio, dtype="float32")
    path = os.path.join(folder, f"clip{seconds:g}s.wav")
    with sf.SoundFile(path, "w", rate, 1) as out:
        left = int(seconds * rate)
        while left > 0:
            out.write(data[:left])
            left -= len(data[:left])
    return path


PEAK_RSS = """
import resource, sys
from emodna_jax import serving
serving.Predictor.load(sys.argv[1], sys.argv[2]).predict_file(sys.argv[3])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib(export_dir: str, backend: str, path: str) -> float:
    """Peak resident memory of a fresh process predicting ``path``."""
    import subprocess
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, export_dir, backend, path],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return int(done.stdout.split()[-1]) / 1024


def measure(export_dir: str, clip: str, files: int, short: str, hour: str) -> list[dict]:
    size = sum(os.path.getsize(os.path.join(export_dir, name))
               for name in (serving.MODEL_JAX, serving.MODEL_ONNX, serving.PREPROCESS))
    rows = []
    for backend in serving.BACKENDS:
        start = time.perf_counter()
        predictor = serving.Predictor.load(export_dir, backend)
        predictor.predict_file(clip)            # the first call compiles (jax)
        load = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(files):
            predictor.predict_file(clip)
        rate = files / (time.perf_counter() - start)
        rows.append({"backend": backend, "size_mib": size / 2**20,
                     "load_s": load, "per_second": rate,
                     "rss_short": peak_rss_mib(export_dir, backend, short),
                     "rss_hour": peak_rss_mib(export_dir, backend, hour)})
    return rows


def markdown(rows, command: str, hour_label: str) -> str:
    lines = ["<!-- Written by benchmarks/serving.py; do not edit by hand. -->", "",
             f"Reproduce: `{command}`", "",
             "| backend | export size (MiB, all three files) | load + first prediction (s) | "
             f"4 s files per second | peak RSS, 5 s file (MiB) | peak RSS, {hour_label} file "
             "(MiB) | ratio |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['size_mib']:.2f} | {r['load_s']:.2f} | "
              f"{r['per_second']:.1f} | {r['rss_short']:.0f} | {r['rss_hour']:.0f} | "
              f"{r['rss_hour'] / r['rss_short']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", required=True)
    parser.add_argument("--audio", required=True, help="Any speech file.")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--hour_minutes", type=float, default=60.0,
                        help="Length of the long file, in minutes.")
    parser.add_argument("--doc", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args.export_dir, looped(args.audio, folder, 4), args.files,
                       looped(args.audio, folder, 5),
                       looped(args.audio, folder, 60 * args.hour_minutes))
    from benchmarks import cross_corpus
    text = markdown(rows, cross_corpus.reproduce_command(
        "serving.py", argv, drop=()).replace(args.export_dir, "E").replace(args.audio, "clip.wav"),
        f"{args.hour_minutes:g} min")
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, "serving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
