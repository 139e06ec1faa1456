r"""Any two prepared corpora: train on SOURCE (labelled), adapt to TARGET (unlabelled).

  python -m emodna_jax.main --config=configs/cross_corpus.py:SOURCE,TARGET --workdir=W
  python -m emodna_jax.main --config=configs/cross_corpus.py:SOURCE,TARGET,dann --workdir=W
  python -m emodna_jax.main --config=configs/cross_corpus.py:SOURCE,TARGET --workdir=W --mode=evaluate

Prepare each corpus first (``python -m data_prep --corpus=csv --manifest=M
--name=N``); the data directory is ``--config.data.data_dir`` or
``$EMODNA_DATA_DIR``.  The classes are the emotions both corpora share, in
the source corpus's order, unless ``--config.data.classes`` names them.

METHOD (default ``emodna``):
  emodna        the recommended Emo-DNA recipe;
  source_only   no target data in training (the lower bound);
  dan           corpus alignment by multi-kernel MMD only (Long et al. 2015);
  dann          a corpus discriminator on the emotion features behind a
                gradient reversal (Ganin et al. 2016);
  no_cd, no_ca, no_mmd, no_cor, no_consistency, no_diversity
                Emo-DNA without one of its losses;
  no_clusters   Emo-DNA with the adaptive thresholds' pseudo-labels instead
                of the target's clusters (the recipe before them);
  no_agreement  Emo-DNA without the check of the clusters against the
                classifier (loss.cluster_agreement);
  paper         Emo-DNA as published: threshold pseudo-labels from the first
                step, the paper's weights, none of the recipe's additions.

Checkpoints are kept every 50 steps so that ``--mode=evaluate`` can select
one by source-validation UAR (never by target labels).
"""

import ml_collections

from configs import default
from emodna_jax import config_variants


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    parts = [p.strip() for p in arg.split(",")] if arg else []
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError("configs/cross_corpus.py needs SOURCE,TARGET[,METHOD] "
                         f"after the colon, got {arg!r}")
    config = default.get_config()
    config.method = parts[2] if len(parts) == 3 else "emodna"
    config.data.build_synthetic = False
    config.data.source, config.data.target = parts[0], parts[1]
    config.data.classes = ()          # () : the emotions both corpora share
    config.compare_source_only = False
    config.eval_every = 0             # --mode=evaluate scores every checkpoint
    config.checkpoint_every = 50
    config.keep_checkpoints = 100_000  # all of them, whatever --config.steps is
    config.log_every = 100
    config_variants.real_speech(config)
    return config_variants.with_method(config, config.method)
