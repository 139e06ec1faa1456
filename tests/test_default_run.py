"""The Quickstart's claim: on the built-in synthetic pair, at the default seed,
Emo-DNA's target UAR is above that of the same model trained on the source
alone.  The whole default config runs (the synthetic build, 400 steps of each
method, evaluation of every checkpoint) on one device, as on a user's CPU."""

from configs import default
from emodna_jax import config_variants, train


def test_default_run_puts_emodna_ahead_of_source_only(tmp_path):
    config = default.get_config()
    config.data.data_dir = str(tmp_path / "data")
    config.num_devices = 1
    emodna = train.train_and_evaluate(config, str(tmp_path / "emodna"))
    baseline = train.train_and_evaluate(config_variants.source_only(config),
                                        str(tmp_path / "source_only"))
    # The README's figures at this seed are 0.918 against 0.855; a change that
    # cost the adaptation its lead fails here.
    assert emodna["target_uar"] > baseline["target_uar"] + 0.02, (emodna, baseline)
