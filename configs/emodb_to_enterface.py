r"""Emo-DNA, EmoDB (German, acted, studio) -> eNTERFACE'05 (English, induced).

Prepare both corpora once, then train:

  python -m data_prep --corpus=emodb --raw_dir=/data/EmoDB
  python -m data_prep --corpus=enterface --raw_dir=/data/eNTERFACE05
  python -m emodna_jax.main --config=configs/emodb_to_enterface.py --workdir=/tmp/emodb_enterface

The task uses the five emotions both corpora share.  eNTERFACE labels are
read only by evaluation.
That is ``configs/cross_corpus.py:emodb,enterface,size=full`` with the class
list fixed, whatever else either corpus holds.
"""

from configs import cross_corpus


def get_config():
    config = cross_corpus.get_config("emodb,enterface,size=full")
    config.data.classes = ("angry", "disgust", "fear", "happy", "sad")
    return config
