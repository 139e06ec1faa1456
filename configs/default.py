r"""Emo-DNA on the built-in synthetic pair: studio source -> field target.

  python -m emodna_jax.main --config=configs/default.py --workdir=/tmp/emodna_default

Builds the synthetic shards first if they are missing, trains Emo-DNA for a
few minutes on CPU, and ends by printing the target UAR/WAR next to the same
run trained source-only (configs/ablation.py:source_only).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Data: prepared corpora (python -m data_prep) in data_dir; '' means
    # $EMODNA_DATA_DIR or ~/emodna_data.
    config.data = ml_collections.ConfigDict()
    config.data.data_dir = ""
    config.data.build_synthetic = True   # build synth_* shards when missing
    config.data.protocol = "cross_corpus"  # or 'single_corpus' (speaker folds)
    config.data.fold = 0                   # single_corpus: held-out fold
    config.data.source = "synth_studio"
    config.data.target = "synth_field"
    config.data.source_split = "train"
    config.data.source_eval_split = "validation"
    config.data.target_split = "all"     # unlabelled in training
    config.data.classes = ("neutral", "angry", "happy", "sad")
    config.data.feature = "logmel"          # or 'mfcc', or 'npy' (your own features)
    config.data.feature_dim = 0           # npy: D of the [T, D] feature files
    config.data.n_mels = 64
    config.data.n_mfcc = 13
    config.data.sample_rate = 16000
    config.data.float16 = False
    config.data.num_frames = 160          # training crop: 1.6 s
    config.data.eval_num_frames = 300     # evaluation: whole utterances up to 3 s
    config.data.std_floor = 0.01
    # logmel_pitch: append 18 prosody statistics of the whole utterance,
    # standardised per speaker, to every frame (emodna_jax/utterance_stats.py).
    config.data.utterance_stats = False
    # Training holds a corpus's normalised frames in memory when they fit in
    # this many MiB (decoding records between steps starves a GPU); 0: never.
    config.data.cache_mib = 1024
    # Per-bin standardisation: 'corpus' (each corpus with its own training
    # statistics) or 'speaker' (each utterance with its speaker's).
    config.data.normalization = "corpus"
    # Cross-corpus: zero the bins either corpus leaves empty (e.g. above 4 kHz
    # for 8 kHz audio) in both, from unlabelled statistics.
    config.data.shared_bands = False

    # SpecAugment-style masks on the labelled training utterances
    # (emodna_jax/augment.py): blocks of frames and of bands set to 0, and a
    # vocal tract length warp of the bands.
    config.augment = ml_collections.ConfigDict()
    config.augment.time_masks = 0         # per utterance; 0: none
    config.augment.time_width = 20        # widest block, frames
    config.augment.freq_masks = 0
    config.augment.freq_width = 8         # widest block, bands
    config.augment.warp = 0.0             # VTLP: bands warped by 1 +- warp; 0: none
    # The strong view of each target utterance for the consistency loss
    # (loss.w_consistency; docs/losses.md, section 5): the same kinds of
    # masks and warp, drawn independently of the source's.
    config.strong_augment = ml_collections.ConfigDict(config.augment.to_dict())
    config.strong_augment.update(time_masks=2, freq_masks=2, warp=0.1)

    config.model = ml_collections.ConfigDict()
    config.model.backbone = "tim"
    config.model.channels = 32            # tim: channels per block
    config.model.num_blocks = 5
    config.model.cnn_channels = (16, 32, 64, 64)
    config.model.attention_dim = 64       # cnn: attentive pooling's scoring MLP
    config.model.projection_dim = 64
    config.model.classifier = "linear"    # or 'am' (additive margin)
    config.model.dropout_rate = 0.1
    config.model.compute_dtype = "float32"  # 'bfloat16': bf16 compute, f32 params

    config.loss = ml_collections.ConfigDict()
    config.loss.label_smoothing = 0.1
    config.loss.am_scale = 30.0
    config.loss.am_margin = 0.2
    config.loss.w_cor = 0.1
    config.loss.w_cd = 0.3
    config.loss.w_ca = 0.5
    # Share of L_ca that is self-training (pseudo-label cross-entropy on the
    # classifier) next to prototype alignment: L_ca = L_proto + w_pseudo L_pseudo.
    config.loss.w_pseudo = 1.0
    config.loss.w_mmd = 1.0
    # FixMatch-style consistency: a confident target pseudo-label, taken on
    # the plain view, trains the classifier on a masked and warped view of
    # the same utterance (config.strong_augment); 0: off.
    config.loss.w_consistency = 0.0
    # Diversity: KL of the target batch's mean posterior from uniform, so
    # self-training cannot collapse the target onto a few classes; 0: off.
    config.loss.w_diversity = 0.0
    # DANN (Ganin et al. 2016): a corpus discriminator on e behind a gradient
    # reversal; a baseline, not part of Emo-DNA (docs/losses.md, section 10).
    config.loss.w_dann = 0.0
    config.loss.temperature_cd = 0.1
    config.loss.temperature_ca = 0.1
    config.loss.threshold_momentum = 0.99
    config.loss.prototype_momentum = 0.9
    config.loss.mmd_multipliers = (0.25, 0.5, 1.0, 2.0, 4.0)
    config.loss.use_ramp = True
    # Safeguards against confirmation bias (docs/losses.md, section 4): a
    # source-only share of training before the target losses, a fixed floor
    # under the adaptive thresholds, classifier/prototype agreement.
    config.loss.adapt_start = 0.0
    config.loss.threshold_floor = 0.0
    config.loss.pseudo_agreement = False
    # Pseudo-labels from clusters instead of thresholds: every cluster_every
    # steps from the start of adaptation, k-means over the target's
    # utterance statistics and the model's posteriors (needs
    # data.utterance_stats; emodna_jax/cluster_labels.py).
    config.loss.cluster_labels = False
    config.loss.cluster_every = 50
    # At the first clustering, a class whose cluster the classifier mostly
    # gives to one other class is not adapted: no pseudo-labels from it, and
    # the diversity term pools it with that class (docs/losses.md, section 4).
    config.loss.cluster_agreement = False

    # Multiple Speech Attribute Control (MSAC-SERNet): per attribute 'off',
    # 'keep' (auxiliary classifier on the backbone embedding) or 'suppress'
    # (h is trained to shed it: by aligning its per-value centroids, or by a
    # gradient reversal into the classifier; strength scheduled up to grl_max).
    config.msac = ml_collections.ConfigDict()
    config.msac.speaker = "off"
    config.msac.gender = "off"
    config.msac.corpus = "off"
    config.msac.speaker_weight = 0.1
    config.msac.gender_weight = 0.1
    config.msac.corpus_weight = 0.1
    config.msac.suppress_by = "alignment"   # or "reversal" (docs/losses.md, section 9)
    config.msac.grl_max = 1.0
    config.msac.head_lr_multiplier = 1.0   # attribute heads' learning rate / the rest

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 2e-3
    config.optim.warmup_steps = 50
    config.optim.weight_decay = 1e-4
    config.optim.grad_clip = 1.0

    config.batch_size = 32                # global, per stream (source and target)
    config.steps = 400
    config.parallelism = "shard_map"      # or 'pmap'
    config.num_devices = 0                # devices to use; 0: all local devices

    config.log_every = 50
    config.eval_every = 200
    config.checkpoint_every = 200
    config.keep_checkpoints = 3           # the latest N ...
    config.keep_every = 0                 # ... plus every Nth step when > 0
    config.eval_batch_size = 64
    # Batch evaluation (--mode=evaluate): checkpoint selection and OOD study.
    config.select_by = "source_val_uar"   # never the target: that is an oracle
    # What --mode=evaluate computes for each checkpoint, in this order: one
    # module of emodna_jax/evaluators each (classification is required).
    config.evals = ("classification", "pseudo_labels", "ood", "embeddings")
    config.ood_score = "energy"           # msp | max_logit | energy | mahalanobis
    config.ood_threshold = ml_collections.config_dict.placeholder(float)  # None: 95%-TPR one
    # What --mode=export and --mode=predict serve: the checkpoint select_by
    # picked ('selected'), or the mean posterior of every evaluated
    # checkpoint ('checkpoint_ensemble', docs/serving.md).
    config.serve = "selected"
    # Prediction: a file that is not speech (steady noise, a tone, music)
    # gets no emotion and is flagged out of distribution (speech_gate.py).
    config.speech_gate = True

    # The printed name of the run's method (config_variants.METHODS).
    config.method = "emodna"
    # After training, train the same run source-only and print both.
    config.compare_source_only = True
    return config
