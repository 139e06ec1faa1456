"""Batch evaluators, chosen by name in ``config.evals``.

Each is a module of this package with an ``Evaluator`` class: its
``splits`` are the predictions it reads, ``run(step, predictions, state)``
puts its rows into the tables of the shared ``Context`` (or writes its own
files), and ``evaluate.evaluate_checkpoints`` runs the configured ones in
their order for every checkpoint.  A new evaluator is a new module here;
nothing else changes.

  classification  metrics.csv: UAR, WAR, F1, recall, NLL per split, and the
                  label-free selection scores (selection reads it: required)
  pseudo_labels   pseudo_labels.csv: what training's own rule selects
  ood             ood.csv: every OOD score on the excluded emotions (the only
                  one that needs a pass over the source's training split)
  embeddings      predictions/step_N.npz: every output per utterance, for the
                  report's figures and ``--rescore``
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil

# The splits an evaluator may ask for, in the order they are predicted.
SPLITS = ("target", "source_val", "source_train")
DEFAULT = ("classification", "pseudo_labels", "ood", "embeddings")
REQUIRED = ("classification",)


def available() -> tuple[str, ...]:
    """Every evaluator module of this package."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_")))


@dataclasses.dataclass
class Context:
    """What every evaluator of one evaluation shares: the config, the corpora,
    the training objective's settings and the result tables by file name."""
    config: object
    out_dir: str
    classes: tuple
    objective: object
    target: object
    tables: dict = dataclasses.field(default_factory=dict)
    checkpointer: object = None   # what evaluators read beside the state from

    def table(self, name: str, key: str):
        """The table ``out_dir/name`` (rows keyed by step and ``key``), one
        object per file however many evaluators write to it."""
        from emodna_jax.evaluate import ResultTable
        if name not in self.tables:
            self.tables[name] = ResultTable(os.path.join(self.out_dir, name), key)
        return self.tables[name]

    def save(self):
        for table in self.tables.values():
            if table.rows:
                table.save()


def build(names, context: Context) -> list:
    """The evaluators ``names`` (``config.evals``), in that order."""
    problem = check(names)
    if problem:
        raise ValueError(f"config.evals: {problem}")
    return [importlib.import_module(f"{__name__}.{name}").Evaluator(context)
            for name in names]


def check(names) -> str:
    """What is wrong with ``names`` as ``config.evals``, or ''."""
    known = available()
    unknown = [n for n in names if n not in known]
    if unknown:
        hint = (" (several on the command line: --config.evals=\"('a', 'b')\")"
                if "," in unknown[0] else "")
        return (f"unknown evaluator {unknown[0]!r}; the evaluators are "
                + ", ".join(known) + hint)
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        return f"must include {missing[0]!r} (checkpoint selection reads its table)"
    if len(set(names)) != len(names):
        return f"names an evaluator twice: {list(names)}"
    return ""


def splits_needed(evaluators) -> tuple[str, ...]:
    wanted = {s for e in evaluators for s in e.splits}
    return tuple(s for s in SPLITS if s in wanted)
