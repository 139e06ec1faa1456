"""Multiple Speech Attribute Control (MSAC): which attributes, and how.

Besides emotion, the shards record each utterance's speaker, gender and
corpus.  MSAC-SERNet attaches a classifier head per attribute to the
backbone's embedding h (the features the emotion branch is built on): a
*kept* attribute is learned as an auxiliary task (it helps the emotion
features stay fine-grained), a *suppressed* one is shed by h: by aligning
its per-value centroids of h (the default) or by a gradient reversal into
its head (docs/losses.md explains both, and why alignment is the default).
The labels come from the shards, so no new preparation is needed; an
attribute the corpus does not record is a config error.
"""

from __future__ import annotations

import dataclasses

from data_prep.labels import GENDERS

ATTRIBUTES = ("speaker", "gender", "corpus")
MODES = ("off", "keep", "suppress")
# How a suppressed attribute is shed -> the model's head control.
SUPPRESS_BY = {"alignment": "align", "reversal": "reverse"}


@dataclasses.dataclass(frozen=True)
class AttributeSpec:
    name: str
    mode: str          # 'keep' or 'suppress'
    weight: float
    num_values: int
    suppress_by: str = "alignment"

    @property
    def control(self) -> str:
        """'keep', 'reverse' or 'align' (models.emodna.ATTRIBUTE_CONTROLS)."""
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
