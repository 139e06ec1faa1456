r"""Turns a raw emotional-speech corpus into TFDS array_record shards.

  python -m data_prep --corpus=emodb --raw_dir=/data/EmoDB --data_dir=~/emodna_data
  python -m data_prep --corpus=csv --manifest=my_corpus.csv
  python -m data_prep --corpus=synthetic          # the built-in pair
"""

from __future__ import annotations

import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from data_prep import corpora
from data_prep import prepare
from data_prep import summary as summary_lib
from data_prep.extract import StrictModeError
from data_prep.features import FEATURE_KINDS, FeatureConfig

_CORPORA = sorted(corpora.PARSERS) + ["csv", prepare.SYNTHETIC]

CORPUS = flags.DEFINE_enum("corpus", None, _CORPORA, "Corpus to prepare.")
RAW_DIR = flags.DEFINE_string("raw_dir", None,
                              "The corpus's directory in its original layout.")
MANIFEST = flags.DEFINE_string(
    "manifest", None, "CSV with columns path, emotion, speaker[, gender, split].")
NAME = flags.DEFINE_string("name", None,
                           "Dataset name (default: the corpus or manifest stem).")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where datasets are written (default: $EMODNA_DATA_DIR "
    "or ~/emodna_data).")
FEATURE = flags.DEFINE_enum(
    "feature", "logmel_pitch", FEATURE_KINDS,
    "Frame features (default: log-mel bands + log F0, voicing, log energy).")
N_MELS = flags.DEFINE_integer("n_mels", 64, "Mel bands.")
FEATURE_DIM = flags.DEFINE_integer(
    "feature_dim", 0, "--feature=npy: D of the [T, D] .npy file each manifest "
    "row's path names (features computed elsewhere, e.g. WavLM).")
N_MFCC = flags.DEFINE_integer("n_mfcc", 13, "Cepstra before deltas (MFCC).")
SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000, "Resample to this rate.")
FLOAT16 = flags.DEFINE_bool("float16", False, "Store frames as float16.")
WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1,
                               "Feature-extraction processes.")
FOLDS = flags.DEFINE_integer(
    "folds", None, "Speaker-independent folds (default min(5, speakers); 0: none).")
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", 0.2, "Share of speakers in the validation split.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the validation-speaker draw.")
STRICT = flags.DEFINE_bool(
    "strict", False, "Fail on any problem file instead of skipping or converting.")
OVERWRITE = flags.DEFINE_bool("overwrite", False,
                              "Rebuild even if a complete dataset exists.")
MERGE_EXCITED = flags.DEFINE_bool("iemocap_merge_excited", True,
                                  "IEMOCAP: count 'excited' as 'happy'.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if CORPUS.value is None:
        raise app.UsageError(f"--corpus is required; one of {', '.join(_CORPORA)}")
    try:
        feature_config = FeatureConfig(
            kind=FEATURE.value, sample_rate=SAMPLE_RATE.value, n_mels=N_MELS.value,
            n_mfcc=N_MFCC.value, dtype="float16" if FLOAT16.value else "float32",
            npy_dim=FEATURE_DIM.value)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    options = {"merge_excited": MERGE_EXCITED.value} if CORPUS.value == "iemocap" else {}
    logging.set_verbosity(logging.ERROR)  # TFDS logs every split it writes
    data_dir = os.path.expanduser(DATA_DIR.value or prepare.default_data_dir())
    def stop(signum, frame):  # SIGTERM cleans up as Ctrl-C does
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        results = prepare.prepare_corpus(
            CORPUS.value, data_dir=data_dir, feature_config=feature_config,
            raw_dir=RAW_DIR.value, manifest=MANIFEST.value, name=NAME.value,
            overwrite=OVERWRITE.value, parser_options=options,
            workers=WORKERS.value, strict=STRICT.value, num_folds=FOLDS.value,
            validation_fraction=VALIDATION_FRACTION.value, seed=SEED.value)
    except (FileNotFoundError, ValueError, StrictModeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written, any existing dataset is intact",
              file=sys.stderr)
        return 130
    for name, result in results.items():
        if result.reused:
            print(f"{name}: complete dataset found, reusing it "
                  "(--overwrite rebuilds)")
        print(summary_lib.format_summary(name, result.path, result.summary))
    return 0


if __name__ == "__main__":
    app.run(main)
