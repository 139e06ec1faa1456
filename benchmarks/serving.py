r"""What an export costs a user: its size, its load time, and predictions per
second for 4 s files on this machine's CPU, for both backends, in one run.

  python benchmarks/serving.py --export_dir=E --audio=clip.wav [--files=40]

The table is printed and, with ``--doc``, written into that markdown file's
generated section (``serving``); nothing in it is typed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from emodna_jax import serving  # noqa: E402


def four_second_clip(audio: str, folder: str) -> str:
    """``audio`` cut or looped to 4 s."""
    data, rate = sf.read(audio, dtype="float32")
    data = np.resize(data, 4 * rate)
    path = os.path.join(folder, "clip4s.wav")
    sf.write(path, data, rate)
    return path


def measure(export_dir: str, clip: str, files: int) -> list[dict]:
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
                     "load_s": load, "per_second": rate})
    return rows


def markdown(rows, command: str) -> str:
    lines = ["<!-- Written by benchmarks/serving.py; do not edit by hand. -->", "",
             f"Reproduce: `{command}`", "",
             "| backend | export size (MiB, all three files) | load + first prediction (s) | "
             "4 s files per second |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['size_mib']:.2f} | {r['load_s']:.2f} | "
              f"{r['per_second']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", required=True)
    parser.add_argument("--audio", required=True, help="Any speech file.")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--doc", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args.export_dir, four_second_clip(args.audio, folder), args.files)
    from benchmarks import cross_corpus
    text = markdown(rows, cross_corpus.reproduce_command(
        "serving.py", argv, drop=()).replace(args.export_dir, "E").replace(args.audio, "clip.wav"))
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, "serving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
