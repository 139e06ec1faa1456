"""Backbones and heads as Flax Linen modules.

``BACKBONES`` maps a config's backbone name to its encoder class; every
encoder takes ``(frames [B, T, F], mask [B, T], *, train)`` and returns
``h [B, H]``, independent of how much padding each utterance has.
"""

from emodna_jax.models.cnn import CNN
from emodna_jax.models.emodna import BACKBONES, EmoDNAModel
from emodna_jax.models.tim import TIMNet

__all__ = ["BACKBONES", "CNN", "EmoDNAModel", "TIMNet",
           "create_model"]


def create_model(model_config, *, num_classes: int, num_corpora: int = 2,
                 bn_axis_name: str | None = None,
                 attribute_heads: dict | None = None,
                 domain_discriminator: bool = False,
                 num_tracks: int = 0) -> EmoDNAModel:
    """The model a config's ``model`` section describes.

    ``attribute_heads``: MSAC heads, name -> (number of values, suppress).
    ``num_tracks``: per-frame tracks after the bands of each frame
    (``FeatureConfig.num_tracks``); the CNN keeps them out of its
    convolutions, TIM-Net reads every value of a frame alike.
    """
    import jax.numpy as jnp
    if model_config.backbone == "tim":
        backbone_kwargs = {"features": model_config.channels,
                           "num_blocks": model_config.num_blocks}
    else:
        backbone_kwargs = {"channels": tuple(model_config.cnn_channels),
                           "attention_dim": model_config.attention_dim,
                           "num_tracks": num_tracks}
    return EmoDNAModel(
        num_classes=num_classes, num_corpora=num_corpora,
        backbone=model_config.backbone, backbone_kwargs=backbone_kwargs,
        projection_dim=model_config.projection_dim,
        hidden_dim=model_config.get("hidden_dim", 2 * model_config.projection_dim),
        classifier=model_config.classifier,
        dropout_rate=model_config.dropout_rate, bn_axis_name=bn_axis_name,
        dtype=jnp.dtype(model_config.compute_dtype),
        attribute_heads=attribute_heads or None,
        domain_discriminator=domain_discriminator)
