"""The train loop: ``train_and_evaluate(config, workdir)``.

Restores the latest checkpoint of ``workdir`` if there is one (state, input
position, thresholds and prototypes), so a preempted run continues exactly
where it stopped.  A preemption saves a checkpoint at the current step and
returns cleanly; every host must stop at the same step, so the loop asks
orbax (the JAX coordination service's preemption sync point, where a
multi-host run has one) and a SIGTERM flag agreed over every process (which
also covers one process, where orbax's sync point does not exist).
"""

from __future__ import annotations

import json
import signal
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import scipy.special

from emodna_jax import checkpointing
from emodna_jax import cluster_labels
from emodna_jax import distributed
from emodna_jax import evaluate
from emodna_jax import experiment
from emodna_jax import input_pipeline
from emodna_jax import metric_writer
from emodna_jax import step as step_lib
from emodna_jax import target_bank
from emodna_jax import workdir_lock


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the step and loss."""


class _Preemption:
    """Turns SIGTERM into a flag the loop polls between steps."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread: no handler, no preemption
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, metrics: dict):
    if metrics.get("finite", 1.0) >= 1.0:
        return
    bad = sorted(k for k, v in metrics.items()
                 if k.startswith("loss") and not np.isfinite(v))
    named = ", ".join(bad) if bad else "the gradients"
    raise NonFiniteLossError(
        f"non-finite value at step {step} in {named} "
        f"({', '.join(f'{k}={metrics[k]}' for k in bad)}); training stopped, "
        "the last good checkpoint is kept")


def _report_agreement(step: int, classes, counts: np.ndarray, agrees: np.ndarray):
    """One line per class whose cluster contradicts the classifier: the
    user's warning that adaptation cannot name it (cluster_labels.agreement)."""
    for k in np.flatnonzero(~np.asarray(agrees)):
        share = counts[k] / counts[k].sum()
        others = share.copy()
        others[k] = 0
        winner = int(np.argmax(others))
        print(f"warning: step {step}: the classifier calls the target's {classes[k]} "
              f"cluster {classes[winner]} (mean posterior {share[winner]:.2f}, "
              f"{classes[k]} {share[k]:.2f}; {round(counts[k].sum())} utterances): "
              f"{classes[k]} is not adapted (no pseudo-labels; diversity pools it "
              f"with {classes[winner]})", flush=True)


# Config entries that shape the saved state (parameter shapes, the inputs'
# width, the classes): resuming with another value cannot work.
STATE_SHAPING = ("model.", "data.classes", "data.feature", "data.feature_dim",
                 "data.n_mels", "data.n_mfcc",
                 "data.sample_rate", "msac.speaker", "msac.gender", "msac.corpus",
                 "loss.w_dann", "loss.cluster_labels", "loss.cluster_agreement")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _named(key: str, names) -> bool:
    """Whether ``key`` is one of ``names`` (a name ending in '.' is a block)."""
    return any(key.startswith(p) if p.endswith(".") else key == p for p in names)


def _shapes_state(key: str) -> bool:
    return _named(key, STATE_SHAPING)


def config_entries(config_json: dict, names) -> dict:
    """The flattened entries of a config (as JSON) that ``names`` name."""
    return {k: v for k, v in sorted(_flat(config_json).items()) if _named(k, names)}


def _described(changes: dict) -> str:
    return "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


def refuse_state_change(saved: dict, current: dict, *, step: int, workdir: str,
                        remedy: str) -> dict:
    """Entries that differ from the config saved with checkpoint ``step``,
    key -> (saved, current); ValueError naming them, and ``remedy``, when
    any shapes the state (STATE_SHAPING): that checkpoint cannot be read
    into this config's state.  Training, evaluation and prediction all ask
    this before reading a checkpoint.  An entry absent from the saved
    config (added to the project after it) counts only as a switch turned
    on now: such switches default to off, so the saved run had it off."""
    saved, current = _flat(saved), _flat(current)
    changes = {k: (saved[k], current[k]) for k in sorted(set(saved) & set(current))
               if saved[k] != current[k]}
    changes.update({k: (None, True) for k in sorted(set(current) - set(saved))
                    if current[k] is True})
    shaping = {k: v for k, v in changes.items() if _shapes_state(k)}
    if shaping:
        raise ValueError(f"{workdir}: checkpoint {step} was trained with another "
                         f"state shape ({_described(shaping)}); {remedy}")
    return changes


