r"""Ablation table: one row per component switched off, from the runner's csvs.

  python benchmarks/ablation.py --doc=docs/results.md --section=ablation --seeds=0 \
      --row "Emo-DNA, the recipe=docs/results_benchmark.csv:emodna" \
      --row "without the agreement check=docs/results_benchmark.csv:no_agreement" ...

Each ``--row LABEL=CSV:METHOD`` takes the runs of METHOD from a results csv
that benchmarks/cross_corpus.py wrote (committed beside docs/results.md), so
rows measured in different runner invocations (a feature setting, a
safeguard switched off) line up task by task.  ``CSV:METHOD@COLUMN`` reads
another of the csv's target UARs than the selected checkpoint's (``uar``),
such as ``uar_ensemble`` or ``uar_last``.  The first row is the
reference.  Every other row shows, for the mean over each group of tasks
(the development suite and each shifted pair, which have their own bars)
and over all of them, its difference from the reference with that
difference's standard error over seeds: whether a gap is larger than what
reseeding alone moves.  Only tasks every row covers, at the seeds asked
for, enter the means.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus


UAR_COLUMNS = ("uar", "uar_last", "uar_ensemble", "uar_snd", "uar_dev",
               "uar_entropy")


def parse_row(text: str) -> tuple[str, str, str, str]:
    """``(label, csv path, method, column)`` of ``LABEL=CSV:METHOD[@COLUMN]``."""
    label, sep, source = text.partition("=")
    path, colon, method = source.rpartition(":")
    method, _, column = method.partition("@")
    column = column or "uar"
    if not (sep and colon and label and path and method):
        raise ValueError(f"--row {text!r}: expected LABEL=CSV:METHOD[@COLUMN]")
    if column not in UAR_COLUMNS:
        raise ValueError(f"--row {text!r}: column {column!r} is not one of "
                         + ", ".join(UAR_COLUMNS))
    return label, path, method, column


def row_values(path: str, method: str, seeds, column: str = "uar") -> dict:
    """task -> [target UAR of ``method`` at each of ``seeds`` (the csv's
    ``column``)], for the tasks run at every one of them with a value there
    (a run evaluated before a column existed has none)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--row: {path} does not exist (run "
                                "benchmarks/cross_corpus.py with --doc first)")
    runs = [r for (task, m, seed), r in cross_corpus.read_results(path).items()
            if m == method and seed in seeds and np.isfinite(r[column])]
    tasks = sorted({r["task"] for r in runs})
    per_task = {t: [r[column] for r in runs if r["task"] == t] for t in tasks}
    return {t: v for t, v in per_task.items() if len(v) == len(seeds)}


def difference(values: dict, reference: dict, tasks) -> tuple[float, float]:
    """(Δ, its standard error) of the mean over ``tasks`` of the per-task
    seed means, ``values`` against ``reference``.  Each task's difference
    has the variance s_a^2 / n_a + s_b^2 / n_b of two independent means
    over seeds (sample variances), and the tasks are independent, so
    SE = sqrt(sum over tasks) / number of tasks; NaN with one seed."""
    deltas, variances = [], []
    for t in tasks:
        a, b = np.asarray(values[t], float), np.asarray(reference[t], float)
        deltas.append(a.mean() - b.mean())
        variances.append(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
                         if min(len(a), len(b)) > 1 else np.nan)
    return float(np.mean(deltas)), float(np.sqrt(np.sum(variances)) / len(tasks))


def _mean(values: dict, tasks) -> float:
    return float(np.mean([np.mean(values[t]) for t in tasks]))


def markdown(rows, values, seeds, command: str, means_only: bool = False) -> str:
    tasks = [t for t in cross_corpus.DEV_TASKS if all(t in v for v in values)]
    tasks += sorted(set.intersection(*(set(v) for v in values)) - set(tasks))
    groups = cross_corpus.task_groups(tasks)
    if len(groups) > 1:
        groups.append(("", tasks))
    shown_tasks = [] if means_only else tasks
    header = (["variant"] + [t.replace(":", " → ") for t in shown_tasks]
              + [f"mean{name}" for name, _ in groups])
    lines = ["<!-- Written by benchmarks/ablation.py; do not edit by hand. -->", "",
             f"Reproduce: `{command}`", "",
             f"Target UAR, mean over seeds {list(seeds)}: at the checkpoint selected "
             "by source validation, or the figure the row names after its method "
             "(`uar_ensemble`: the mean posterior of every checkpoint; `uar_last`: "
             "the last step). Beside each mean, in brackets, its difference "
             "from the first row ± the difference's standard error over seeds "
             "(none with one seed).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k, ((label, path, method, column), v) in enumerate(zip(rows, values)):
        cells = [f"{np.mean(v[t]):.3f}" for t in shown_tasks]
        for _, members in groups:
            cell = f"**{_mean(v, members):.3f}**"
            if k:
                delta, error = difference(v, values[0], members)
                cell += f" ({delta:+.3f}" + (f" ± {error:.3f})" if np.isfinite(error)
                                             else ")")
            cells.append(cell)
        shown = method if column == "uar" else f"{method}, {column}"
        lines.append(f"| {label} (`{os.path.basename(path)}`: {shown}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", action="append", required=True,
                        metavar="LABEL=CSV:METHOD[@COLUMN]")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--doc", required=True)
    parser.add_argument("--section", default="ablation")
    parser.add_argument("--means_only", action="store_true",
                        help="only the means over each group of tasks")
    args = parser.parse_args(argv)
    try:
        rows = [parse_row(r) for r in args.row]
    except ValueError as error:
        parser.error(str(error))
    seeds = [int(s) for s in args.seeds.split(",")]
    values = [row_values(path, method, seeds, column) for _, path, method, column in rows]
    if not set.intersection(*(set(v) for v in values)):
        parser.error(f"no task has runs at seeds {seeds} in every --row")
    command = cross_corpus.reproduce_command("ablation.py", argv)
    text = markdown(rows, values, seeds, command, means_only=args.means_only)
    cross_corpus.write_section(args.doc, text, args.section)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
