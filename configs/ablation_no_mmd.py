r"""Ablation: Emo-DNA on the synthetic pair without MMD corpus-level alignment (L_mmd).

  python -m emodna_jax.main --config=configs/ablation_no_mmd.py --workdir=/tmp/emodna_no_mmd
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.w_mmd = 0.0
    config.compare_source_only = False
    return config
