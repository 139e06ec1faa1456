r"""How far the target's own clusters go: what bounds label-free adaptation.

  python benchmarks/target_clusters.py --data_dir=DATA --out=OUT \
      --methods=source_only,dan,dann,emodna --seeds=0,1,2 \
      --doc=docs/results.md --section=target_clusters

A diagnostic over a finished runner folder (benchmarks/cross_corpus.py's
``--out``).  It reads each run's stored predictions at the checkpoint that
source validation selected (``eval/predictions/step_N.npz``) and needs no
checkpoint and no training.  Per task:

* **k-means clusters, best-matched**: k-means with one cluster per class over the target's
  18 utterance statistics standardised per speaker (the prosody statistics
  every method of the recipe reads, emodna_jax/utterance_stats.py), each
  cluster then read as the class it overlaps most (Hungarian matching).
  The matching reads target labels, so this is an estimate of how well the
  target's own structure separates its classes, not a method.
* **refined**, per method: the same k-means, label-free, over the
  statistics beside the run's log-posteriors (each column standardised),
  started from the posterior-weighted class centroids as SHOT's
  pseudo-labels are (Liang et al. 2020), cluster k read as class k: what
  ``loss.cluster_labels`` does during training
  (emodna_jax/cluster_labels.py), here once, after it.

Why: when every method, refined, lands near the same UAR and near the
best-matched clusters, it is the target's structure, not the training objective,
that limits what adaptation can gain on these tasks.  The table is written
by this program.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import balanced_accuracy_score

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig
from emodna_jax.cluster_labels import refine
from emodna_jax.utterance_stats import SpeakerStats


def cluster_bound(x: np.ndarray, labels: np.ndarray, num_classes: int,
                  seed: int = 0) -> float:
    """UAR of k-means clusters of ``x`` read as their best-matching classes
    (one class per cluster, matched to maximise the overlap)."""
    clusters = KMeans(num_classes, n_init=20, random_state=seed).fit_predict(x)
    overlap = np.zeros((num_classes, num_classes))
    np.add.at(overlap, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-overlap)
    as_class = np.empty(num_classes, int)
    as_class[rows] = cols
    return float(balanced_accuracy_score(labels, as_class[clusters]))


def target_statistics(corpus: PreparedCorpus) -> dict:
    """The 18 utterance statistics of every utterance of ``corpus`` (rows in
    its 'all' order, the order of the stored predictions' ``index``),
    standardised per speaker exactly as training's clusters read them
    (``SpeakerStats``, floored std), with each utterance's emotion name."""
    data = corpus.source("all")
    emotions = [corpus.emotions[int(data[i]["emotion"])] for i in range(len(data))]
    return {"x": SpeakerStats.of_corpus(corpus).of_split("all"),
            "emotion": np.asarray(emotions)}


def selected_predictions(run: str) -> tuple[dict, dict]:
    """(summary.json, target predictions at the selected step) of one run."""
    path = os.path.join(run, "eval", "summary.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; run --mode=evaluate on {run} first")
    with open(path) as f:
        summary = json.load(f)
    step = summary["selected"]["step"]
    with np.load(os.path.join(run, "eval", "predictions", f"step_{step}.npz")) as stored:
        target = {k.split("/", 1)[1]: stored[k] for k in stored.files
                  if k.startswith("target/")}
    return summary, target


def task_labels(table: dict, target: dict, classes, run: str) -> np.ndarray:
    """The target rows' class indices, checked against the stored labels
    (a mismatch means the corpus was re-prepared since the run)."""
    names = table["emotion"][target["index"]]
    labels = np.array([list(classes).index(n) if n in classes else -1 for n in names])
    if not np.array_equal(labels, target["label"]):
        raise ValueError(f"{run}: stored target labels do not match the prepared "
                         "corpus's; was it re-prepared after the run?")
    return labels


def _cell(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"


def markdown(rows: dict, bounds: dict, tasks, methods, command: str) -> str:
    """``rows[(task, method)]`` = [(as trained, refined) per seed]."""
    head = ["task", "k-means clusters, best-matched (reads target labels)"]
    for m in methods:
        label = cross_corpus.LABELS.get(m, m)
        head += [label, f"{label}, refined"]
    lines = [f"Reproduce: `{command}`", "",
             "Target UAR at the checkpoint selected by source validation, mean ± "
             "std over seeds; refined: the label-free k-means step above.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {}
    for task in tasks:
        cells = [task.replace(":", " → "), f"{bounds[task]:.3f}"]
        means.setdefault("bound", []).append(bounds[task])
        for m in methods:
            pairs = rows.get((task, m), [])
            for j in (0, 1):
                values = [p[j] for p in pairs]
                cells.append(_cell(values))
                if values:
                    means.setdefault((m, j), []).append(np.mean(values))
        lines.append("| " + " | ".join(cells) + " |")
    complete = [m for m in methods if len(means.get((m, 0), [])) == len(tasks)]
    cells = [f"**mean over {len(tasks)} tasks**", f"**{np.mean(means['bound']):.3f}**"]
    for m in methods:
        cells += [f"**{np.mean(means[(m, j)]):.3f}**" if m in complete else "-"
                  for j in (0, 1)]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True, help="the runner's --out folder")
    parser.add_argument("--tasks", default=",".join(cross_corpus.DEV_TASKS))
    parser.add_argument("--methods", default=",".join(cross_corpus.METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--doc", default=None)
    parser.add_argument("--section", default="target_clusters")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t.strip()]
    methods = [m for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    features = FeatureConfig(kind="logmel_pitch")
    tables, rows, bounds = {}, {}, {}
    for task in tasks:
        name = task.split(":")[1]
        if name not in tables:
            tables[name] = target_statistics(PreparedCorpus.find(args.data_dir, name,
                                                                 features))
        table = tables[name]
        for method in methods:
            for seed in seeds:
                run = cross_corpus.run_dir(args.out, task, method, seed)
                if not os.path.isdir(run):
                    continue
                summary, target = selected_predictions(run)
                labels = task_labels(table, target, summary["classes"], run)
                x, keep = table["x"][target["index"]], labels >= 0
                if task not in bounds:
                    bounds[task] = cluster_bound(x[keep], labels[keep],
                                                 len(summary["classes"]))
                predicted = (target["logits"].argmax(1), refine(x, target["logits"]))
                rows.setdefault((task, method), []).append(tuple(
                    balanced_accuracy_score(labels[keep], p[keep]) for p in predicted))
        if task not in bounds:
            raise FileNotFoundError(f"--out={args.out}: no evaluated run of {task}")
    command = cross_corpus.reproduce_command("target_clusters.py", argv)
    text = markdown(rows, bounds, tasks, methods, command)
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
