"""Orbax checkpoints of a run: train state, input-iterator state and config.

Saving is asynchronous (training continues while a checkpoint is written) and
atomic (orbax finalises a step directory only once it is complete).  Which
steps stay on disk is an orbax ``preservation_policy``: the latest N, plus
every K-th step when asked, for later batch evaluation.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from emodna_jax import distributed


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


class DiskFull(OSError):
    """A checkpoint could not be written for lack of space: the run stops at
    once (the finished checkpoints are intact) instead of training on
    without a way to save."""

    def __init__(self, step: int, last_good: int | None):
        before = ("no earlier checkpoint" if last_good is None
                  else f"last good checkpoint {last_good}")
        super().__init__(errno.ENOSPC, f"No space left on device writing checkpoint "
                         f"{step}; {before}")
        self.step, self.last_good = step, last_good

    def __str__(self):
        return self.strerror


def _is_disk_full(error: BaseException) -> bool:
    return ((isinstance(error, OSError) and error.errno == errno.ENOSPC)
            or "No space left on device" in str(error))


# Fields an older train state stored that live elsewhere now: the cluster
# labels moved to the target bank (emodna_jax/target_bank.py), so a run
# resumed from such a checkpoint has none until its next clustering.
RETIRED = {("adapt", "cluster_labels")}


def _path_key(path) -> tuple[str, ...]:
    """A pytree path as names (``('params', 'backbone', 'input', 'kernel')``),
    alike for a dataclass state and for the dicts of stored metadata."""
    return tuple(str(getattr(p, "name", getattr(p, "key", getattr(p, "idx", p))))
                 for p in path)


def _only_new_none_fields(abstract_state, stored: dict) -> bool:
    """Whether ``abstract_state`` and the ``stored`` tree (nested dicts of a
    checkpoint's metadata) differ only by None-valued fields the checkpoint
    lacks and by ``RETIRED`` fields it holds."""
    def keys(tree, prefix=()):
        if isinstance(tree, (list, tuple)):
            tree = dict(enumerate(tree))
        if isinstance(tree, dict):
            return {k for name, sub in tree.items() for k in keys(sub, prefix + (str(name),))}
        return set() if tree is None else {prefix}
    wanted, nones = set(), set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(
            abstract_state, is_leaf=lambda x: x is None)[0]:
        (nones if leaf is None else wanted).add(_path_key(path))
    on_disk = keys(stored)
    retired = on_disk & RETIRED
    return (wanted == on_disk - nones - retired
            and bool(nones - on_disk or retired))


def _leaves_by_key(tree) -> dict:
    """``{('params', 'backbone', ...): leaf}`` of a state or of a stored tree
    (nested dicts and lists of a checkpoint's metadata)."""
    return {_path_key(path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class ShapeMismatch(ValueError):
    """A checkpoint whose arrays do not fit the state the config builds."""


def shape_mismatch(abstract_state, stored) -> str | None:
    """The first array whose stored shape differs from the one the config
    builds, said in one line, or None.  orbax only says that "(2, 1, 85,
    32)" does not fit "(2, 1, 84, 32)"; this names the array and the usual
    cause, a model or input of another width."""
    stored = _leaves_by_key(stored)
    for key, leaf in _leaves_by_key(abstract_state).items():
        there = getattr(stored.get(key), "shape", None)
        if there is not None and tuple(there) != tuple(leaf.shape):
            return (f"{'/'.join(key)} is stored as {list(there)} and this config builds "
                    f"{list(leaf.shape)}: the checkpoint was written for another model "
                    "or input width (features, bins or the 18 utterance statistics, "
                    "17 before the energy velocity); train it again with this version")
    return None


BANK = "target_bank"   # the optional fourth item


class Checkpointer:
    """A CheckpointManager with the items a run needs to resume exactly: the
    train state, the input position, the config, and with cluster labels the
    target bank."""

    def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0,
                 read_only: bool = False):
        policy = policies.LatestN(n=keep)
        if keep_every:
            policy = policies.AnyPreservationPolicy(
                [policy, policies.EveryNSteps(interval_steps=keep_every)])
        self.manager = ocp.CheckpointManager(
            checkpoint_dir(workdir),
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policy,
                enable_async_checkpointing=not read_only,
                read_only=read_only,
                create=not read_only))
        self._in_flight = None  # the step of the last background save

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, iterator_state: dict, config: dict,
             bank: dict | None = None):
        """Starts saving ``step`` in the background (the loop decides when),
        with the target bank's arrays when ``bank`` (emodna_jax/target_bank.py).

        Raises DiskFull before writing when the disk cannot hold the state,
        and when the previous background save ran out of space (orbax's
        save waits for that one anyway; waiting here names it)."""
        self._wait_for_background_save()
        free = free_bytes(str(self.manager.directory))
        needed = sum(np.asarray(x).nbytes
                     for x in jax.tree.leaves((state, bank))) + (1 << 20)
        if free < needed:
            raise DiskFull(step, self._last_finished(below=step))
        try:
            self.manager.save(
                step, force=True,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data_iter=ocp.args.JsonSave(iterator_state),
                    config=ocp.args.JsonSave(config),
                    **({} if bank is None else {BANK: ocp.args.StandardSave(bank)})))
        except Exception as error:
            if _is_disk_full(error):
                raise DiskFull(step, self._last_finished(below=step)) from error
            raise
        self._in_flight = step

    def _last_finished(self, below: int) -> int | None:
        """The newest step directory orbax finalised (renamed from its
        temporary name), below ``below``."""
        steps = [int(name) for name in os.listdir(self.manager.directory)
                 if name.isdigit() and int(name) < below]
        return max(steps, default=None)

    def _wait_for_background_save(self):
        """Raises a failed background save as DiskFull naming its step
        (orbax reports it only at the next save or wait)."""
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            step = self._in_flight
            if step is not None and _is_disk_full(error):
                raise DiskFull(step, self._last_finished(below=step)) from error
            raise

    def restore(self, step: int, abstract_state):
        """Restores ``(state, iterator_state)``.

        ``abstract_state`` (from ``jax.eval_shape``, with shardings) fixes the
        tree, dtypes and placement, so a checkpoint written on 8 devices
        restores onto 1 and the reverse.
        """
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data_iter=ocp.args.JsonRestore()))
        except ValueError as error:
            state = self._restore_without_new_fields(step, abstract_state, error)
            return state, self.restore_iterator(step)
        return restored.state, restored.data_iter

    def restore_state(self, step: int, abstract_state):
        """Only the train state (for evaluation)."""
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))
        except ValueError as error:
            return self._restore_without_new_fields(step, abstract_state, error)
        return restored.state

    def restore_iterator(self, step: int) -> dict:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(data_iter=ocp.args.JsonRestore()))
        return restored.data_iter

    def restore_bank(self, step: int, empty: dict) -> dict | None:
        """The target bank's arrays saved with ``step``, shaped as ``empty``
        (``TargetBank.arrays()`` of a new bank), or None when the step has
        none (saved without cluster labels)."""
        if not os.path.isdir(os.path.join(str(self.manager.directory), str(step), BANK)):
            return None
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{BANK: ocp.args.StandardRestore(empty)}))
        return {key: np.asarray(value) for key, value in restored[BANK].items()}

    def _restore_without_new_fields(self, step: int, abstract_state, error):
        """A checkpoint written before an optional field of the state existed
        (one that is None when unused, such as ``AdaptState.cluster_agrees``)
        lacks its key, and one written before a field retired holds it;
        orbax refuses both trees.  When they differ by exactly such fields,
        the rest is restored as written; any other mismatch re-raises
        ``error``."""
        reader = ocp.CheckpointManager(
            self.manager.directory,
            item_handlers={"state": ocp.PyTreeCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        try:
            stored = reader.item_metadata(step)["state"]
            stored = getattr(stored, "tree", stored)
            mismatch = None if stored is None else shape_mismatch(abstract_state, stored)
            if mismatch:
                raise ShapeMismatch(mismatch) from error
            if stored is None or not _only_new_none_fields(abstract_state, stored):
                raise error
            return reader.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                abstract_state,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
                partial_restore=True))).state
        finally:
            reader.close()

    def restore_config(self, step: int) -> dict:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return restored.config

    def saved_config(self, step: int) -> dict | None:
        """The config saved with ``step``, or None when it does not read
        back (restoring the state then fails too, and says why)."""
        try:
            return self.restore_config(step)
        except Exception:  # orbax raises many kinds for a damaged item
            return None

    def unreadable_part(self, step: int, abstract_state, bank: dict | None = None) -> str:
        """The directory of the first item of ``step`` that fails to read
        back (``.../70/state``), to name it in a warning; with ``bank`` (an
        empty bank's arrays) the target bank is tried too."""
        items = {"state": ocp.args.StandardRestore(abstract_state),
                 "data_iter": ocp.args.JsonRestore()}
        if bank is not None:
            items[BANK] = ocp.args.StandardRestore(bank)
        for name, args in items.items():
            try:
                self.manager.restore(step, args=ocp.args.Composite(**{name: args}))
            except Exception:  # the culprit
                return os.path.join(str(self.manager.directory), str(step), name)
        return os.path.join(str(self.manager.directory), str(step))

    def set_aside(self, step: int) -> str:
        """Renames an unreadable step's directory out of orbax's sight (kept
        for inspection, never deleted), so it cannot shadow later saves;
        returns the new path.  With several processes, every process names
        the same path and process 0 alone renames."""
        directory = os.path.join(str(self.manager.directory), str(step))
        aside = f"{directory}.unreadable"
        suffix = 1
        while os.path.exists(aside):
            suffix += 1
            aside = f"{directory}.unreadable{suffix}"
        distributed.barrier(f"set_aside_{step}_named")
        if distributed.is_primary():
            os.rename(directory, aside)
        distributed.barrier(f"set_aside_{step}_renamed")
        self.manager.reload()
        return aside

    def wait(self):
        self._wait_for_background_save()

    def close(self):
        self.manager.close()


