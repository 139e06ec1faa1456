"""Evaluation: one state on a split (during training) and every checkpoint of a
workdir in batch (``--mode=evaluate`` / ``--mode=watch``).

Batch evaluation opens the checkpoints read-only and restores each from an
abstract state carrying the *current* device sharding, so checkpoints
written on 8 devices evaluate on 1 and the reverse.  For each step it
predicts the splits the configured evaluators read (``config.evals``,
emodna_jax/evaluators: metrics.csv, pseudo_labels.csv, ood.csv, the
per-step predictions) and runs them; then it selects a step from
metrics.csv and writes ``WORKDIR/eval/summary.json`` (last and selected
step, with the selection rule) and the report."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time

import jax
import numpy as np
import tqdm

from data_prep import files
from emodna_jax import checkpoint_ensemble
from emodna_jax import checkpointing
from emodna_jax import config_validation
from emodna_jax import distributed
from emodna_jax import evaluators as evaluators_lib
from emodna_jax import experiment
from emodna_jax import input_pipeline
from emodna_jax import losses
from emodna_jax import metrics as metrics_lib
from emodna_jax import scoring
from emodna_jax import selection
from emodna_jax import step as step_lib
from emodna_jax import workdir_lock
from emodna_jax.evaluators import embeddings

EVAL_DIR = "eval"
SPLITS = ("target", "source_val")   # the rows of metrics.csv


class Evaluator:
    """Runs the jitted, data-parallel eval step over whole splits."""

    def __init__(self, model, parallel: step_lib.Parallel, config):
        self.parallel = parallel
        self.batch_size = config.eval_batch_size
        self.num_frames = config.data.eval_num_frames
        self.num_classes = len(config.data.classes)
        self._eval_step = parallel.compile_eval(step_lib.make_eval_step(model))

    def predict(self, state, task: input_pipeline.TaskCorpus, split: str, *,
                include_excluded: bool = False) -> dict:
        """Model outputs and labels for every utterance of ``split``, each
        utterance scored whole (emodna_jax/scoring.py, as prediction does).

        Returns numpy arrays over the split's utterances, in index order: the
        model outputs of ``step.OUTPUT_KEYS`` plus ``label`` (task class or
        EXCLUDED), ``emotion`` (the corpus's own emotion index) and ``index``.
        """
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        chunks, dispatched = [], None

        def fetch(outputs, batch):
            outputs = self.parallel.get_outputs(outputs)
            # Every process's rows, in the order of the gathered outputs.
            rows = distributed.gather_rows(
                {k: batch[k] for k in ("label", "emotion", "index", "weight")})
            keep = rows["weight"] > 0
            chunks.append({**{k: v[keep] for k, v in outputs.items()},
                           **{k: rows[k][keep] for k in ("label", "emotion", "index")}})

        for batch in input_pipeline.eval_batches(
                task, split, batch_size=self.batch_size,
                num_frames=self.num_frames, include_excluded=include_excluded,
                process_index=jax.process_index(), process_count=jax.process_count()):
            outputs = self._eval_step(variables, self.parallel.put_batch(
                {"frames": batch["frames"], "mask": batch["mask"]}))
            if dispatched is not None:   # batch k is fetched once k + 1 is dispatched
                fetch(*dispatched)
            dispatched = (outputs, batch)
        if dispatched is not None:
            fetch(*dispatched)
        windows = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        index, combined = scoring.combine(
            {k: v for k, v in windows.items() if k not in ("label", "emotion", "index")},
            windows["index"])
        first = np.unique(windows["index"], return_index=True)[1]
        return {**combined, "index": index.astype(np.int32),
                **{k: windows[k][first] for k in ("label", "emotion")}}

    def report(self, state, task) -> dict:
        """UAR, WAR, macro-F1, per-class recall, confusion of the eval split."""
        return classification(self.predict(state, task, task.eval_split),
                              self.num_classes)

    def scalars(self, state, source, target) -> dict:
        """The headline figures logged during training."""
        tgt = self.report(state, target)
        src = self.report(state, source)
        return {"target_uar": tgt["uar"], "target_war": tgt["war"],
                "source_val_uar": src["uar"], "source_val_war": src["war"]}


def classification(predictions: dict, num_classes: int,
                   posterior_logits: np.ndarray | None = None) -> dict:
    """Metrics over the in-task utterances of a prediction dict; with
    ``posterior_logits`` (logits whose softmax is the class posterior) also
    ``nll``, the mean negative log-likelihood of the true class."""
    keep = predictions["label"] != input_pipeline.EXCLUDED
    report = metrics_lib.classification_report(
        predictions["label"][keep], np.argmax(predictions["logits"][keep], -1),
        num_classes)
    if posterior_logits is not None:
        report["nll"] = metrics_lib.negative_log_likelihood(
            predictions["label"][keep], np.asarray(posterior_logits)[keep])
    return report


class ResultTable:
    """A CSV of result rows keyed by (step, key column), rewritten atomically."""

    def __init__(self, path: str, key: str):
        self.path, self.key = path, key
        self.rows = {}
        if os.path.exists(path):
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    row = {k: _number(v) for k, v in row.items()}
                    row["step"] = int(row["step"])  # written back as it was
                    self.rows[(row["step"], row[key])] = row

    def steps(self) -> list[int]:
        return sorted({step for step, _ in self.rows})

    def put(self, step: int, name: str, values: dict):
        self.rows[(step, name)] = {"step": step, self.key: name, **values}

    def select(self, name: str) -> list[dict]:
        return [row for (step, key), row in sorted(self.rows.items()) if key == name]

    def save(self):
        columns = []
        for row in self.rows.values():
            columns += [c for c in row if c not in columns]
        with files.atomic_write(self.path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for _, row in sorted(self.rows.items()):
                writer.writerow(row)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _metric_row(config, outputs: dict, classes) -> dict:
    """One split's row of metrics.csv, from its predictions."""
    report = classification(outputs, len(classes), _posterior(config, outputs))
    row = {k: report[k] for k in ("uar", "war", "macro_f1", "nll", "count")}
    row.update({f"recall_{c}": r for c, r in zip(classes, report["per_class_recall"])})
    return row


def put_metric_rows(table: "ResultTable", step: int, config, predictions: dict,
                    classes) -> None:
    """The rows of one checkpoint: metrics per split, and on the target row
    the label-free selection scores (emodna_jax/selection.py), which read
    every target row but no target label."""
    for split, outputs in predictions.items():
        table.put(step, split, _metric_row(config, outputs, classes))
    target, source = predictions["target"], predictions["source_val"]
    table.rows[(step, "target")].update(selection.scores(
        _posterior(config, target), target["e"], _posterior(config, source),
        source["e"], source["label"]))


def evaluated_corpus(config) -> str:
    """What the "target" rows hold: the target corpus, or, in a single-corpus
    run, the held-out speakers of the source's fold."""
    if config.data.protocol == "single_corpus":
        return f"{config.data.source} fold {config.data.fold} (held-out speakers)"
    return config.data.target


# Rules every evaluation reports beside the one that selects (summary.json's
# "selections"): source validation, and each label-free target score.
REPORTED_RULES = ("source_val_uar",) + tuple(f"target_{k}" for k in selection.RULES)


def select_step(table: ResultTable, rule: str) -> dict:
    """The step a rule picks, plus the last step and the target oracle.

    ``rule``: 'last'; '<split>_<metric>' of source validation such as
    'source_val_uar' (higher is better); or 'target_<score>' of a label-free
    score of emodna_jax/selection.py (``selection.RULES`` says which way is
    better), which reads the target but never its labels.  Ties go to the
    lower negative log-likelihood on the same split, then to the later
    step: a 40-utterance validation split has few distinct UARs, and the
    likelihood is the finer, proper score of the same predictions.  Picking
    by a target metric that reads labels is refused: target labels must not
    choose the model, so that figure is reported only as an oracle.
    """
    steps = table.steps()
    if rule == "last":
        chosen = steps[-1]
    else:
        split, metric = rule.rsplit("_", 1)
        label_free = split == "target" and metric in selection.RULES
        if split not in SPLITS or (split == "target" and not label_free):
            raise ValueError(
                f"config.select_by={rule!r}: use 'last', a source-validation "
                "metric such as 'source_val_uar', or a label-free target score: "
                + ", ".join(f"'target_{k}'" for k in selection.RULES))
        rows = table.select(split)
        sign = 1.0 if not label_free or selection.RULES[metric] else -1.0
        if any(not isinstance(r.get(metric), float) for r in rows):
            raise ValueError(f"config.select_by={rule!r}: metrics.csv has no "
                             f"{metric!r} for every step (evaluated by an older "
                             "version: rescore it)")
        # A table begun by an older version has rows without nll (blank in
        # the csv): then ties go to the later step alone.  A target row's
        # nll reads its labels, so it never breaks a label-free tie.
        by_nll = not label_free and all(isinstance(r.get("nll"), float) for r in rows)
        # Equal scores must tie exactly: a UAR is a mean of recalls, and
        # (1 + .8 + .9 + 1) / 4 and (1 + .9 + .9 + .9) / 4 differ in the last bit.
        chosen = max(rows, key=lambda r: (round(sign * r[metric], 9),
                                          -r["nll"] if by_nll else 0.0,
                                          r["step"]))["step"]
    target_rows = table.select("target")
    oracle = max(target_rows, key=lambda r: (r["uar"], r["step"]))
    return {"rule": rule, "selected_step": int(chosen), "last_step": steps[-1],
            "oracle_step": int(oracle["step"])}


# The config entries the numbers in WORKDIR/eval depend on, besides the
# checkpoints themselves: what shapes the state, which data is evaluated and
# how it is read.  Their hash labels summary.json and report.md.
EVALUATED_ENTRIES = ("data.source", "data.target", "data.protocol", "data.fold",
                     "data.source_split", "data.source_eval_split",
                     "data.target_split", "data.normalization",
                     "data.utterance_stats", "data.shared_bands", "data.std_floor",
                     "data.eval_num_frames", "loss.am_scale")


def evaluation_label(config) -> dict:
    """The task and config hash that an evaluation's results belong to,
    with the entries hashed (so that a mismatch can name them)."""
    from emodna_jax import train  # train imports this module
    entries = train.config_entries(json.loads(config.to_json()),
                                   train.STATE_SHAPING + EVALUATED_ENTRIES)
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    return {"task": f"{config.data.source} -> {evaluated_corpus(config)}",
            "config_hash": digest[:12], "config_entries": entries}


def _label_mismatch(stored: dict, ours: dict) -> str:
    """What differs between a stored summary's label and this config's,
    '' when nothing does.  A summary written before labels existed has its
    task in 'source' and 'target' and nothing else to compare."""
    task = stored.get("task", f"{stored.get('source')} -> {stored.get('target')}")
    if task != ours["task"]:
        return f"the task {task}, not {ours['task']}"
    if "config_entries" not in stored:
        return ""
    old, new = stored["config_entries"], ours["config_entries"]
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    return (f"config {stored['config_hash']}, not {ours['config_hash']} "
            f"({'; '.join(changed)})" if changed else "")


def refuse_other_label(out_dir: str, config):
    """ValueError when ``out_dir`` holds results of another task or config:
    adding this config's rows to them would write numbers under a label
    they do not belong to (and rewrite the report's title over the old
    numbers).  Nothing is written."""
    path = os.path.join(out_dir, "summary.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        mismatch = _label_mismatch(json.load(f), evaluation_label(config))
    if mismatch:
        raise ValueError(f"{out_dir} holds the evaluation of {mismatch}: evaluate "
                         "with that run's config, or move that folder away")


def refuse_other_state_shape(checkpointer, steps, config, workdir: str):
    """ValueError naming the entries when a checkpoint of ``steps`` was
    trained with another state shape than ``config``'s (the check training
    makes before resuming), before anything is read or written: such a
    checkpoint cannot be restored into this config's state, and is not
    unreadable."""
    from emodna_jax import train  # train imports this module
    current = json.loads(config.to_json())
    for step in steps:
        saved = checkpointer.saved_config(step)
        if saved is not None:
            train.refuse_state_change(saved, current, step=step, workdir=workdir,
                                      remedy="evaluate it with the config it was "
                                             "trained with")


def evaluation_setup(config, *, validated: bool = False) -> tuple:
    """``(experiment, evaluator)``: the opened corpora, the model and its
    compiled eval step, built once and reused by every poll of ``watch``."""
    built = experiment.build(config, validated=validated)
    return built, Evaluator(built.model, built.parallel, config)


def evaluate_checkpoints(config, workdir: str, *, force: bool = False,
                         progress: bool = True, setup: tuple | None = None) -> dict:
    """Evaluates every checkpoint of ``workdir`` not yet evaluated, with
    ``setup`` (``evaluation_setup(config)``, built here when None).

    Returns the summary also written to ``WORKDIR/eval/summary.json``.
    """
    config_validation.validate_config(config)
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(
            f"no checkpoints in {checkpointing.checkpoint_dir(workdir)}")
    out_dir = os.path.join(workdir, EVAL_DIR)
    metrics_table = ResultTable(os.path.join(out_dir, "metrics.csv"), "split")
    todo = [s for s in steps if force or s not in metrics_table.steps()]
    refuse_other_state_shape(checkpointer, todo, config, workdir)
    refuse_other_label(out_dir, config)
    built, evaluator = (setup if setup is not None
                        else evaluation_setup(config, validated=True))
    source, target, parallel = built.source, built.target, built.parallel
    context = evaluators_lib.Context(config, out_dir, built.classes, built.objective,
                                     target, {"metrics.csv": metrics_table},
                                     checkpointer=checkpointer)
    evaluators = evaluators_lib.build(
        tuple(config.get("evals", evaluators_lib.DEFAULT)), context)
    where = {"target": (target, target.eval_split, True),
             "source_val": (source, source.eval_split, False),
             "source_train": (source, source.train_split, False)}
    needed = evaluators_lib.splits_needed(evaluators)
    os.makedirs(out_dir, exist_ok=True)
    abstract = built.abstract_state()
    unreadable = {}
    for step in tqdm.tqdm(todo, desc="evaluating checkpoints", unit="ckpt",
                          disable=not progress):
        try:
            state = checkpointer.restore_state(step, abstract)
        except Exception as error:  # orbax/TensorStore raise many kinds
            unreadable[step] = checkpointing.describe_failure(error)
            tqdm.tqdm.write(f"warning: checkpoint {step} is unreadable "   # under the bar
                            f"({unreadable[step]}); skipped")
            continue
        if parallel.mode == "pmap":
            state = parallel.put_replicated(jax.device_get(state))
        predictions = {
            split: evaluator.predict(state, where[split][0], where[split][1],
                                     include_excluded=where[split][2])
            for split in needed}
        for each in evaluators:
            each.run(step, predictions, state)
        if distributed.is_primary():        # every process computes, one writes
            context.save()
    checkpointer.close()

    if not metrics_table.rows:
        steps_by_reason = {}
        for step, reason in unreadable.items():
            steps_by_reason.setdefault(reason, []).append(str(step))
        raise ValueError(f"no readable checkpoint in "
                         f"{checkpointing.checkpoint_dir(workdir)}: "
                         + "; ".join(f"{', '.join(steps)}: {reason}"
                                     for reason, steps in steps_by_reason.items()))
    summary = summarize(metrics_table, context.table("ood.csv", "score"), config,
                        context.table("pseudo_labels.csv", "split"))
    summary["unreadable_checkpoints"] = {str(k): v for k, v in unreadable.items()}
    if not distributed.is_primary():
        return summary
    # Read back from the stored predictions, which only the primary writes.
    summary["checkpoint_ensemble"] = ensemble_figures(config, out_dir, metrics_table)
    with files.atomic_write(os.path.join(out_dir, "summary.json")) as f:
        json.dump(summary, f, indent=2)
    from emodna_jax import report  # matplotlib: only when a report is written
    report.write_report(out_dir, metrics_table, context.table("ood.csv", "score"),
                        summary, config,
                        target_corpus=target.corpus, source_corpus=source.corpus)
    return summary


def _posterior(config, outputs: dict) -> np.ndarray:
    """Logits whose softmax is the model's class posterior."""
    return np.asarray(losses.config_posterior_logits(config, outputs["logits"]))


def ensemble_figures(config, out_dir: str, metrics_table: "ResultTable") -> dict | None:
    """The target figures of the mean posterior over every evaluated
    checkpoint (emodna_jax/checkpoint_ensemble.py), or None without the
    stored predictions of each."""
    return checkpoint_ensemble.target_figures(
        out_dir, metrics_table.steps(), tuple(config.data.classes),
        lambda outputs: _posterior(config, outputs), config.ood_score)


def rescore(config, workdir: str) -> dict:
    """Recomputes the metric rows and the summary of an evaluated workdir from
    its stored predictions alone (no checkpoint, no data): how a workdir
    evaluated by an older version takes up a new metric or selection rule."""
    out_dir = os.path.join(workdir, EVAL_DIR)
    refuse_other_label(out_dir, config)
    classes = tuple(config.data.classes)
    metrics_table = ResultTable(os.path.join(out_dir, "metrics.csv"), "split")
    for step in metrics_table.steps():
        path = embeddings.path(out_dir, step)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing; rescoring needs the "
                                    "predictions of every evaluated step")
        stored = embeddings.load(out_dir, step)
        predictions = {split: stored.get(split, {}) for split in SPLITS}
        put_metric_rows(metrics_table, step, config, predictions, classes)
    metrics_table.save()
    summary = summarize(
        metrics_table, ResultTable(os.path.join(out_dir, "ood.csv"), "score"),
        config, ResultTable(os.path.join(out_dir, "pseudo_labels.csv"), "split"))
    summary["checkpoint_ensemble"] = ensemble_figures(config, out_dir, metrics_table)
    with files.atomic_write(os.path.join(out_dir, "summary.json")) as f:
        json.dump(summary, f, indent=2)
    return summary


def summarize(metrics_table: ResultTable, ood_table: ResultTable, config,
              pseudo_table: ResultTable | None = None) -> dict:
    """Last-step and selected-step figures, with the rule that selected."""
    choice = select_step(metrics_table, config.select_by)

    def figures(step):
        out = {split: metrics_table.rows[(step, split)] for split in SPLITS
               if (step, split) in metrics_table.rows}
        if pseudo_table is not None and (step, "target") in pseudo_table.rows:
            out["pseudo_labels"] = pseudo_table.rows[(step, "target")]
        out["ood"] = {name: row for (at, name), row in ood_table.rows.items()
                      if at == step}
        return out

    selections = {}
    for rule in REPORTED_RULES:
        try:
            step = select_step(metrics_table, rule)["selected_step"]
        except ValueError:      # a table from before the score: not reported
            continue
        selections[rule] = {"step": step,
                            "target_uar": metrics_table.rows[(step, "target")]["uar"]}
    return {
        **evaluation_label(config),
        "selection_rule": choice["rule"],
        "selections": selections,
        "classes": list(config.data.classes),
        "source": config.data.source, "target": evaluated_corpus(config),
        "ood_score": config.ood_score,
        "last": {"step": choice["last_step"], **figures(choice["last_step"])},
        "selected": {"step": choice["selected_step"],
                     **figures(choice["selected_step"])},
        "oracle_best_on_target": {
            "step": choice["oracle_step"],
            "target": metrics_table.rows[(choice["oracle_step"], "target")],
            "note": "chosen with target labels: an upper bound, not a result"},
    }


def watch(config, workdir: str, *, poll_seconds: float = 10.0,
          timeout_seconds: float | None = None) -> dict:
    """Evaluates checkpoints as they appear; returns once no more will come
    (``training_stopped``), or after ``timeout_seconds``.  While it waits it
    says what for."""
    start = time.time()
    summary = setup = None
    said = False
    while True:
        checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
        steps = checkpointer.all_steps()
        checkpointer.close()
        if steps:
            setup = setup or evaluation_setup(config)  # compiled once
            summary = evaluate_checkpoints(config, workdir, progress=False,
                                           setup=setup)
            stopped, waiting = training_stopped(workdir, steps[-1])
            print(f"evaluated up to step {steps[-1]}; {stopped or waiting}", flush=True)
            if stopped:
                return summary
        elif not said:
            said = True
            print("waiting for the first checkpoint in "
                  f"{checkpointing.checkpoint_dir(workdir)}", flush=True)
        if timeout_seconds is not None and time.time() - start > timeout_seconds:
            return summary
        time.sleep(poll_seconds)


def training_stopped(workdir: str, evaluated: int) -> tuple[str, str]:
    """``(why no checkpoint will follow step `evaluated`, '')``, or ``('',
    what watch waits for)``.  The run is done when its newest checkpoint
    is its final step, by the ``steps`` saved with it (the watcher's own
    config may say another number), or when nothing holds the workdir's
    lock: a run that stopped (killed, preempted, failed) adds nothing until
    it is restarted.  The lock is read before the checkpoints, so that a
    run that saved its last one and ended meanwhile is not cut short."""
    held = workdir_lock.is_held(workdir)
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    try:
        newest = checkpointer.all_steps()[-1]
        saved = checkpointer.saved_config(newest) or {}
    finally:
        checkpointer.close()
    if newest > evaluated:
        return "", f"checkpoint {newest} is next"
    total = saved.get("steps")
    if total is not None and newest >= total:
        return f"training finished (its final step {total}); stopping", ""
    of = f" of {total}" if total is not None else ""
    if not held:
        return (f"training is not running in {workdir} (no run holds it) and "
                f"stopped at step {newest}{of}; stopping"), ""
    return "", (f"waiting for training to reach step {total}" if total is not None
                else "waiting for training to save its next checkpoint")
