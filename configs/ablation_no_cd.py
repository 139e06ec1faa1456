r"""Ablation: Emo-DNA on the synthetic pair without contrastive emotion decoupling (L_cd).

  python -m emodna_jax.main --config=configs/ablation_no_cd.py --workdir=/tmp/emodna_no_cd
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.w_cd = 0.0
    config.compare_source_only = False
    return config
