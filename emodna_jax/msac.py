"""Multiple Speech Attribute Control (MSAC-SERNet): all of it, in one place.

Besides emotion, the shards record each utterance's speaker, gender and
corpus.  MSAC-SERNet attaches a classifier head per attribute to the
backbone's embedding h (the features the emotion branch is built on): a
*kept* attribute is learned as an auxiliary task (it helps the emotion
features stay fine-grained), a *suppressed* one is shed by h: by aligning
its per-value centroids of h (the default) or by a gradient reversal into
its head (docs/losses.md explains both, and why alignment is the default).
The labels come from the shards, so no new preparation is needed; an
attribute the corpus does not record is a config error.

This module holds the attribute specs a config asks for, the heads the model
attaches (``attribute_outputs``), their losses (``attribute_losses``) and
their learning-rate multiplier (``scale_head_updates``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from data_prep.labels import GENDERS
from emodna_jax import losses
from emodna_jax.models.layers import BatchNorm, ProjectionMLP

ATTRIBUTES = ("speaker", "gender", "corpus")
MODES = ("off", "keep", "suppress")
# What the model does with an attribute: learn it as an auxiliary task, or
# suppress it by gradient reversal or by aligning its per-value centroids of h.
CONTROLS = ("keep", "reverse", "align")
# How a suppressed attribute is shed -> the model's head control.
SUPPRESS_BY = {"alignment": "align", "reversal": "reverse"}
UNKNOWN_GENDER = GENDERS.index("unknown")


@dataclasses.dataclass(frozen=True)
class AttributeSpec:
    name: str
    mode: str          # 'keep' or 'suppress'
    weight: float
    num_values: int
    suppress_by: str = "alignment"

    @property
    def control(self) -> str:
        """'keep', 'reverse' or 'align' (``CONTROLS``)."""
        return "keep" if self.mode == "keep" else SUPPRESS_BY[self.suppress_by]


def validate_modes(msac_config):
    """Config-only checks (modes and weights), before any data is opened."""
    for name in ATTRIBUTES:
        mode = msac_config[name]
        if mode not in MODES:
            raise ValueError(f"config.msac.{name}: must be one of {list(MODES)}, "
                             f"got {mode!r}")
        if msac_config[f"{name}_weight"] < 0:
            raise ValueError(f"config.msac.{name}_weight: must be >= 0")
    if msac_config.suppress_by not in SUPPRESS_BY:
        raise ValueError(f"config.msac.suppress_by: must be one of "
                         f"{sorted(SUPPRESS_BY)}, got {msac_config.suppress_by!r}")
    if msac_config.grl_max < 0:
        raise ValueError("config.msac.grl_max: must be >= 0")
    if msac_config.head_lr_multiplier <= 0:
        raise ValueError("config.msac.head_lr_multiplier: must be > 0")


def attribute_specs(config, source) -> list[AttributeSpec]:
    """The controlled attributes, checked against the source corpus.

    Raises ValueError naming the attribute when the corpus cannot provide it.
    """
    validate_modes(config.msac)
    metadata = source.corpus.metadata
    specs = []
    for name in ATTRIBUTES:
        mode = config.msac[name]
        if mode == "off":
            continue
        if name == "speaker":
            num_values = len(metadata["speakers"])
            if num_values < 2:
                raise ValueError(f"config.msac.speaker: {source.corpus.name} has "
                                 f"{num_values} speaker; speaker control needs 2+")
        elif name == "gender":
            known = {g for g in metadata["speaker_gender"].values() if g != "unknown"}
            if not known:
                raise ValueError(f"config.msac.gender: {source.corpus.name} records "
                                 "no speaker gender")
            num_values = len(GENDERS)
        else:
            if config.data.protocol != "cross_corpus":
                raise ValueError("config.msac.corpus: corpus control needs two "
                                 "corpora (config.data.protocol='cross_corpus')")
            num_values = 2
        specs.append(AttributeSpec(name, mode, config.msac[f"{name}_weight"],
                                   num_values, config.msac.suppress_by))
    return specs


def model_heads(specs) -> dict:
    """name -> (number of values, control) for ``EmoDNAModel.attribute_heads``."""
    return {s.name: (s.num_values, s.control) for s in specs}


def objective_entries(specs) -> tuple:
    """(name, control, weight) triples for ``ObjectiveConfig.attributes``."""
    return tuple((s.name, s.control, s.weight) for s in specs)


# -- the model's heads --------------------------------------------------------


def attribute_outputs(name: str, num_values: int, control: str, h: jax.Array, *,
                      hidden_dim: int, bn_axis_name: str | None, train: bool,
                      grl_coefficient) -> dict:
    """The head of one attribute, built inside the model's ``__call__`` (so
    its layers are the model's ``<name>_input_norm`` and ``<name>_head``).

    Returns ``attr_<name>`` logits; for 'align' in training also
    ``attr_<name>_features``, the standardised h the objective aligns.
    """
    if control not in CONTROLS:
        raise ValueError(f"attribute control of {name!r} must be one of "
                         f"{CONTROLS}, got {control!r}")
    # Standardised per feature over the batch: the head then learns at the
    # pace of a linear probe whatever the scale of h, and the alignment
    # cannot be met by shrinking h.
    x = BatchNorm(axis_name=bn_axis_name, use_scale_bias=False,
                  name=f"{name}_input_norm")(h.astype(jnp.float32)[:, None], train=train)[:, 0]
    head = ProjectionMLP(hidden_dim, num_values, name=f"{name}_head")
    if control == "keep":
        return {f"attr_{name}": head(x)}
    if control == "reverse":
        return {f"attr_{name}": head(losses.gradient_reversal(x, grl_coefficient))}
    # 'align': the head only monitors what is left (detached input).
    outputs = {f"attr_{name}": head(jax.lax.stop_gradient(x))}
    if train:
        outputs[f"attr_{name}_features"] = x
    return outputs


# -- their losses ---------------------------------------------------------------


def attribute_losses(attributes: tuple, outputs: dict, n: int, attribute_labels: dict,
                     suppression: jax.Array, metrics: dict) -> jax.Array:
    """The weighted losses of every controlled attribute head.

    ``attributes``: (name, control, weight) triples (``objective_entries``);
    ``n``: source rows (the first n of ``outputs``); ``suppression``: the
    scheduled coefficient of the centroid alignment.  Speaker and gender are
    source attributes (rows of unknown gender are masked out); 'corpus' is
    predicted on every row.  Every head learns its attribute by
    cross-entropy; under 'keep' and 'reverse' the model decides whether the
    features keep or shed it, under 'align' the head only monitors and the
    features are trained by the centroid alignment (docs/losses.md, section 9).
    """
    total = jnp.float32(0.0)
    for name, control, weight in attributes:
        if name == "corpus":
            labels = jnp.concatenate([jnp.zeros(n, jnp.int32), jnp.ones(n, jnp.int32)])
            mask, rows = None, slice(None)
        else:
            labels = attribute_labels[name]
            mask = labels != UNKNOWN_GENDER if name == "gender" else None
            rows = slice(0, n)
        logits = outputs[f"attr_{name}"][rows]
        loss = losses.cross_entropy(logits, labels, mask=mask)
        total += weight * loss
        metrics[f"loss_attr_{name}"] = loss
        metrics[f"{name}_accuracy"] = losses.masked_mean(
            (jnp.argmax(logits, -1) == labels).astype(jnp.float32), mask)
        if control == "align":
            features = outputs[f"attr_{name}_features"][rows]
            alignment = losses.centroid_alignment(
                features, labels, logits.shape[-1], mask=mask)
            total += weight * suppression * alignment
            metrics[f"loss_align_{name}"] = alignment
    return total


# -- their learning rate --------------------------------------------------------


def scale_head_updates(tx: optax.GradientTransformation,
                       multiplier: float) -> optax.GradientTransformation:
    """``tx`` with the updates of the attribute heads times ``multiplier``:
    an adversary must keep up with the features it is reversed into, so the
    heads may learn faster than the rest (as DANN discriminators do)."""
    if multiplier == 1.0:
        return tx
    is_head = lambda params: {k: jax.tree.map(lambda _: k.endswith("_head"), v)  # noqa: E731
                              for k, v in params.items()}
    return optax.chain(tx, optax.masked(optax.scale(multiplier), is_head))
