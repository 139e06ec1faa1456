r"""MMD-only (DAN-style) adaptation on the synthetic pair.

  python -m emodna_jax.main --config=configs/mmd_only.py --workdir=/tmp/emodna_mmd_only

Corpus-level alignment alone: no corpus classifier, no contrastive
decoupling, no pseudo-label class alignment.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.w_cor = 0.0
    config.loss.w_cd = 0.0
    config.loss.w_ca = 0.0
    config.compare_source_only = False
    return config
