r"""Entry point.

  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=evaluate
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=predict --inputs=clips/
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=export --export_dir=/tmp/model
"""

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
    except KeyboardInterrupt:  # the last finished checkpoint is intact
        print("interrupted", file=sys.stderr)
        return 130


def parse_flags(argv):
    """absl's parsing, with an unknown ``--config.KEY`` as one line: config
    overrides fail inside ml_collections with an AttributeError and a
    traceback (and the message escaped)."""
    try:
        return flags.FLAGS(argv)
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
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
