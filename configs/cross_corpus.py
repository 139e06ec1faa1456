r"""Any two prepared corpora: train on SOURCE (labelled), adapt to TARGET (unlabelled).

  python -m emodna_jax.main --config=configs/cross_corpus.py:SOURCE,TARGET --workdir=W
  python -m emodna_jax.main --config=configs/cross_corpus.py:SOURCE,TARGET,dann --workdir=W
  python -m emodna_jax.main --config=configs/cross_corpus.py:SOURCE,TARGET --workdir=W --mode=evaluate
  python -m emodna_jax.main --config=configs/cross_corpus.py:source=emodb,target=casia,size=full --workdir=W

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

SIZE (default ``suite``):
  suite         the development benchmark's size: corpora of a few hundred
                utterances, TIM-Net 32 x 5, 400 steps of 32 + 32 crops;
  full          corpora of thousands (EmoDB, eNTERFACE, CASIA, IEMOCAP):
                longer crops, TIM-Net 64 x 6, 8000 steps of 64 + 64.

  python -m emodna_jax.main --config=configs/cross_corpus.py:emodb,enterface,size=full --workdir=W

Checkpoints are kept (every 50 steps, every 500 at full size) so that
``--mode=evaluate`` can select one by source-validation UAR (never by target
labels).
"""

import ml_collections

from configs import arguments
from configs import default
from emodna_jax import config_variants

SIZES = ("suite", "full")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = arguments.parse(arg, "configs/cross_corpus.py", source=arguments.REQUIRED,
                           target=arguments.REQUIRED, method="emodna", size="suite")
    if args.size not in SIZES:
        raise ValueError(f"configs/cross_corpus.py: size={args.size!r} is not one of "
                         + ", ".join(SIZES))
    config = default.get_config()
    config.method = args.method
    config.data.build_synthetic = False
    config.data.source, config.data.target = args.source, args.target
    config.data.classes = ()          # () : the emotions both corpora share
    config.compare_source_only = False
    config.eval_every = 0             # --mode=evaluate scores every checkpoint
    config.checkpoint_every = 50
    config.keep_checkpoints = 100_000  # all of them, whatever --config.steps is
    config.log_every = 100
    config_variants.real_speech(config)
    if args.size == "full":
        full_size(config)
    return config_variants.with_method(config, config.method)


def full_size(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Corpora of thousands of utterances: a wider model trained longer."""
    config.data.num_frames = 300
    config.data.eval_num_frames = 800
    config.model.channels = 64
    config.model.num_blocks = 6
    config.model.projection_dim = 128
    config.batch_size = 64
    config.steps = 8000
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 500
    config.checkpoint_every = 500
    config.loss.threshold_momentum = 0.999
    # One pass over the target per clustering: 12 over 8000 steps (the
    # suite's 400-step runs have 6: every 50 steps from step 120).
    config.loss.cluster_every = 500
    return config
