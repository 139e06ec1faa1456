"""The Emo-DNA training objective over one global batch.

Pure arrays in, loss out: this module knows the weights and how the losses of
``losses.py`` combine (docs/losses.md), and nothing about devices; the step
hands it the gathered global batch (docs/losses.md, section 8).

Total:  L_cls + w_cor L_cor
        + r(t) (w_cd L_cd + w_ca L_ca + w_con L_con + w_div L_div + w_mmd L_mmd)
        + w_dann L_dann + sum over MSAC attributes of w_a L_a,
where L_dann (the DANN baseline) is ramped by its gradient reversal instead.
A zero weight removes its loss from the compiled graph (weights are static).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax
import jax
import jax.numpy as jnp

from emodna_jax import losses
from emodna_jax import msac


# The weights of the losses that read target data: any of them above 0 makes
# training adaptive (target batches run through the model).
TARGET_LOSS_WEIGHTS = ("w_cor", "w_cd", "w_ca", "w_mmd", "w_dann", "w_consistency",
                       "w_diversity")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Static settings of the objective (hashable: part of the compiled step).

    No defaults here: ``experiment.objective_config`` fills every field from the
    config entry of the same name, so configs/default.py is the one place a
    default lives.  The losses behind each field are defined in
    docs/losses.md; the safeguards (``adapt_start``, ``threshold_floor``,
    ``pseudo_agreement``) in its section 4.
    """
    num_classes: int
    total_steps: int
    classifier: str              # 'linear' or 'am' (additive margin)
    label_smoothing: float
    am_scale: float
    am_margin: float
    w_cor: float
    w_cd: float
    w_ca: float
    w_pseudo: float
    w_mmd: float
    w_dann: float
    w_consistency: float
    w_diversity: float
    temperature_cd: float
    temperature_ca: float
    threshold_momentum: float
    prototype_momentum: float
    mmd_multipliers: tuple
    use_ramp: bool
    adapt_start: float
    threshold_floor: float
    pseudo_agreement: bool
    cluster_labels: bool         # pseudo-labels from the target bank's clusters
    cluster_agreement: bool      # AdaptState.class_groups shape L_div's bins
    # MSAC: (name, control, weight) per controlled attribute, control one of
    # msac.CONTROLS, and the largest suppression
    # coefficient (reached by the ramp).
    attributes: tuple
    grl_max: float

    @property
    def needs_pseudo_labels(self) -> bool:
        return self.w_cd > 0 or self.w_ca > 0 or self.w_consistency > 0

    @property
    def uses_target(self) -> bool:
        """False for source-only training: target batches are never run."""
        return (any(getattr(self, w) > 0 for w in TARGET_LOSS_WEIGHTS)
                or any(name == "corpus" for name, _, _ in self.attributes))

    @property
    def source_attributes(self) -> tuple:
        """Attributes whose labels come with the source batch."""
        return tuple(name for name, _, _ in self.attributes if name != "corpus")


def _progress(cfg: ObjectiveConfig, step) -> jax.Array:
    """The share of training done at ``step``: what every schedule reads."""
    return jnp.asarray(step, jnp.float32) / max(cfg.total_steps, 1)


def grl_coefficient(cfg: ObjectiveConfig, step) -> jax.Array:
    """Suppression strength at ``step``: grl_max * ramp (as in DANN); the
    gradient-reversal coefficient, or the centroid alignment's factor."""
    return cfg.grl_max * losses.ramp(_progress(cfg, step))


def domain_coefficient(cfg: ObjectiveConfig, step) -> jax.Array:
    """DANN's reversal strength at ``step``: 2 / (1 + exp(-10 p)) - 1 (Ganin
    et al. 2016), so the discriminator is learnt before it is fought."""
    return losses.ramp(_progress(cfg, step))


def adaptation_ramp(cfg: ObjectiveConfig, step) -> jax.Array:
    """r(t) of the target losses: 0 during the source-only warm-up (the first
    ``adapt_start`` of training), then the sigmoid ramp over the rest."""
    if not cfg.use_ramp:
        return jnp.float32(1.0)
    return losses.ramp((_progress(cfg, step) - cfg.adapt_start) / (1.0 - cfg.adapt_start))


def select_pseudo_labels(cfg: ObjectiveConfig, probs: jax.Array,
                         z_target: jax.Array, adapt: "AdaptState"):
    """(confident [B], pseudo-labels [B]) of target rows: the adaptive
    class-wise thresholds of ``adapt`` (floored at ``threshold_floor``) on
    ``probs``, and, with ``pseudo_agreement``, the nearest source prototype of
    ``z_target`` must name the same class.  Training and evaluation's
    diagnostics both select with this."""
    confident, pseudo = losses.confidence_mask(probs, adapt.tau_g, adapt.p_tilde,
                                               floor=cfg.threshold_floor)
    if cfg.pseudo_agreement:
        confident &= losses.prototype_agreement(z_target, adapt.prototypes, pseudo)
    return confident, pseudo


