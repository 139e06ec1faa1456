r"""Are the predictions an export flags "not adapted" the ones to distrust?
Measured on the stored target posteriors of trained runs.

  python benchmarks/adaptation_flag.py --data_dir=DATA --out=OUT \
      --seeds=0,1,2,3,4,5 [--doc=docs/results.md --section=adaptation_flag]

``OUT`` is benchmarks/cross_corpus.py's, its runs evaluated with the
``embeddings`` evaluator.  Each run is taken as ``config.serve =
'checkpoint_ensemble'`` exports it: the mean posterior of its checkpoints,
and the adaptation verdict of its newest checkpoint
(export.adaptation_info).  A target utterance is flagged when the emotion
predicted for it is one the Predictor marks ``adapted = False``
(serving.emotion_adapted).  The target labels only score: per task, over
the seeds pooled, the share of target utterances flagged and the accuracy
of the flagged and the other predictions.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import cross_corpus
from benchmarks.served_ensemble import run_config, stored_mean_posterior
from emodna_jax import experiment
from emodna_jax import export
from emodna_jax import input_pipeline
from emodna_jax import serving

# Per run: runs with a class left unadapted, then flagged utterances and the
# right ones among them, then the same for the others.
FIELDS = ("runs", "with_flag", "flagged", "flagged_right", "others", "others_right")


def flagged(adaptation: dict | None, classes, predicted: np.ndarray) -> np.ndarray:
    """[N] bool: the predictions (class indices) the Predictor marks not adapted."""
    marked = np.array([serving.emotion_adapted(adaptation, c) is False for c in classes])
    return marked[np.asarray(predicted)]


def run_counts(run: str, data_dir: str) -> dict:
    """FIELDS of one evaluated run."""
    config, _ = run_config(run, data_dir)
    steps, _, labels, posterior = stored_mean_posterior(run, config)
    built, state, step = experiment.restore(config, run, steps[-1])
    # What an export of the ensemble writes: its newest checkpoint's verdict.
    adaptation = export.served_adaptation(config, built, state, step)
    keep = labels != input_pipeline.EXCLUDED
    predicted = posterior.argmax(1)[keep]
    right = predicted == labels[keep]
    marked = flagged(adaptation, built.classes, predicted)
    return {"runs": 1, "with_flag": int(marked.any()),
            "flagged": int(marked.sum()), "flagged_right": int(right[marked].sum()),
            "others": int((~marked).sum()), "others_right": int(right[~marked].sum())}


def pooled(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in FIELDS}


def _row(name: str, c: dict) -> str:
    def share(right, total):
        return f"{right / total:.3f} ({total})" if total else "- (0)"
    total = c["flagged"] + c["others"]
    return (f"| {name} | {c['with_flag']}/{c['runs']} | {c['flagged'] / total:.3f} | "
            f"{share(c['flagged_right'], c['flagged'])} | "
            f"{share(c['others_right'], c['others'])} |")


def markdown(counts: dict, tasks, method: str, seeds, command: str) -> str:
    """``counts``: task -> list of run_counts over the seeds."""
    lines = ["<!-- Written by benchmarks/adaptation_flag.py; do not edit by hand. -->",
             "", f"Reproduce: `{command}`", "",
             f"{cross_corpus.LABELS.get(method, method)}, seeds {list(seeds)}, served as "
             "the mean posterior of every checkpoint: the share of target utterances "
             "whose prediction is flagged `adapted = False`, and the accuracy of the "
             "flagged and the other predictions (utterances in brackets; seeds pooled).",
             "", "| task | runs with a flag | flagged | accuracy, flagged | "
             "accuracy, not flagged |", "|---|---|---|---|---|"]
    lines += [_row(t.replace(":", " → "), pooled(counts[t])) for t in tasks]
    for name, members in cross_corpus.task_groups(tasks):
        lines.append(_row(f"**{name.lstrip(', ') or 'every task'}**",
                          pooled([c for t in members for c in counts[t]])))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True, help="benchmarks/cross_corpus.py's --out")
    parser.add_argument("--tasks", default=",".join(cross_corpus.DEV_TASKS
                                                    + cross_corpus.SHIFTED_TASKS))
    parser.add_argument("--method", default="emodna")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--doc", default="")
    parser.add_argument("--section", default="adaptation_flag")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {(t, s): cross_corpus.run_dir(args.out, t, args.method, s)
            for t in tasks for s in seeds}
    missing = [r for r in runs.values() if not os.path.isdir(r)]
    if missing:
        parser.error(f"{missing[0]}: missing; train and evaluate it with "
                     "benchmarks/cross_corpus.py first")
    counts = {t: [run_counts(runs[(t, s)], args.data_dir) for s in seeds] for t in tasks}
    command = cross_corpus.reproduce_command("adaptation_flag.py", argv)
    text = markdown(counts, tasks, args.method, seeds, command)
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
