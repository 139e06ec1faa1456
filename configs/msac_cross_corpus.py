r"""MSAC-SERNet across corpora (synthetic studio -> field), alone or with Emo-DNA.

  python -m emodna_jax.main --config=configs/msac_cross_corpus.py --workdir=/tmp/msac_cross
  python -m emodna_jax.main --config=configs/msac_cross_corpus.py --workdir=/tmp/msac_emodna --config.loss.w_cd=0.3 --config.loss.w_ca=0.5 --config.loss.w_mmd=1.0 --config.loss.w_cor=0.1

As configured, MSAC-SERNet alone (``config_variants.msac_sernet``):
additive-margin softmax, speaker suppressed, gender kept, the bands warped
per training utterance, and the corpus attribute suppressed too (the
emotion embedding is trained to be corpus-invariant: MSAC's own cross-corpus
mechanism).  Switching the Emo-DNA weights on (second command) uses
MSAC-SERNet as the backbone of Emo-DNA.
"""

from configs import default
from emodna_jax import config_variants


def get_config():
    config = config_variants.msac_sernet(default.get_config())
    config.msac.corpus = "suppress"
    config.steps = 400
    return config
