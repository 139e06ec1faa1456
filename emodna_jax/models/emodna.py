"""The Emo-DNA model: a backbone with an emotion branch and a corpus branch.

Encoder h = f(x).  The emotion branch projects h to e (classified into
emotions; its unit-norm z_e enters the contrastive, prototype and MMD losses);
the corpus branch projects h to a unit-norm z_c that a corpus classifier reads.
The losses (``emodna_jax/losses.py``) decouple the two: z_e gathers by emotion
and moves away from z_c, which keeps what is corpus-specific.

Everything the losses compare (z_e, z_c, logits) is float32 whatever the
compute dtype: softmax probabilities are compared against pseudo-label
thresholds near 1 and cosines against each other, where bf16's 8-bit mantissa
is too coarse.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from emodna_jax import msac
from emodna_jax.losses import gradient_reversal, l2_normalize
from emodna_jax.models.cnn import CNN
from emodna_jax.models.layers import CosineClassifier, Dtype, ProjectionMLP
from emodna_jax.models.row_noise import RowNoise, channel_units
from emodna_jax.models.tim import TIMNet

BACKBONES = {"tim": TIMNet, "cnn": CNN}
CLASSIFIERS = ("linear", "am")
# Set by EmoDNAModel itself so that the whole model agrees on them.
_RESERVED_BACKBONE_KWARGS = ("dtype", "param_dtype", "bn_axis_name")


class EmoDNAModel(nn.Module):
    """Backbone + emotion and corpus branches.

    ``__call__(frames [B, T, F], mask [B, T], *, train)`` returns a dict:

    * ``h`` [B, H]: backbone output (compute dtype);
    * ``e`` [B, projection_dim]: emotion projection (compute dtype);
    * ``z_e`` [B, projection_dim]: unit-norm e, float32;
    * ``z_c`` [B, projection_dim]: unit-norm corpus projection of h, float32;
    * ``logits`` [B, num_classes], float32: emotion classifier on e; cosines
      in [-1, 1] for ``classifier='am'`` (the loss adds margin and scale);
    * ``corpus_logits`` [B, num_corpora], float32: corpus classifier on z_c;
    * ``domain_logits`` [B, num_corpora], float32, only with
      ``domain_discriminator``: DANN's corpus discriminator on e, behind a
      gradient reversal of strength ``domain_coefficient``.

    Attributes:
      num_classes: emotion classes.
      num_corpora: corpora the corpus classifier tells apart (>= 2).
      backbone: a key of ``BACKBONES`` ('tim' or 'cnn').
      backbone_kwargs: extra fields of the backbone (e.g. ``{'features': 39}``
        for TIM-Net, ``{'channels': (16, 32)}`` for the CNN); may set
        ``dropout_rate`` to differ from the heads'.
      projection_dim: width of e, z_e and z_c.
      hidden_dim: hidden width of both projection MLPs.
      classifier: 'linear' (Dense logits) or 'am' (cosine logits).
      dropout_rate: dropout on h before both projectors, and the backbone's
        unless ``backbone_kwargs`` sets it.
      bn_axis_name: named batch axis for cross-replica BatchNorm statistics
        (the model then runs in train mode only inside shard_map/pmap), or None.
      dtype: compute dtype of the backbone and projectors; params float32.
      attribute_heads: MSAC heads, name -> (number of values, control): an
        MLP on standardised h predicting that speech attribute (outputs
        ``attr_<name>`` logits), where control is 'keep' (auxiliary task),
        'reverse' (through a gradient reversal of strength
        ``grl_coefficient``) or 'align' (the head reads detached h and only
        monitors; in training ``attr_<name>_features``, the standardised h,
        is output for the objective's centroid alignment).
      domain_discriminator: add DANN's corpus discriminator (the DANN
        baseline, docs/losses.md section 10).
    """
    num_classes: int
    num_corpora: int = 2
    backbone: str = "tim"
    backbone_kwargs: Mapping[str, Any] | None = None
    projection_dim: int = 128
    hidden_dim: int = 256
    classifier: str = "linear"
    dropout_rate: float = 0.1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    attribute_heads: Mapping[str, Any] | None = None
    domain_discriminator: bool = False

    def __post_init__(self):
        # A hashable module can be a static argument of jax.jit; a plain dict
        # (or a list of channels from a config) would make it unhashable.
        if self.attribute_heads is not None:
            object.__setattr__(self, "attribute_heads", FrozenDict({
                name: tuple(spec) for name, spec in self.attribute_heads.items()}))
        if self.backbone_kwargs is not None:
            object.__setattr__(self, "backbone_kwargs", FrozenDict({
                k: tuple(v) if isinstance(v, list) else v
                for k, v in self.backbone_kwargs.items()}))
        super().__post_init__()

    def _make_backbone(self) -> nn.Module:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, "
                             f"got {self.backbone!r}")
        kwargs = dict(self.backbone_kwargs or {})
        reserved = sorted(set(kwargs) & set(_RESERVED_BACKBONE_KWARGS))
        if reserved:
            raise ValueError(f"backbone_kwargs may not set {reserved}; they "
                             "are fields of EmoDNAModel")
        kwargs.setdefault("dropout_rate", self.dropout_rate)
        return BACKBONES[self.backbone](
            **kwargs, bn_axis_name=self.bn_axis_name, dtype=self.dtype,
            param_dtype=jnp.float32, name="backbone")

    @nn.compact
    def __call__(self, frames: jax.Array, mask: jax.Array, *, train: bool,
                 row_keys: jax.Array | None = None,
                 grl_coefficient=1.0, domain_coefficient=1.0,
                 ) -> dict[str, jax.Array]:
        """``row_keys`` [B]: one PRNG key per row, which every dropout mask of
        a training pass is drawn from (required when ``train`` and dropout
        is on); a row's masks are then the same on any device layout."""
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, "
                             f"got {self.classifier!r}")
        if self.num_corpora < 2:
            raise ValueError(
                f"num_corpora must be >= 2, got {self.num_corpora}")
        mask = mask.astype(bool)

        backbone = self._make_backbone()
        units = backbone.dropout_units(frames.shape[-1]) + channel_units(
            self.dropout_rate, backbone.output_dim(frames.shape[-1]))
        noise = None
        if train and units:
            if row_keys is None:
                raise ValueError("a training pass with dropout needs row_keys, "
                                 "one PRNG key per row")
            noise = RowNoise(row_keys, units)
        h = backbone(frames, mask, train=train, noise=noise)
        dropped = h if noise is None else noise.dropout(h, self.dropout_rate)
        if noise is not None:
            noise.check_used()

        e = ProjectionMLP(self.hidden_dim, self.projection_dim,
                          dtype=self.dtype, name="emotion_projector")(dropped)
        z_e = l2_normalize(e)
        z_c = l2_normalize(ProjectionMLP(
            self.hidden_dim, self.projection_dim, dtype=self.dtype,
            name="corpus_projector")(dropped))

        if self.classifier == "am":
            logits = CosineClassifier(self.num_classes, name="classifier")(e)
        else:
            logits = nn.Dense(self.num_classes, dtype=jnp.float32,
                              name="classifier")(e.astype(jnp.float32))
        corpus_logits = nn.Dense(self.num_corpora, dtype=jnp.float32,
                                 name="corpus_classifier")(z_c)
        outputs = {"h": h, "e": e, "z_e": z_e, "z_c": z_c, "logits": logits,
                   "corpus_logits": corpus_logits}
        if self.domain_discriminator:
            # DANN: the discriminator learns to tell the corpora apart from e,
            # the reversed gradient trains e (and the backbone) to hide it.
            reversed_e = gradient_reversal(e.astype(jnp.float32), domain_coefficient)
            outputs["domain_logits"] = ProjectionMLP(
                self.hidden_dim, self.num_corpora,
                name="domain_discriminator")(reversed_e)
        # Multiple Speech Attribute Control: each attribute head reads the
        # standardised backbone embedding h, the representation the emotion
        # branch is built on (docs/losses.md, section 9).
        for name, (num_values, control) in sorted(
                (self.attribute_heads or {}).items()):
            outputs.update(msac.attribute_outputs(
                name, num_values, control, h, hidden_dim=self.hidden_dim,
                bn_axis_name=self.bn_axis_name, train=train,
                grl_coefficient=grl_coefficient))
        return outputs
