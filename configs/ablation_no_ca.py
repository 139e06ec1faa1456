r"""Ablation: Emo-DNA on the synthetic pair without pseudo-label class-level alignment (L_ca).

  python -m emodna_jax.main --config=configs/ablation_no_ca.py --workdir=/tmp/emodna_no_ca
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.w_ca = 0.0
    config.compare_source_only = False
    return config
