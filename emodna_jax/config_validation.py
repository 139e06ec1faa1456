"""Config errors, reported before anything is read or compiled.

A typo'd key is caught by ml_collections itself (overrides of unknown keys
fail); this module checks values, and names the offending entry.
"""

from __future__ import annotations

from data_prep import labels
from data_prep.features import FEATURE_KINDS

COMPUTE_DTYPES = ("float32", "bfloat16")
NORMALIZATIONS = ("corpus", "speaker")
# What --mode=export and --mode=predict serve (emodna_jax/export.py).
SERVED = ("selected", "checkpoint_ensemble")


def _fail(key: str, message: str):
    raise ValueError(f"config.{key}: {message}")


def _positive(config, *keys):
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        if not isinstance(value, int) or value <= 0:
            _fail(key, f"must be a positive integer, got {value!r}")


def _choice(key: str, value, allowed):
    if value not in allowed:
        _fail(key, f"must be one of {list(allowed)}, got {value!r}")


def validate_config(config):
    """Raises ValueError naming the first bad entry of ``config``."""
    # Lazy: the models and the step import jax.
    from emodna_jax.models.emodna import BACKBONES, CLASSIFIERS
    from emodna_jax.step import PARALLELISM_MODES
    _positive(config, "steps", "batch_size", "log_every", "checkpoint_every",
              "keep_checkpoints", "eval_batch_size", "data.num_frames",
              "data.eval_num_frames", "model.projection_dim")
    if config.eval_every < 0 or config.keep_every < 0:
        _fail("eval_every", "eval_every and keep_every must be >= 0")
    _choice("parallelism", config.parallelism, PARALLELISM_MODES)
    _choice("serve", config.get("serve", "selected"), SERVED)
    _choice("model.backbone", config.model.backbone, sorted(BACKBONES))
    _choice("model.classifier", config.model.classifier, CLASSIFIERS)
    _choice("model.compute_dtype", config.model.compute_dtype, COMPUTE_DTYPES)
    _choice("data.feature", config.data.feature, FEATURE_KINDS)
    _choice("data.normalization", config.data.normalization,
            NORMALIZATIONS)
    for block in ("augment", "strong_augment"):
        for key, value in config.get(block, {}).items():
            if key == "warp":
                if not 0 <= value < 0.5:
                    _fail(f"{block}.warp", f"must be in [0, 0.5), got {value!r}")
            elif not isinstance(value, int) or value < 0:
                _fail(f"{block}.{key}", f"must be an integer >= 0, got {value!r}")
    if config.loss.get("w_consistency", 0.0) > 0:
        strong = config.get("strong_augment", {})
        if not (strong.get("time_masks", 0) or strong.get("freq_masks", 0)
                or strong.get("warp", 0.0)):
            _fail("loss.w_consistency", "needs a strong view: strong_augment has "
                  "no masks and no warp, so both views would be the same")
    if not isinstance(config.data.cache_mib, (int, float)) or config.data.cache_mib < 0:
        _fail("data.cache_mib", f"must be a number >= 0, got {config.data.cache_mib!r}")
    if config.data.get("utterance_stats", False) and config.data.feature != "logmel_pitch":
        _fail("data.utterance_stats", "needs the prosody tracks of data.feature="
              f"'logmel_pitch', got {config.data.feature!r}")
    if not 0 <= config.model.dropout_rate < 1:
        _fail("model.dropout_rate", f"must be in [0, 1), got {config.model.dropout_rate}")

    classes = list(config.data.classes)
    if len(classes) < 2:
        _fail("data.classes", f"need at least 2 classes, got {classes}")
    if len(set(classes)) != len(classes):
        _fail("data.classes", f"has duplicates: {classes}")
    unknown = [c for c in classes if c not in labels.EMOTIONS]
    if unknown:
        _fail("data.classes", f"{unknown} are not canonical emotion names "
              f"({', '.join(labels.EMOTIONS)})")
    if (config.data.protocol == "cross_corpus"
            and config.data.source == config.data.target):
        _fail("data.target", f"must differ from data.source ({config.data.source!r})")

    # Lazy: the evaluators import the evaluation (and with it jax).
    from emodna_jax import evaluators
    problem = evaluators.check(tuple(config.get("evals", evaluators.DEFAULT)))
    if problem:
        _fail("evals", problem)

    loss = config.loss
    for key in ("w_cor", "w_cd", "w_ca", "w_pseudo", "w_mmd", "w_dann",
                "label_smoothing", "am_margin"):
        if loss.get(key, 0.0) < 0:
            _fail(f"loss.{key}", f"must be >= 0, got {loss[key]}")
    for key in ("temperature_cd", "temperature_ca", "am_scale"):
        if loss[key] <= 0:
            _fail(f"loss.{key}", f"must be > 0, got {loss[key]}")
    for key in ("threshold_momentum", "prototype_momentum", "adapt_start",
                "threshold_floor"):
        if not 0 <= loss.get(key, 0.0) < 1:
            _fail(f"loss.{key}", f"must be in [0, 1), got {loss[key]}")
    if not loss.label_smoothing < 1:
        _fail("loss.label_smoothing", f"must be < 1, got {loss.label_smoothing}")
    if not loss.mmd_multipliers or min(loss.mmd_multipliers) <= 0:
        _fail("loss.mmd_multipliers", f"must be positive, got {loss.mmd_multipliers}")
    if loss.get("cluster_labels", False):
        if not config.data.get("utterance_stats", False):
            _fail("loss.cluster_labels", "clusters the target's utterance statistics: "
                  "needs data.utterance_stats=True")
        if not (loss.w_cd > 0 or loss.w_ca > 0 or loss.get("w_consistency", 0.0) > 0):
            _fail("loss.cluster_labels", "nothing reads pseudo-labels: needs "
                  "loss.w_ca, loss.w_cd or loss.w_consistency > 0")
        if not isinstance(loss.cluster_every, int) or loss.cluster_every < 1:
            _fail("loss.cluster_every", f"must be an integer >= 1, got {loss.cluster_every!r}")
    elif loss.get("cluster_agreement", False):
        _fail("loss.cluster_agreement", "checks the target's clusters: needs "
              "loss.cluster_labels=True")
    from emodna_jax import msac
    msac.validate_modes(config.msac)
    if config.data.protocol not in ("cross_corpus", "single_corpus"):
        _fail("data.protocol", "must be 'cross_corpus' or 'single_corpus', "
              f"got {config.data.protocol!r}")
    if config.data.protocol == "single_corpus":
        from emodna_jax import config_variants
        if config_variants.adapts(config):
            _fail("data.protocol", "single_corpus trains on one corpus: set the "
                  "adaptation weights loss.w_cor/w_cd/w_ca/w_mmd/w_dann to 0")
    if config.optim.learning_rate <= 0:
        _fail("optim.learning_rate", f"must be > 0, got {config.optim.learning_rate}")


def validate_batch(config, num_devices: int, num_processes: int):
    """Batch sizes must split evenly over devices and processes."""
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % num_devices or config[key] % num_processes:
            _fail(key, f"{config[key]} does not split over {num_devices} devices")