def config_changes(saved: dict, current: dict, *, step: int, workdir: str) -> dict:
    """Entries that differ from the config saved with checkpoint ``step``:
    ValueError naming them when any shapes the state (refuse_state_change),
    else a printed warning; returns key -> (saved, current)."""
    changes = refuse_state_change(saved, current, step=step, workdir=workdir,
                                  remedy=_NEW_WORKDIR)
    _warn_changes(step, changes)
    return changes


_NEW_WORKDIR = "use a new workdir"


def _warn_changes(step: int, changes: dict):
    if changes:
        print(f"warning: resuming step {step} with a changed config: "
              f"{_described(changes)}", flush=True)


def _restore_newest_readable(checkpointer, abstract, config_json: dict, workdir: str,
                             bank: dict | None = None):
    """``(step, state, iterator_state, config changes, bank arrays)`` of the
    newest checkpoint that reads back, or None; with ``bank`` (an empty
    bank's arrays) its target bank too, None when it saved none.

    A config that changes the state's shape is refused before anything is
    read.  An unreadable checkpoint (a truncated file, a half-copied
    directory) is reported in one line and set aside, not deleted: the run
    goes on from the one before instead of failing for good."""
    while (step := checkpointer.latest_step()) is not None:
        saved = checkpointer.saved_config(step)  # None: the restore sets it aside
        changes = ({} if saved is None else refuse_state_change(
            saved, config_json, step=step, workdir=workdir, remedy=_NEW_WORKDIR))
        try:
            state, iterator_state = checkpointer.restore(step, abstract)
            stored_bank = None if bank is None else checkpointer.restore_bank(step, bank)
        except Exception as error:  # orbax/TensorStore raise many kinds
            part = checkpointer.unreadable_part(step, abstract, bank)
            aside = checkpointer.set_aside(step)
            print(f"warning: checkpoint {step} is unreadable: {part} "
                  f"({checkpointing.describe_failure(error)}); moved to {aside}",
                  flush=True)
            continue
        _warn_changes(step, changes)  # of the checkpoint resumed, not one set aside
        return step, state, iterator_state, changes, stored_bank
    return None


def _iterator_states(own_state):
    """What a checkpoint stores of the input position: this process's
    iterator state, or with several processes every process's (each reads
    its own share of the data, and orbax writes JSON from process 0 only)."""
    if jax.process_count() == 1:
        return own_state
    return {"per_process": distributed.gather_json(own_state)}


def _own_iterator_state(stored, workdir: str):
    """This process's input position.  Element k of every process's stream is
    its share of global batch k (input_pipeline._stream), so the processes of
    a run store the same position and a checkpoint resumes on any number of
    processes; positions that disagree (a checkpoint of another pipeline)
    are refused."""
    states = stored["per_process"] if "per_process" in stored else [stored]
    if len(states) == jax.process_count():
        return states[jax.process_index()]
    if any(state != states[0] for state in states):
        raise ValueError(f"{workdir}: the checkpoint's {len(states)} processes stored "
                         f"different input positions; resume it with {len(states)} "
                         f"processes, not {jax.process_count()}")
    return states[0]


