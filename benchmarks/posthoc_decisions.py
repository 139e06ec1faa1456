r"""Label-free decisions after training, on the stored target posteriors of
trained runs: can a rule applied to what a run already predicts reach what
adaptation did not?

  python benchmarks/posthoc_decisions.py --data_dir=DATA --out=OUT \
      --methods=source_only,emodna --seeds=0,1,2,3,4,5 \
      [--doc=docs/results.md --section=posthoc_decisions]

``OUT`` is benchmarks/cross_corpus.py's, its runs evaluated with the
``embeddings`` evaluator (every checkpoint's predictions stored).  Every rule
starts from a run's mean posterior over its checkpoints (evaluation's
``checkpoint_ensemble``, docs/losses.md section 10) and reads no target
label; the labels only score it:

* **mean posterior**: its argmax (evaluation's figure);
* **balanced per speaker / per corpus**: the posteriors rescaled, by
  Sinkhorn's alternating normalisation, until each target speaker's (or the
  whole target's) predicted class shares are equal, then the argmax.  It
  assumes every speaker acts every emotion about equally often, true of
  acted corpora and not of spontaneous ones;
* **fused with the statistics, weight w**: ``(1 - w) p + w q``, with ``q``
  a logistic regression's posterior on the 18 utterance statistics
  (standardised per speaker, as training reads them), trained on the whole
  labelled source.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import cross_corpus
from benchmarks.served_ensemble import run_config, stored_mean_posterior
from benchmarks.target_clusters import target_statistics, task_labels
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig

FUSION_WEIGHTS = (0.25, 0.5)
RULES = (("mean posterior", None), ("balanced per speaker", None),
         ("balanced per corpus", None),
         *((f"fused with the statistics, weight {w}", w) for w in FUSION_WEIGHTS))


def balanced(posterior: np.ndarray, iterations: int = 100) -> np.ndarray:
    """``posterior`` [N, C] rescaled per class until every class takes N / C
    of the rows' mass and every row sums to 1 (Sinkhorn-Knopp)."""
    q = np.asarray(posterior, np.float64)
    for _ in range(iterations):
        q = q / q.sum(1, keepdims=True)
        q = q / q.sum(0, keepdims=True) * (len(q) / q.shape[1])
    return q / q.sum(1, keepdims=True)


def balanced_by(posterior: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """:func:`balanced` within each group of rows (a speaker's utterances)."""
    if len(groups) != len(posterior):
        raise ValueError(f"{len(groups)} group labels for {len(posterior)} posterior rows")
    out = np.empty_like(posterior, dtype=np.float64)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = balanced(posterior[rows])
    return out


def speakers_of(corpus: PreparedCorpus) -> np.ndarray:
    """Each utterance's speaker, in the 'all' order of the stored ``index``."""
    rows = corpus.source("all")
    return np.array([int(rows[i]["speaker"]) for i in range(len(rows))])


def statistics_classifier(table: dict, classes) -> LogisticRegression:
    """A logistic regression on a corpus's utterance statistics, trained on
    its utterances of ``classes``."""
    keep = np.isin(table["emotion"], classes)
    labels = np.array([list(classes).index(e) for e in table["emotion"][keep]])
    return LogisticRegression(max_iter=5000).fit(table["x"][keep], labels)


def run_scores(run: str, data_dir: str, tables: dict, speakers: dict) -> dict:
    """Rule name -> target UAR of one evaluated run."""
    config, result = run_config(run, data_dir)
    source, target = result["task"].split(":")
    _, index, stored_labels, posterior = stored_mean_posterior(run, config)
    classes = list(config.data.classes)
    labels = task_labels(tables[target], {"index": index, "label": stored_labels},
                         classes, run)
    keep = labels >= 0
    statistics = statistics_classifier(tables[source], classes).predict_proba(
        tables[target]["x"][index])
    # Every target row is balanced and fused, those of an emotion outside the
    # task's classes too: without labels they cannot be told apart. Only the
    # score leaves them out.
    decided = {"mean posterior": posterior,
               "balanced per speaker": balanced_by(posterior, speakers[target][index]),
               "balanced per corpus": balanced(posterior)}
    for name, weight in RULES:
        if weight is not None:
            decided[name] = (1 - weight) * posterior + weight * statistics
    return {name: float(balanced_accuracy_score(labels[keep], p[keep].argmax(1)))
            for name, p in decided.items()}


def markdown(scores: dict, tasks, methods, seeds, command: str) -> str:
    groups = cross_corpus.task_groups(tasks)
    if len(groups) > 1:
        groups.append(("", tasks))
    header = (["method", "rule"] + [t.replace(":", " → ") for t in tasks]
              + [f"mean{name}" for name, _ in groups])
    lines = ["<!-- Written by benchmarks/posthoc_decisions.py; do not edit by hand. -->",
             "", f"Reproduce: `{command}`", "",
             f"Target UAR, mean over seeds {list(seeds)}, of each label-free rule "
             "applied to a run's mean posterior over its checkpoints (target "
             "labels score it only).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        for rule, _ in RULES:
            per_task = {t: np.mean(scores[(t, method)][rule]) for t in tasks}
            cells = [f"{per_task[t]:.3f}" for t in tasks]
            cells += [f"**{np.mean([per_task[t] for t in members]):.3f}**"
                      for _, members in groups]
            lines.append(f"| {cross_corpus.LABELS.get(method, method)} | {rule} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True, help="benchmarks/cross_corpus.py's --out")
    parser.add_argument("--tasks", default=",".join(cross_corpus.DEV_TASKS
                                                    + cross_corpus.SHIFTED_TASKS))
    parser.add_argument("--methods", default="source_only,emodna")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--doc", default="")
    parser.add_argument("--section", default="posthoc_decisions")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t.strip()]
    methods = [m for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    features = FeatureConfig(kind="logmel_pitch")
    tables, speakers, scores = {}, {}, {}
    for task in tasks:
        for name in task.split(":"):
            if name not in tables:
                corpus = PreparedCorpus.find(args.data_dir, name, features)
                tables[name], speakers[name] = target_statistics(corpus), speakers_of(corpus)
        for method in methods:
            for seed in seeds:
                run = cross_corpus.run_dir(args.out, task, method, seed)
                if not os.path.isdir(run):
                    parser.error(f"{run}: missing; train and evaluate it with "
                                 "benchmarks/cross_corpus.py first")
                for rule, uar in run_scores(run, args.data_dir, tables, speakers).items():
                    scores.setdefault((task, method), {}).setdefault(rule, []).append(uar)
            print(task, method, {r: round(float(np.mean(v)), 3)
                                 for r, v in scores[(task, method)].items()}, flush=True)
    command = cross_corpus.reproduce_command("posthoc_decisions.py", argv)
    text = markdown(scores, tasks, methods, seeds, command)
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
