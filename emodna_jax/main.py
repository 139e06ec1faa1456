r"""Entry point.

  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=evaluate
  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna --mode=predict --inputs=clips/
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from emodna_jax import runs
from emodna_jax import workdir_lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and reports.")
_MODE = flags.DEFINE_enum("mode", "train", list(runs.MODES), "What to do.")
_FORCE = flags.DEFINE_bool("force", False, "evaluate: redo evaluated steps too.")
_INPUTS = flags.DEFINE_list("inputs", [], "predict: audio files or directories.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None,
                                   "predict: checkpoint step (default: latest).")
_JSON = flags.DEFINE_bool("json", False, "predict: print JSON.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    verbose = logging.get_verbosity() >= logging.DEBUG  # --verbosity=1
    logging.set_verbosity(logging.ERROR)  # orbax and TFDS chatter; we print results
    try:
        return runs.run(_MODE.value, _CONFIG.value, _WORKDIR.value,
                        force=_FORCE.value, inputs=_INPUTS.value,
                        checkpoint=_CHECKPOINT.value, as_json=_JSON.value)
    except (ValueError, FileNotFoundError, workdir_lock.WorkdirInUse) as error:
        # Bad config values and missing data: one line (the traceback with
        # --verbosity=1).  Other exceptions are bugs and keep theirs.
        if verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the last finished checkpoint is intact
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    app.run(main)
