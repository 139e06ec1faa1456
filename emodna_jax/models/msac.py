"""MSAC-SERNet's backbone: a 2-D CNN over log-mel with attentive statistics
pooling.

The network of MSAC-SERNet is the compact CNN of ``cnn.py`` (conv-BN-ReLU-
max-pool blocks, frequency collapsed, attentive statistics pooling over
frames) at its own widths; what makes it MSAC-SERNet is the head: an
additive-margin softmax classifier (``model.classifier = 'am'``) and the
speech-attribute heads of ``EmoDNAModel.attribute_heads``.
"""

from __future__ import annotations

from typing import Sequence

from emodna_jax.models.cnn import CNN


class MSACSERNet(CNN):
    """The CNN with MSAC-SERNet's default widths (four blocks, 32 to 256)."""
    channels: Sequence[int] = (32, 64, 128, 256)
    attention_dim: int = 128
