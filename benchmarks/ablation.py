r"""Ablation table: one row per component switched off, from the runner's csvs.

  python benchmarks/ablation.py --doc=docs/results.md --section=ablation --seeds=0 \
      --row "Emo-DNA, the recipe=docs/results_benchmark.csv:emodna" \
      --row "without the agreement check=docs/results_benchmark.csv:no_agreement" ...

Each ``--row LABEL=CSV:METHOD`` takes the runs of METHOD from a results csv
that benchmarks/cross_corpus.py wrote (committed beside docs/results.md), so
rows measured in different runner invocations (a feature setting, a
safeguard switched off) line up task by task.  The first row is the
reference: every other row shows its difference from it.  Only tasks every
row covers, at the seeds asked for, enter the mean.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus


def parse_row(text: str) -> tuple[str, str, str]:
    label, sep, source = text.partition("=")
    path, colon, method = source.rpartition(":")
    if not (sep and colon and label and path and method):
        raise ValueError(f"--row {text!r}: expected LABEL=CSV:METHOD")
    return label, path, method


def row_means(path: str, method: str, seeds) -> dict:
    """task -> mean target UAR (selected checkpoint) of ``method`` over ``seeds``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--row: {path} does not exist (run "
                                "benchmarks/cross_corpus.py with --doc first)")
    runs = [r for (task, m, seed), r in cross_corpus.read_results(path).items()
            if m == method and seed in seeds]
    tasks = sorted({r["task"] for r in runs})
    per_task = {t: [r["uar"] for r in runs if r["task"] == t] for t in tasks}
    return {t: float(np.mean(v)) for t, v in per_task.items()
            if len(v) == len(seeds)}


def markdown(rows, means, seeds, command: str) -> str:
    tasks = [t for t in cross_corpus.DEV_TASKS if all(t in m for m in means)]
    tasks += sorted(set.intersection(*(set(m) for m in means)) - set(tasks))
    header = ["variant"] + [t.replace(":", " → ") for t in tasks] + ["mean", "Δ mean"]
    lines = ["<!-- Written by benchmarks/ablation.py; do not edit by hand. -->", "",
             f"Reproduce: `{command}`", "",
             f"Target UAR at the checkpoint selected by source validation, mean over "
             f"seeds {list(seeds)}; Δ: difference from the first row.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference = np.mean([means[0][t] for t in tasks]) if tasks else float("nan")
    for (label, path, method), m in zip(rows, means):
        mean = np.mean([m[t] for t in tasks]) if tasks else float("nan")
        cells = [f"{m[t]:.3f}" for t in tasks] + [f"**{mean:.3f}**",
                                                   f"{mean - reference:+.3f}"]
        lines.append(f"| {label} (`{os.path.basename(path)}`: {method}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", required=True,
                        metavar="LABEL=CSV:METHOD")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--doc", required=True)
    parser.add_argument("--section", default="ablation")
    args = parser.parse_args(argv)
    try:
        rows = [parse_row(r) for r in args.row]
    except ValueError as error:
        parser.error(str(error))
    seeds = [int(s) for s in args.seeds.split(",")]
    means = [row_means(path, method, seeds) for _, path, method in rows]
    command = cross_corpus.reproduce_command("ablation.py", argv)
    text = markdown(rows, means, seeds, command)
    cross_corpus.write_section(args.doc, text, args.section)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
