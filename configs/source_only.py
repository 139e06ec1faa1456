r"""Source-only baseline on the synthetic pair: no target data in training.

  python -m emodna_jax.main --config=configs/source_only.py --workdir=/tmp/emodna_source_only

The lower bound every adaptation method is measured against: the same model,
data and schedule as configs/default.py with every target-side loss off.
"""

from configs import default
from emodna_jax import config_variants


def get_config():
    return config_variants.source_only(default.get_config())
