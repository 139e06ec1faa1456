"""The Emo-DNA losses and their small pieces of state, as pure array functions.

Every function takes and returns ``jnp`` arrays: no Flax, no Optax, no
devices.  The step calls them on the global batch (docs/losses.md, section 8,
says why that makes training independent of the device count); each loss is
defined in docs/losses.md.

Math is done in float32 whatever the input dtype, and masked entries are kept
out with large finite negatives or ``where`` guards, never ``-inf`` or a
division by zero, so that an empty mask gives 0.0 and finite gradients.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Masks logits out of a softmax.  Finite, so exp() underflows to exactly zero
# while gradients stay finite (``-inf`` gives ``inf - inf = nan`` in backward).
_NEG = -1e9
# Floor on squared norms before rsqrt: a zero vector normalises to zero.
_EPS = 1e-12
# Full float32 matmuls.  Accelerators may run float32 matmuls in TF32/bf16
# passes by default, and ||a||^2 + ||b||^2 - 2ab cancels badly under them.
_HIGHEST = jax.lax.Precision.HIGHEST


def _f32(x) -> Array:
    return jnp.asarray(x, jnp.float32)


def _binary(mask, like: Array) -> Array:
    """Float 0/1 weights, [B]; ``None`` means every row counts."""
    if mask is None:
        return jnp.ones(like.shape[:1], jnp.float32)
    return (jnp.asarray(mask) > 0).astype(jnp.float32)


def l2_normalize(x: Array, axis: int = -1) -> Array:
    """x / ||x|| along ``axis``, in float32 (cosines feed the losses); zero
    vectors stay zero and their gradient finite."""
    x = _f32(x)
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, _EPS))


# ----------------------------------------------------------------------------
# Classification.


def masked_mean(values: Array, mask=None) -> Array:
    """Mean of ``values`` [B] over rows with ``mask`` [B] > 0; 0.0 if none.

    Masked rows are replaced by zero before summing, so a non-finite value in
    a masked row cannot leak into the result.
    """
    values = _f32(values)
    if mask is None:
        return jnp.mean(values)
    weights = _binary(mask, values)
    total = jnp.sum(jnp.where(weights > 0, values, 0.0))
    count = jnp.sum(weights)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def cross_entropy(logits: Array, labels: Array, *,
                  label_smoothing: float = 0.0, mask=None) -> Array:
    """Label-smoothed softmax cross-entropy, averaged over masked rows.

    Args:
      logits: [B, C].
      labels: [B] int class ids.
      label_smoothing: targets are ``(1 - ls) * onehot + ls / C``.
      mask: optional [B] bool or float; rows with mask > 0 count equally
        (e.g. the confident target rows of a pseudo-label loss).
    Returns:
      Scalar; 0.0 when the mask selects nothing.
    """
    logits = _f32(logits)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    targets = (1.0 - label_smoothing) * targets + (
        label_smoothing / num_classes)
    per_row = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return masked_mean(per_row, mask)


def centroid_alignment(features: Array, labels: Array, num_values: int, *,
                       mask=None) -> Array:
    """Between-group share of the scatter of ``features``, in [0, 1].

    ``sum_k n_k ||mu_k - mu||^2 / sum_i ||x_i - mu||^2`` over the rows with
    mask > 0, mu_k the mean of the rows labelled k and mu the mean of all.
    It is 0 exactly when every attribute value has the same centroid, where a
    linear read-out of the attribute has no mean difference left to use; as
    a ratio it cannot be lowered by shrinking the features.  The suppressor of
    MSAC's 'alignment' mode (docs/losses.md).

    Args:
      features: [B, D].
      labels: [B] int in [0, num_values).
      num_values: number of attribute values.
      mask: optional [B]; rows with mask > 0 count.
    """
    x = _f32(features)
    weights = _binary(mask, x)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    mean = jnp.sum(x * weights[:, None], 0) / count
    centred = (x - mean) * weights[:, None]
    onehot = jax.nn.one_hot(labels, num_values, dtype=jnp.float32) * weights[:, None]
    sizes = jnp.sum(onehot, 0)                                   # [K]
    group_sums = jnp.matmul(onehot.T, centred, precision=_HIGHEST)  # [K, D]
    between = jnp.sum(jnp.square(group_sums), -1) / jnp.maximum(sizes, 1.0)
    total = jnp.sum(jnp.square(centred))
    return jnp.sum(between) / jnp.maximum(total, 1e-12)


def posterior_logits(logits: Array, classifier: str, am_scale: float) -> Array:
    """Logits whose softmax is the model's class posterior: a cosine ('am')
    classifier's outputs times its scale, a linear one's as they are.  Every
    posterior-based quantity (pseudo-labels, MSP, energy) must use these, or
    training, evaluation and prediction disagree."""
    return am_scale * logits if classifier == "am" else logits


def config_posterior_logits(config, logits: Array) -> Array:
    """``posterior_logits`` with a run config's classifier and scale: the one
    spelling every caller outside the fused step uses."""
    return posterior_logits(logits, config.model.classifier, config.loss.am_scale)


def additive_margin_logits(cosines: Array, labels: Array, *, scale: float,
                           margin: float) -> Array:
    """``scale * (cos - margin * onehot)`` [B, C]: the true class must win by
    ``margin`` in cosine, which tightens classes (AM-softmax, MSAC-SERNet).

    Use only for training; predict with ``scale * cosines``.
    """
    cosines = _f32(cosines)
    onehot = jax.nn.one_hot(labels, cosines.shape[-1], dtype=jnp.float32)
    return scale * (cosines - margin * onehot)


# ----------------------------------------------------------------------------
# Contrastive decoupling.


def supervised_contrastive(features: Array, groups: Array, valid: Array, *,
                           temperature: float) -> Array:
    """Supervised contrastive loss (SupCon; positives averaged outside log).

    For a valid anchor i with positives P(i) (valid j != i of the same group):
      loss_i = -1/|P(i)| sum_{p in P(i)} log(exp(s_ip/T) / sum_{a != i valid}
      exp(s_ia/T)),  s = features @ features.T.
    Invalid rows are neither anchors, positives nor negatives.

    Args:
      features: [N, D], already L2-normalised.
      groups: [N] int; equal ids are positives of each other.
      valid: [N] bool.
      temperature: T.
    Returns:
      Mean of loss_i over anchors that have a positive; 0.0 if there are none.
    """
    features = _f32(features)
    n = features.shape[0]
    valid = jnp.asarray(valid, bool)
    sims = jnp.matmul(features, features.T, precision=_HIGHEST) / temperature
    others = valid[None, :] & ~jnp.eye(n, dtype=bool)       # [N, N]: a != i
    positives = others & (groups[:, None] == groups[None, :])
    # Stabilise with the row max over the denominator set (constant per row,
    # so it cancels; no gradient through it).
    row_max = jnp.max(jnp.where(others, sims, _NEG), axis=1, keepdims=True)
    shifted = jnp.where(others, sims - jax.lax.stop_gradient(row_max), _NEG)
    denom = jnp.sum(jnp.exp(shifted), axis=1)
    # A row with an empty denominator is never an anchor; keep its log finite.
    log_denom = jnp.log(jnp.where(denom > 0, denom, 1.0))
    log_prob = shifted - log_denom[:, None]
    num_pos = jnp.sum(positives, axis=1)
    pos_sum = jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1)
    per_anchor = -pos_sum / jnp.maximum(num_pos, 1)
    return masked_mean(per_anchor, valid & (num_pos > 0))


def decoupling_loss(z_emotion: Array, z_corpus: Array, emotion_labels: Array,
                    emotion_valid: Array, corpus_labels: Array, *,
                    num_classes: int, temperature: float) -> Array:
    """Emo-DNA contrastive decoupling L_cd over [z_emotion; z_corpus], 2B rows.

    Emotion features gather by (pseudo-)class, corpus features by corpus, and
    every feature of one branch is a negative for the other, which pushes
    emotion features away from corpus information.  Corpus ids are offset by
    ``num_classes`` so emotion class k and corpus k never share a group.

    Args:
      z_emotion, z_corpus: [B, D], L2-normalised.
      emotion_labels: [B] int; source labels and target pseudo-labels.
      emotion_valid: [B] bool; source rows and confident target rows.
      corpus_labels: [B] int corpus ids.
      num_classes: number of emotion classes (static).
      temperature: contrastive temperature.
    """
    features = jnp.concatenate([_f32(z_emotion), _f32(z_corpus)], axis=0)
    groups = jnp.concatenate([jnp.asarray(emotion_labels, jnp.int32),
                              num_classes + jnp.asarray(corpus_labels,
                                                        jnp.int32)])
    valid = jnp.concatenate([jnp.asarray(emotion_valid, bool),
                             jnp.ones(z_corpus.shape[:1], bool)])
    return supervised_contrastive(features, groups, valid,
                                  temperature=temperature)


# ----------------------------------------------------------------------------
# Self-adaptive class-wise thresholds (FreeMatch-style) for pseudo-labels.


def init_threshold_state(num_classes: int) -> Tuple[Array, Array]:
    """(tau_g = 1/C scalar, p_tilde = ones(C)/C): the uniform predictor."""
    return (jnp.asarray(1.0 / num_classes, jnp.float32),
            jnp.full((num_classes,), 1.0 / num_classes, jnp.float32))


def update_threshold_state(tau_g: Array, p_tilde: Array, batch_probs: Array,
                           *, momentum: float, mask=None
                           ) -> Tuple[Array, Array]:
    """tau_g <- m tau_g + (1-m) mean max_c p;  p_tilde <- m p_tilde + (1-m)
    mean p, means over the masked rows of ``batch_probs`` [B, C] (the global
    batch: the step gathers every device's rows first).

    A batch with no rows leaves the state unchanged; the state is not
    differentiated.
    """
    probs = jax.lax.stop_gradient(_f32(batch_probs))
    weights = _binary(mask, probs)
    count = jnp.sum(weights)
    safe = jnp.maximum(count, 1.0)
    tau_g, p_tilde = _f32(tau_g), _f32(p_tilde)
    mean_max = jnp.sum(weights * jnp.max(probs, axis=-1)) / safe
    mean_probs = jnp.sum(weights[:, None] * probs, axis=0) / safe
    seen = count > 0
    return (jnp.where(seen, momentum * tau_g + (1.0 - momentum) * mean_max, tau_g),
            jnp.where(seen, momentum * p_tilde + (1.0 - momentum) * mean_probs, p_tilde))


def class_thresholds(tau_g: Array, p_tilde: Array) -> Array:
    """Per-class thresholds [C]: tau_g * p_tilde / max(p_tilde).

    Classes the model predicts less often get lower thresholds, so they still
    receive pseudo-labels early on.
    """
    p_tilde = _f32(p_tilde)
    return _f32(tau_g) * p_tilde / jnp.maximum(jnp.max(p_tilde), _EPS)


def confidence_mask(probs: Array, tau_g: Array, p_tilde: Array, *,
                    floor: float = 0.0) -> Tuple[Array, Array]:
    """(mask [B] bool, pseudo_labels [B] int32) for ``probs`` [B, C]: a row is
    confident when its max probability reaches its argmax class's threshold,
    and ``floor``, a fixed lower bound on every threshold."""
    probs = _f32(probs)
    pseudo_labels = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    thresholds = jnp.maximum(class_thresholds(tau_g, p_tilde), floor)
    mask = jnp.max(probs, axis=-1) >= thresholds[pseudo_labels]
    return mask, pseudo_labels


def prototype_agreement(features: Array, prototypes: Array,
                        pseudo_labels: Array) -> Array:
    """[B] bool: the nearest prototype (cosine) of each row of ``features``
    is its pseudo-label's, i.e. the classifier and the source class centres
    agree.  A class never seen (zero prototype) is nobody's nearest unless
    every cosine is <= 0."""
    cosines = jnp.matmul(l2_normalize(features), l2_normalize(prototypes).T,
                         precision=_HIGHEST)
    return jnp.argmax(cosines, axis=-1) == pseudo_labels


# ----------------------------------------------------------------------------
# Class prototypes and class-level alignment.


def init_prototypes(num_classes: int, dim: int) -> Array:
    """[C, D] zeros: a zero row marks a class never seen yet."""
    return jnp.zeros((num_classes, dim), jnp.float32)


def class_sums(features: Array, labels: Array, num_classes: int,
               mask=None) -> Tuple[Array, Array]:
    """Per-class feature sums [C, D] and counts [C], additive across devices.

    A one-hot matmul, so it is one fused op whatever C is.
    """
    features = _f32(features)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    onehot = onehot * _binary(mask, features)[:, None]
    sums = jnp.matmul(onehot.T, features, precision=_HIGHEST)
    return sums, jnp.sum(onehot, axis=0)


def update_prototypes(prototypes: Array, sums: Array, counts: Array, *,
                      momentum: float) -> Array:
    """EMA of class means, rows L2-normalised -> [C, D].

    Args:
      prototypes: [C, D] current state (a zero row: class never seen).
      sums, counts: [C, D] and [C] from :func:`class_sums`, summed over
        devices.
      momentum: EMA momentum m.
    A class seen for the first time takes its batch mean; a class absent
    from the batch keeps its prototype; zero rows stay zero.  (After the
    normalisation, the first-seen rule equals an EMA from zero; it is spelled
    out so the state never depends on that coincidence.)
    """
    prototypes, sums, counts = jax.lax.stop_gradient(
        (_f32(prototypes), _f32(sums), _f32(counts)))
    present = (counts > 0)[:, None]
    mean = sums / jnp.maximum(counts, 1.0)[:, None]
    seen = jnp.any(prototypes != 0, axis=1, keepdims=True)
    ema = jnp.where(seen, momentum * prototypes + (1.0 - momentum) * mean,
                    mean)
    return l2_normalize(jnp.where(present, ema, prototypes), axis=-1)


def class_alignment_loss(z_target: Array, pseudo_labels: Array, mask: Array,
                         prototypes: Array, *, temperature: float) -> Array:
    """Pulls confident target features to their pseudo-class prototype.

    Cross-entropy of softmax(cos(z, prototypes) / T) against the pseudo-label,
    averaged over confident rows.  Prototypes are state (stop_gradient); a
    never-seen (zero) prototype has cosine 0 with everything.

    Args:
      z_target: [B, D] target emotion features (normalised again here).
      pseudo_labels: [B] int.
      mask: [B] bool, confident rows.
      prototypes: [C, D].
      temperature: T.
    Returns:
      Scalar; 0.0 when no row is confident.
    """
    protos = jax.lax.stop_gradient(l2_normalize(prototypes, axis=-1))
    cosines = jnp.matmul(l2_normalize(z_target, axis=-1), protos.T,
                         precision=_HIGHEST)
    return cross_entropy(cosines / temperature, pseudo_labels, mask=mask)


def prediction_diversity(logits: Array, groups: Array | None = None) -> Array:
    """KL(mean posterior of the batch || uniform) = log C - H(mean_i p_i).

    0 when the batch's predictions are spread evenly over the classes, log C
    when one class takes them all: self-training's guard against collapsing
    onto a few classes (the diversity term of information maximisation,
    Liang et al. 2020).  The mean is over rows, so single rows stay free to
    be confident.

    Args:
      logits: [B, C] posterior logits of the (target) batch.
      groups: [C] group index of each class (in [0, C)), or None: each
        class alone.  Classes of one group pool their mass, and the prior
        gives a group its classes' share, so the term does not ask how the
        mass splits inside a group (``loss.cluster_agreement``).
    Returns:
      Scalar >= 0.
    """
    mean = jnp.mean(jax.nn.softmax(_f32(logits), axis=-1), axis=0)
    num_classes = logits.shape[-1]
    if groups is None:
        entropy = -jnp.sum(mean * jnp.log(jnp.maximum(mean, 1e-12)))
        return jnp.log(jnp.float32(num_classes)) - entropy
    membership = jax.nn.one_hot(groups, num_classes, dtype=jnp.float32)  # [class, group]
    mass = mean @ membership
    prior = jnp.sum(membership, axis=0) / num_classes
    terms = jnp.where(prior > 0, mass * (jnp.log(jnp.maximum(mass, 1e-12))
                                         - jnp.log(jnp.maximum(prior, 1e-12))), 0.0)
    return jnp.sum(terms)


# ----------------------------------------------------------------------------
# Corpus-level alignment: multi-kernel MMD.


def _pairwise_sq_distances(a: Array, b: Array) -> Array:
    """||a_i - b_j||^2 [N, M] via norms and one matmul (no [N, M, D] tensor);
    clipped at 0 against rounding."""
    a, b = _f32(a), _f32(b)
    cross = jnp.matmul(a, b.T, precision=_HIGHEST)
    sq = (jnp.sum(jnp.square(a), axis=1)[:, None]
          + jnp.sum(jnp.square(b), axis=1)[None, :] - 2.0 * cross)
    return jnp.maximum(sq, 0.0)


def _upper_median(sq_dists: Array) -> Array:
    """Median of the i < j entries of a square [N, N] matrix; 0.0 if N < 2."""
    n = sq_dists.shape[0]
    if n < 2:
        return jnp.zeros((), jnp.float32)
    rows, cols = np.triu_indices(n, k=1)
    return jnp.median(sq_dists[rows, cols])


def mmd2(x: Array, y: Array, *,
         multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
         bandwidth: Optional[float] = None) -> Array:
    """Multi-kernel Gaussian MMD^2 (biased V-statistic) between samples.

    MMD^2 = mean K(x, x) + mean K(y, y) - 2 mean K(x, y) with
    K = mean_j exp(-||a - b||^2 / (multipliers[j] * gamma)).  gamma is the
    median pairwise squared distance of the pooled sample (no gradient,
    floored at 1e-6), or ``bandwidth`` when given, so the kernels follow the
    scale of the features as training moves them.

    Args:
      x: [N, D] source features.
      y: [M, D] target features.
      multipliers: static tuple; the geometric bandwidth ladder.
      bandwidth: optional fixed gamma.
    Returns:
      Scalar, >= 0 up to rounding.
    """
    n, m = x.shape[0], y.shape[0]
    pooled = jnp.concatenate([_f32(x), _f32(y)], axis=0)
    # Distances do not change under a shift; centring first keeps
    # ||a||^2 + ||b||^2 - 2ab from cancelling catastrophically for features
    # far from the origin (identical rows would get tiny nonzero distances,
    # and a median of those a kernel that tells them apart).
    pooled = pooled - jax.lax.stop_gradient(jnp.mean(pooled, axis=0))
    # One [N+M, N+M] distance matrix serves the median and all three blocks.
    sq_dists = _pairwise_sq_distances(pooled, pooled)
    sq_dists = jnp.where(jnp.eye(n + m, dtype=bool), 0.0, sq_dists)
    if bandwidth is None:
        gamma = jnp.maximum(
            jax.lax.stop_gradient(_upper_median(sq_dists)), 1e-6)
    else:
        gamma = _f32(bandwidth)
    widths = jnp.asarray(multipliers, jnp.float32) * gamma          # [K]
    kernel = jnp.mean(jnp.exp(-sq_dists[None] / widths[:, None, None]),
                      axis=0)                                       # [P, P]
    # s^T K s with s = (1/N, ..., -1/M, ...) is exactly the three block means.
    s = jnp.concatenate([jnp.full((n,), 1.0 / n, jnp.float32),
                         jnp.full((m,), -1.0 / m, jnp.float32)])
    return jnp.sum(kernel * s[:, None] * s[None, :])


# ----------------------------------------------------------------------------
# Schedules and gradient tools.


def ramp(progress) -> Array:
    """2 / (1 + exp(-10 p)) - 1 for p = clip(progress, 0, 1): the adaptation
    losses start at weight 0, while pseudo-labels and prototypes are noise."""
    p = jnp.clip(_f32(progress), 0.0, 1.0)
    return 2.0 / (1.0 + jnp.exp(-10.0 * p)) - 1.0


@jax.custom_vjp
def _reverse(x: Array, coefficient: Array) -> Array:
    return x


def _reverse_fwd(x, coefficient):
    return x, coefficient


def _reverse_bwd(coefficient, g):
    grad = (-coefficient * _f32(g)).astype(g.dtype)
    return grad, jnp.zeros_like(coefficient)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: Array, coefficient) -> Array:
    """Identity forward; backward multiplies the gradient by -coefficient.

    Placed before an attribute head, the head learns to predict the attribute
    while the features below learn to hide it (attribute suppression).  The
    coefficient receives a zero gradient.
    """
    return _reverse(x, _f32(coefficient))