def reads_ahead() -> bool:
    """Whether the loop reads the next batch while the devices run a step.

    On accelerators the host's reading overlaps the device's step.  On CPU
    they share the cores: a reader thread that deschedules one of XLA's
    threads holds up every kernel split across them.  On two cores the
    default step took 1.20x as long read ahead and 1.05x read after it
    (benchmarks/train_step.py, against the step on prefetched batches), so
    on CPU the loop reads between steps.
    """
    return jax.default_backend() != "cpu"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) in ``workdir``; returns the final target metrics.

    Holds the workdir for the whole run: a second run there is refused
    (``workdir_lock.WorkdirInUse``)."""
    built = experiment.build(config)  # bad config, missing corpus: nothing written
    with workdir_lock.exclusive(workdir, process=jax.process_index()):
        return _train_and_evaluate(built, workdir)


def _say_where(built: experiment.Experiment, workdir: str):
    """Where a run reads and writes, once at its start: a first run
    otherwise leaves the shards, the logs and the report to be guessed."""
    for role, task in (("source", built.source), ("target", built.target)):
        print(f"{role}: {task.corpus.name} ({task.corpus.path})", flush=True)
    print(f"workdir: {workdir} (checkpoints/, metrics.jsonl with every logged "
          "value, tensorboard/)", flush=True)


def _train_and_evaluate(built: experiment.Experiment, workdir: str) -> dict:
    config, source, target = built.config, built.source, built.target
    parallel, model = built.parallel, built.model
    _say_where(built, workdir)

    checkpointer = checkpointing.Checkpointer(
        workdir, keep=config.keep_checkpoints, keep_every=config.keep_every)
    train_data = input_pipeline.train_dataset(
        source, target, global_batch_size=config.batch_size,
        num_frames=config.data.num_frames, cache_mib=config.data.cache_mib,
        seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count())
    iterator = iter(train_data)

    host_state = built.init_state()
    abstract = built.abstract_state()
    config_json = json.loads(config.to_json())
    bank = (target_bank.TargetBank(target.num_train, len(built.classes))
            if config.loss.cluster_labels else None)
    restored = _restore_newest_readable(checkpointer, abstract, config_json, workdir,
                                        None if bank is None else bank.arrays())
    changes = {}
    if restored is not None:
        latest, state_restored, iterator_state, changes, stored_bank = restored
        if stored_bank is not None:
            bank = target_bank.TargetBank.from_arrays(stored_bank)
        host_state = jax.device_get(state_restored)
        iterator.set_state(_own_iterator_state(iterator_state, workdir))
        print(f"resumed from step {latest} in {checkpointing.checkpoint_dir(workdir)}",
              flush=True)
    state = parallel.put_replicated(host_state)
    start_step = int(host_state.step)

    train_step = parallel.compile_train(step_lib.make_train_step(
        model, built.optimizer, built.objective, axis_name=step_lib.AXIS,
        sum_gradients=parallel.sum_gradients, augment=built.augment,
        strong_augment=built.strong_augment))
    evaluator = evaluate.Evaluator(model, parallel, config)
    if restored is not None:
        metric_writer.reconcile(workdir, start_step, finished=start_step >= config.steps)
    writer = metric_writer.MetricWriter(workdir)
    if changes:
        writer.note(start_step, "config_change",
                    {key: {"was": old, "now": new} for key, (old, new) in changes.items()})

    statistics = (target.utterance_statistics(target.train_split)
                  if bank is not None else None)

    def save(step):
        host = parallel.get_replicated(state)
        checkpointer.save(step, host, _iterator_states(position), config_json,
                          bank=None if bank is None else bank.arrays())

    def recluster(state, at: int):
        """The target's cluster labels recomputed from the bank, which the
        steps up to ``at`` filled (with ``loss.cluster_agreement``, checked
        against the classifier at the first clustering, and the contradicted
        classes' rows left unlabelled); returns the state, which only the
        first clustering's agreement check changes.  The training log's
        ``pseudo`` line gives the bank's age and the clustering's seconds."""
        started = time.perf_counter()
        labels = bank.cluster(statistics)
        if labels is not None:   # None: too few utterances drawn yet
            state = assign(state, labels, at)
        writer.write(at, dict(bank.age(at), cluster_seconds=time.perf_counter() - started),
                     prefix="pseudo", echo=False)
        return state

    def assign(state, labels, at: int):
        """``bank.labels = labels``, less the contradicted classes' rows."""
        if config.loss.cluster_agreement:
            adapt = parallel.get_replicated(state.adapt)
            if at == cluster_labels.first_step(config.steps, config.loss.adapt_start):
                drawn = labels >= 0
                counts = cluster_labels.votes(
                    labels[drawn], scipy.special.softmax(bank.logits[drawn], axis=-1))
                agrees, groups = cluster_labels.agreement(counts)
                adapt = adapt.replace(cluster_agrees=agrees, class_groups=groups)
                if distributed.is_primary():
                    _report_agreement(at, built.classes, counts, agrees)
                state = state.replace(adapt=parallel.put_replicated(adapt))
            labels = cluster_labels.without_contradicted(labels, adapt.cluster_agrees)
        bank.labels = labels
        return state

    def next_batch(done):
        """The batch of step ``done + 1`` on the devices, with its target
        rows' indices on the host; None after the last."""
        if done >= config.steps:
            return None
        host = next(iterator)
        return parallel.put_batch(host), host.get("tgt_index")

    def placed(batch):
        """The batch with each target row's cluster label, read at dispatch,
        so that a clustering after step k labels step k + 1 (the rest of the
        batch went to the devices while the step before ran)."""
        on_devices, index = batch
        if bank is None:
            return on_devices
        return dict(on_devices, **parallel.put_batch(
            {"tgt_cluster": bank.pseudo_labels(index)}))

    overlap_input = reads_ahead()
    window_start, window_steps = time.time(), 0
    step = start_step
    pending = []   # (step, metrics on the devices) not yet read by the host

    def read_pending() -> dict:
        """The host sync, at log and checkpoint steps only: every step's
        metrics since the last one, fetched in one transfer and checked in
        order, so the first non-finite step is named (its update was
        skipped on the devices, so no saved state holds it).  The target
        rows' posteriors go into the bank here."""
        if not pending:
            return {}
        fetched = parallel.get_metrics([m for _, m in pending])
        for (at, _), values in zip(pending, fetched):
            rows = [values.pop(key, None) for key in ("bank_index", "bank_logits")]
            _check_finite(at, values)
            if bank is not None:
                bank.record(at, *rows)
        pending.clear()
        return fetched[-1]
    try:
        with _Preemption() as preemption:
            batch = next_batch(step)
            while step < config.steps:
                # The input position after this step's batch: what a
                # checkpoint of this step stores, before the next is read.
                position = iterator.get_state()
                state, metrics = train_step(state, placed(batch))   # not awaited
                step += 1
                window_steps += 1
                pending.append((step, metrics))
                if not overlap_input:   # CPU: the step's threads finish first
                    jax.block_until_ready(metrics)
                batch = next_batch(step)
                if step % config.log_every == 0 or step == config.steps:
                    metrics = read_pending()
                    elapsed = time.time() - window_start
                    writer.write(step, dict(metrics, steps_per_second=window_steps / elapsed))
                    window_start, window_steps = time.time(), 0
                if config.loss.cluster_labels and cluster_labels.due(
                        step, config.steps, config.loss.adapt_start,
                        config.loss.cluster_every):
                    read_pending()   # the bank, up to this step
                    state = recluster(state, step)   # before a checkpoint of this step
                if config.eval_every and step % config.eval_every == 0:
                    writer.write(step, evaluator.scalars(state, source, target),
                                 prefix="eval")
                stop = (ocp.multihost.reached_preemption(step)
                        or distributed.any_process(preemption.requested))
                if step % config.checkpoint_every == 0 or step == config.steps or stop:
                    read_pending()   # a non-finite step since the last read stops here
                    save(step)
                if stop:
                    print(f"preempted: saved step {step}, exiting", flush=True)
                    break
    finally:
        try:
            checkpointer.wait()   # raises DiskFull if the last save ran out of space
        finally:
            checkpointer.close()
    if step < config.steps:  # preempted: the checkpoint is what matters
        writer.close()
        return {"step": step, "preempted": True}
    final = evaluator.scalars(state, source, target)
    writer.write(step, final, prefix="eval", echo=False)
    writer.close()
    return dict(final, step=step)
