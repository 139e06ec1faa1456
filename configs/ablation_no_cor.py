r"""Ablation: Emo-DNA on the synthetic pair without the corpus classifier (L_cor).

  python -m emodna_jax.main --config=configs/ablation_no_cor.py --workdir=/tmp/emodna_no_cor
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.w_cor = 0.0
    config.compare_source_only = False
    return config