def describe_failure(error: BaseException) -> str:
    """One line about why a checkpoint could not be read.

    orbax wraps TensorStore's error in one whose message is a repr of the
    whole TensorStore spec (a bound method's name and hundreds of lines);
    the innermost cause says what is wrong ('... is not valid for value of
    size 300000'), so that one is described, without TensorStore's
    bracketed source locations.  A :class:`ShapeMismatch` on the way says
    it better than the cause it wraps."""
    while (error.__cause__ or error.__context__) is not None:
        if isinstance(error, ShapeMismatch):
            break
        error = error.__cause__ or error.__context__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"\s*\[(source locations|tensorstore_spec)=.*$", "", text)
    return text if len(text) <= 300 else text[:297] + "..."


def _from_orbax(unraisable) -> bool:
    """Whether an unraisable exception is one of orbax's read coroutines
    dying with the read's failure (already raised to the caller)."""
    code = getattr(unraisable.object, "cr_code", None)
    return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _late_loop_callback(error: BaseException | None) -> bool:
    """Whether ``error`` is a read that finished after its event loop was
    closed: TensorStore's thread hands the result to
    ``loop.call_soon_threadsafe`` of the restore that already failed."""
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
        return False
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


def quiet_failed_reads():
    """Stops a failed restore from printing thousands of lines.

    When one array of a checkpoint fails to read, orbax's other read
    coroutines are closed with the same error; Python reports each as
    'Exception ignored in: <coroutine ...>' with a traceback and the
    TensorStore spec (10,000 lines for one truncated file).  Reads that
    finish after the failed restore closed its event loop raise 'Event
    loop is closed' in TensorStore's threads, which print them as bare
    tracebacks.  The failure itself still reaches the caller as an
    exception, so those reports are dropped; any other exception is
    reported as before."""
    unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

    def unraisable(report):
        if not (_from_orbax(report) or _late_loop_callback(report.exc_value)):
            unraisable_hook(report)

    def uncaught(kind, error, tb):
        if not _late_loop_callback(error):
            except_hook(kind, error, tb)

    sys.unraisablehook, sys.excepthook = unraisable, uncaught


def with_sharding(abstract_tree, sharding):
    """Attaches ``sharding`` to every leaf of an ``eval_shape`` tree."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        abstract_tree)
