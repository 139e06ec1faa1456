"""Config transformations shared by configs/ files and the entry point."""

from __future__ import annotations

import ml_collections

ADAPTATION_WEIGHTS = ("w_cor", "w_cd", "w_ca", "w_mmd")


def adapts(config) -> bool:
    """True when any loss reads target data."""
    return any(config.loss[w] > 0 for w in ADAPTATION_WEIGHTS)


def source_only(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The same run with every target-side loss switched off."""
    config = ml_collections.ConfigDict(config.to_dict())
    for weight in ADAPTATION_WEIGHTS:
        config.loss[weight] = 0.0
    config.compare_source_only = False
    return config


def with_fold(config: ml_collections.ConfigDict, fold: int) -> ml_collections.ConfigDict:
    """The single-corpus config of one speaker fold."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.fold = fold
    return config
