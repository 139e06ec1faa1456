r"""MSAC-SERNet, single corpus, speaker-independent folds (synthetic studio corpus).

  python -m emodna_jax.main --config=configs/msac_single_corpus.py --workdir=/tmp/msac_folds
  python -m emodna_jax.main --config=configs/msac_single_corpus.py --workdir=/tmp/msac_fold2 --config.data.fold=2

Every fold (``data.fold = -1``) or one: training reads the other folds of the
corpus, evaluation the held-out speakers; the run ends with UAR/WAR per fold
and their mean +- std.  MSAC-SERNet's settings are
``config_variants.msac_sernet``: additive-margin softmax, the speaker
suppressed (by aligning its per-speaker centroids) and gender kept as an
auxiliary task, the bands warped per training utterance.  For a real
corpus: --config.data.source=emodb --config.data.build_synthetic=False.
"""

from configs import default
from emodna_jax import config_variants


def get_config():
    config = config_variants.msac_sernet(default.get_config())
    config.data.protocol = "single_corpus"
    config.data.fold = -1                  # -1: every fold in turn
    config.data.source = "synth_studio"
    config.data.classes = ("neutral", "angry", "happy", "sad")
    config.msac.speaker_weight = 10.0      # the alignment is a ratio in [0, 1]
    config.msac.corpus = "off"
    config.steps = 300
    config.eval_every = 0
    config.checkpoint_every = 150
    config.select_by = "last"              # no separate validation speakers
    return config
