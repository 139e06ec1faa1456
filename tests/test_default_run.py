"""The Quickstart's config runs end to end: the synthetic build, training with
every loss, checkpointing and evaluation, on one device as on a user's CPU.
A short run: whether Emo-DNA then beats source-only is an experiment, measured
by benchmarks/default_run.py (its table is in docs/speed.md)."""

import math
import os

from configs import default
from emodna_jax import train
import pytest

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow


def test_default_config_builds_trains_and_evaluates(tmp_path):
    config = default.get_config()
    config.data.data_dir = str(tmp_path / "data")
    config.num_devices = 1
    config.steps = config.checkpoint_every = config.eval_every = 6
    result = train.train_and_evaluate(config, str(tmp_path / "emodna"))
    for key in ("target_uar", "target_war", "source_val_uar"):
        assert 0.0 <= result[key] <= 1.0 and math.isfinite(result[key]), result
    assert os.listdir(tmp_path / "emodna" / "checkpoints") == ["6"]
