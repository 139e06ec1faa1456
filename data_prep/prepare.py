"""One call from a corpus name to a built dataset: parse, extract, write.

Shared by the command line (``python -m data_prep``) and the trainer, which
builds the synthetic pair itself when the default config finds it missing.
"""

from __future__ import annotations

import os

from data_prep import builder
from data_prep import corpora
from data_prep import synthetic
from data_prep.features import FeatureConfig

SYNTHETIC = "synthetic"


def default_data_dir() -> str:
    return os.environ.get("EMODNA_DATA_DIR",
                          os.path.join(os.path.expanduser("~"), "emodna_data"))


def dataset_name(corpus: str, manifest: str | None = None,
                 name: str | None = None) -> str:
    """The dataset's name: ``name`` if given, else the corpus (or manifest stem)."""
    if name:
        return name
    if corpus == "csv":
        if not manifest:
            raise ValueError("--corpus=csv needs --manifest=PATH")
        return os.path.splitext(os.path.basename(manifest))[0]
    return corpus


def prepare_corpus(corpus: str, *, data_dir: str, feature_config: FeatureConfig,
                   raw_dir: str | None = None, manifest: str | None = None,
                   name: str | None = None, overwrite: bool = False,
                   parser_options: dict | None = None,
                   **build_options) -> dict[str, builder.BuildResult]:
    """Builds ``corpus`` (or, for 'synthetic', the synthetic pair).

    A complete dataset already in ``data_dir`` is reused without reading any
    audio unless ``overwrite``.  ``build_options`` go to
    :func:`builder.build_corpus` (workers, strict, num_folds, ...).

    Returns:
      dataset name -> :class:`builder.BuildResult`.
    """
    if corpus == SYNTHETIC:
        raw_dir = raw_dir or os.path.join(data_dir, "synthetic_raw")
        manifests = synthetic.generate_default_pair(raw_dir, overwrite=overwrite)
        return {
            synth_name: _build(synth_name, "csv", data_dir, feature_config,
                               overwrite, manifest=str(synth_manifest),
                               build_options=build_options)
            for synth_name, synth_manifest in manifests.items()}
    name = dataset_name(corpus, manifest, name)
    return {name: _build(name, corpus, data_dir, feature_config, overwrite,
                         raw_dir=raw_dir, manifest=manifest,
                         parser_options=parser_options,
                         build_options=build_options)}


def _build(name, corpus, data_dir, feature_config, overwrite, *, raw_dir=None,
           manifest=None, parser_options=None, build_options):
    final = builder.dataset_dir(data_dir, name, feature_config)
    if builder.is_complete(final) and not overwrite:
        return builder.BuildResult(final, builder.read_metadata(final)["summary"],
                                   reused=True)
    if corpus == "csv":
        records, skipped = corpora.parse_csv(manifest, name=name)
        root = os.path.dirname(os.path.abspath(manifest))
    else:
        records, skipped = corpora.parse_corpus(
            corpus, raw_dir=raw_dir, **(parser_options or {}))
        root = os.path.abspath(raw_dir)
    return builder.build_corpus(
        records, corpus=name, root=root, data_dir=data_dir,
        feature_config=feature_config, parse_skipped=skipped,
        overwrite=overwrite, **build_options)
