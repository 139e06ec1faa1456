r"""Entry point.

  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna
  python -m emodna_jax.main --config=configs/default.py --config.steps=2000 ...
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from emodna_jax import runs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and reports.")
_MODE = flags.DEFINE_enum("mode", "train", ["train"], "What to do.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    runs.run(_MODE.value, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