def clustered_pseudo_labels(clustered):
    """(confident, pseudo-labels) of rows whose cluster labels are
    ``clustered`` (-1: not clustered yet).  Every clustered row counts, as
    in SHOT: the clusters, not a confidence threshold, correct the classifier.
    Training and evaluation's diagnostics both read them with this."""
    return clustered >= 0, jnp.maximum(clustered, 0)


@flax.struct.dataclass
class AdaptState:
    """Statistics the objective carries between steps (all global-batch)."""
    tau_g: jax.Array        # EMA of the mean max target probability
    p_tilde: jax.Array      # [C] EMA of the mean target class probabilities
    prototypes: jax.Array   # [C, D] EMA of normalised source emotion features
    # loss.cluster_agreement, decided at the first clustering
    # (cluster_labels.agreement): [C] whether each class's cluster agreed
    # with the classifier, and [C] the group whose diversity bin it joins
    # (arange(C) until then); None when not used.
    cluster_agrees: Optional[jax.Array] = None
    class_groups: Optional[jax.Array] = None

    @classmethod
    def create(cls, num_classes: int, feature_dim: int,
               agreement: bool = False) -> "AdaptState":
        """``agreement``: with ``loss.cluster_agreement``.  The cluster labels
        themselves live outside the state (emodna_jax/target_bank.py), so its
        shape does not depend on the target's size."""
        tau_g, p_tilde = losses.init_threshold_state(num_classes)
        return cls(jnp.asarray(tau_g, jnp.float32),
                   jnp.asarray(p_tilde, jnp.float32),
                   losses.init_prototypes(num_classes, feature_dim),
                   jnp.ones((num_classes,), bool) if agreement else None,
                   jnp.arange(num_classes, dtype=jnp.int32) if agreement else None)


def _classifier_logits(cfg: ObjectiveConfig, logits: jax.Array) -> jax.Array:
    """Logits whose softmax is the model's class posterior."""
    return losses.posterior_logits(logits, cfg.classifier, cfg.am_scale)


def _training_logits(cfg: ObjectiveConfig, logits: jax.Array,
                     labels: jax.Array) -> jax.Array:
    """Logits a classification loss is taken on: with the margin under 'am'."""
    if cfg.classifier == "am":
        return losses.additive_margin_logits(
            logits, labels, scale=cfg.am_scale, margin=cfg.am_margin)
    return logits


def _prediction_histogram(cfg: ObjectiveConfig, target_logits: jax.Array) -> dict:
    """Share of the target batch predicted as each class, and the entropy of
    that histogram (ln C when balanced, 0 when one class takes everything):
    confirmation bias shows here while it happens."""
    predicted = jnp.argmax(target_logits, -1)
    shares = jnp.mean(jax.nn.one_hot(predicted, cfg.num_classes,
                                     dtype=jnp.float32), axis=0)
    entropy = -jnp.sum(jnp.where(shares > 0, shares * jnp.log(
        jnp.where(shares > 0, shares, 1.0)), 0.0))
    out = {f"target_predicted_{k}": shares[k] for k in range(cfg.num_classes)}
    out["target_prediction_entropy"] = entropy
    return out


