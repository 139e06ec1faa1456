r"""Entry point.

  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=evaluate
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=predict --inputs=clips/
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=export --export_dir=/tmp/model
"""

import difflib
import errno
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from emodna_jax import checkpointing
from emodna_jax import distributed
from emodna_jax import runs
from emodna_jax import workdir_lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and reports.")
_MODE = flags.DEFINE_enum("mode", "train", list(runs.MODES), "What to do.")
_FORCE = flags.DEFINE_bool("force", False, "evaluate: redo evaluated steps too.")
_INPUTS = flags.DEFINE_list("inputs", [], "predict: audio files or directories.")
_CHECKPOINT = flags.DEFINE_integer(
    "checkpoint", None, "predict: checkpoint step (default: latest); export: "
    "default the one --mode=evaluate selected, else the latest.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                  "export: the folder to write (default WORKDIR/export).")
_JSON = flags.DEFINE_bool("json", False, "predict: print JSON.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Several processes (one per host): the "
    "host:port of process 0; with --num_processes and --process_id.  Without "
    "them a SLURM job or a multi-host TPU slice is detected by itself.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def use_compilation_cache() -> str:
    """Points JAX's persistent compilation cache at the user's cache folder
    (``$XDG_CACHE_HOME/emodna_jax/xla``, else ``~/.cache/emodna_jax/xla``)
    unless ``JAX_COMPILATION_CACHE_DIR`` names another, so that a second
    launch of the same config loads its compiled step instead of compiling
    it again (about 10 s on 2 CPU cores).  Returns the folder."""
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "emodna_jax", "xla")
    import jax
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    use_compilation_cache()
    verbose = logging.get_verbosity() >= logging.DEBUG  # --verbosity=1
    # orbax and TFDS chatter, and orbax's background-thread tracebacks whose
    # error reaches us as an exception anyway: we print results and one line.
    logging.set_verbosity(logging.ERROR if verbose else logging.FATAL)
    if not verbose:
        checkpointing.quiet_failed_reads()
    try:
        # Before anything touches a device.
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        if not distributed.is_primary():  # one process prints; errors still show
            sys.stdout = open(os.devnull, "w")
        return runs.run(_MODE.value, _CONFIG.value, _WORKDIR.value,
                        force=_FORCE.value, inputs=_INPUTS.value,
                        checkpoint=_CHECKPOINT.value, as_json=_JSON.value,
                        export_dir=_EXPORT_DIR.value)
    except (ValueError, FileNotFoundError, workdir_lock.WorkdirInUse,
            checkpointing.DiskFull) as error:
        # Bad config values and missing data: one line (the traceback with
        # --verbosity=1).  Other exceptions are bugs and keep theirs.
        if verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if verbose or error.errno not in _NOT_WRITABLE:
            raise
        print(f"error: {_not_writable(error, _MODE.value)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the last finished checkpoint is intact
        print("interrupted", file=sys.stderr)
        return 130


# A workdir on a read-only mount, or one this user may not write: the
# user's set-up, not a bug (EPERM: an immutable folder).
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _not_writable(error: OSError, mode: str) -> str:
    """The one line for a path the run may not write: which path, why, and
    what to do instead."""
    path = error.filename or "the workdir"
    hint = ("give --workdir a folder this user can write"
            if mode in ("train", "evaluate", "watch") else
            "check the permissions of that path")
    return f"{path}: {error.strerror or error}; {hint}"


def _config_argument(argv) -> str:
    """What the command line gave --config (path[:argument])."""
    for k, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and k + 1 < len(argv):
            return argv[k + 1]
    return "?"


def _config_file_error(error: BaseException, argv) -> str:
    """One line for a --config that does not load: a missing file (with the
    nearest config file's name) or the config's own error, whose traceback
    ml_collections folds into its message."""
    value = _config_argument(argv)
    path = value.split(":", 1)[0]
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        known = (sorted(f for f in os.listdir(folder) if f.endswith(".py"))
                 if os.path.isdir(folder) else [])
        near = difflib.get_close_matches(os.path.basename(path), known, n=1)
        hint = (f"; did you mean {os.path.join(os.path.dirname(path), near[0])}?"
                if near else "")
        return f"--config={value}: no such config file{hint}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = (lines[-1] if lines else type(error).__name__).split(": ", 1)[-1]
    return last if last.startswith(path) else f"--config={value}: {last}"


def parse_flags(argv):
    """absl's parsing, with an unknown ``--config.KEY`` as one line: config
    overrides fail inside ml_collections with an AttributeError and a
    traceback (and the message escaped).  So is a --config that does not
    load: a typo'd file name, or a config's own ValueError such as
    ``configs/cross_corpus.py`` without its ``:SOURCE,TARGET``."""
    try:
        remaining = flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        inner = error
        while isinstance(inner, (AttributeError, KeyError)) and inner.args:
            inner = inner.args[0]  # the KeyError inside, not its repr
        key, _, hint = str(inner).partition("\n")
        hint = hint[:1].lower() + hint[1:]
        print(f"error: the config has no key {key}" + (f"; {hint}" if hint else ""),
              file=sys.stderr)
        sys.exit(1)
    except flags.Error as error:
        if "Error whilst parsing config file" in str(error):
            print(f"error: {_config_file_error(error, argv)}", file=sys.stderr)
        else:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    try:  # ml_collections defers a config file's IOError to the first read
        _CONFIG.value.get("data")
    except OSError as error:
        print(f"error: {_config_file_error(error, argv)}", file=sys.stderr)
        sys.exit(1)
    return remaining


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
