r"""Emo-DNA's baselines and ablations on the synthetic pair, one argument each.

  python -m emodna_jax.main --config=configs/ablation.py:source_only --workdir=/tmp/source_only
  python -m emodna_jax.main --config=configs/ablation.py:no_cd --workdir=/tmp/emodna_no_cd

The argument is a method of configs/cross_corpus.py: ``source_only`` (every
target-side loss off: the lower bound), ``dan`` (MMD alone), ``dann`` (a
corpus discriminator behind a gradient reversal), or Emo-DNA without one
loss: ``no_cd``, ``no_ca``, ``no_mmd``, ``no_cor``.  Everything else is
configs/default.py.
"""

import ml_collections

from configs import arguments
from configs import default
from emodna_jax import config_variants


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    method = arguments.parse(arg, "configs/ablation.py",
                             method=arguments.REQUIRED).method
    config = default.get_config()
    config.compare_source_only = False
    config.method = method
    return config_variants.with_method(config, method)