def objective(cfg: ObjectiveConfig, outputs: dict, source_labels: jax.Array,
              adapt: AdaptState, step: jax.Array,
              attribute_labels: dict | None = None,
              target_cluster: jax.Array | None = None):
    """Loss of one global batch.

    Args:
      cfg: static settings.
      outputs: model outputs for the concatenated batch [source; target]
        (``logits``, ``corpus_logits``, ``e``, ``z_e``, ``z_c``), 2N rows, or
        N rows (source only) when ``cfg.uses_target`` is False; with
        ``w_consistency``, also ``strong_logits``: [N] target rows' logits
        of their strong view.
      source_labels: [N] task labels of the source rows.
      adapt: threshold and prototype state before this step.
      step: the step number (for the ramp).
      attribute_labels: [N] source labels of each MSAC source attribute.
      target_cluster: [N] the target rows' cluster labels (-1: none), with
        ``cluster_labels``.

    Returns:
      ``(loss, (new_adapt, metrics))``.
    """
    n = source_labels.shape[0]
    logits_s = outputs["logits"][:n]
    l_cls = losses.cross_entropy(
        _training_logits(cfg, logits_s, source_labels), source_labels,
        label_smoothing=cfg.label_smoothing)
    accuracy = jnp.mean(jnp.argmax(logits_s, -1) == source_labels)
    metrics = {"loss_cls": l_cls, "source_accuracy": accuracy}
    total = l_cls
    if cfg.attributes:
        total += msac.attribute_losses(cfg.attributes, outputs, n,
                                       attribute_labels or {},
                                       grl_coefficient(cfg, step), metrics)
    new_adapt = adapt
    if not cfg.uses_target:
        metrics["loss"] = total
        return total, (new_adapt, metrics)

    corpus = jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)])
    metrics.update(_prediction_histogram(cfg, outputs["logits"][n:]))
    if cfg.w_dann > 0:
        # Not ramped here: the reversal in the model carries DANN's schedule,
        # and the discriminator itself should learn from the first step.
        l_dann = losses.cross_entropy(outputs["domain_logits"], corpus)
        total += cfg.w_dann * l_dann
        metrics["loss_dann"] = l_dann
        metrics["domain_accuracy"] = jnp.mean(
            jnp.argmax(outputs["domain_logits"], -1) == corpus)
    if cfg.w_cor > 0:
        l_cor = losses.cross_entropy(outputs["corpus_logits"], corpus)
        total += cfg.w_cor * l_cor
        metrics["loss_cor"] = l_cor

    metrics["ramp"] = ramp = adaptation_ramp(cfg, step)
    adaptation = jnp.float32(0.0)

    if cfg.w_ca > 0 or (cfg.needs_pseudo_labels and cfg.pseudo_agreement):
        sums, counts = losses.class_sums(
            jax.lax.stop_gradient(outputs["z_e"][:n]), source_labels,
            cfg.num_classes)
        prototypes = losses.update_prototypes(
            adapt.prototypes, sums, counts, momentum=cfg.prototype_momentum)
        new_adapt = new_adapt.replace(prototypes=prototypes)

    if cfg.needs_pseudo_labels:
        probs_t = jax.nn.softmax(jax.lax.stop_gradient(
            _classifier_logits(cfg, outputs["logits"][n:])))
        tau_g, p_tilde = losses.update_threshold_state(
            adapt.tau_g, adapt.p_tilde, probs_t,
            momentum=cfg.threshold_momentum)
        new_adapt = new_adapt.replace(tau_g=tau_g, p_tilde=p_tilde)
        confident, pseudo = select_pseudo_labels(
            cfg, probs_t, jax.lax.stop_gradient(outputs["z_e"][n:]), new_adapt)
        if cfg.cluster_labels:
            confident, pseudo = clustered_pseudo_labels(target_cluster)
            # The bank's entries (emodna_jax/target_bank.py): each target
            # row's posterior logits, read back by the host.
            metrics["bank_logits"] = _classifier_logits(
                cfg, jax.lax.stop_gradient(outputs["logits"][n:])).astype(jnp.float32)
        metrics.update(tau_g=tau_g, confident_fraction=jnp.mean(confident))

    if cfg.w_cd > 0:
        l_cd = losses.decoupling_loss(
            outputs["z_e"], outputs["z_c"],
            jnp.concatenate([source_labels, pseudo]),
            jnp.concatenate([jnp.ones(n, bool), confident]), corpus,
            num_classes=cfg.num_classes, temperature=cfg.temperature_cd)
        adaptation += cfg.w_cd * l_cd
        metrics["loss_cd"] = l_cd

    if cfg.w_ca > 0:
        l_proto = losses.class_alignment_loss(
            outputs["z_e"][n:], pseudo, confident, prototypes,
            temperature=cfg.temperature_ca)
        l_ca = l_proto
        if cfg.w_pseudo > 0:
            l_pseudo = losses.cross_entropy(
                _training_logits(cfg, outputs["logits"][n:], pseudo), pseudo,
                mask=confident)
            l_ca += cfg.w_pseudo * l_pseudo
        else:
            l_pseudo = jnp.float32(0.0)
        adaptation += cfg.w_ca * l_ca
        metrics.update(loss_ca=l_ca, loss_proto=l_proto, loss_pseudo=l_pseudo)

    if cfg.w_consistency > 0:
        # FixMatch/FreeMatch: the label comes from the plain view, the
        # gradient from the strong one, so the classifier learns what the
        # target's confident utterances keep under masking and warping
        # instead of re-fitting its own posteriors.
        l_con = losses.cross_entropy(
            _training_logits(cfg, outputs["strong_logits"], pseudo), pseudo,
            mask=confident)
        adaptation += cfg.w_consistency * l_con
        metrics["loss_consistency"] = l_con

    if cfg.w_diversity > 0:
        l_div = losses.prediction_diversity(
            _classifier_logits(cfg, outputs["logits"][n:]),
            groups=adapt.class_groups if cfg.cluster_agreement else None)
        adaptation += cfg.w_diversity * l_div
        metrics["loss_diversity"] = l_div

    if cfg.w_mmd > 0:
        l_mmd = losses.mmd2(outputs["e"][:n].astype(jnp.float32),
                            outputs["e"][n:].astype(jnp.float32),
                            multipliers=cfg.mmd_multipliers)
        adaptation += cfg.w_mmd * l_mmd
        metrics["loss_mmd"] = l_mmd

    total += ramp * adaptation
    metrics["loss"] = total
    return total, (new_adapt, metrics)
