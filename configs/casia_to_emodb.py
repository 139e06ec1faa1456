r"""Emo-DNA, CASIA (Mandarin) -> EmoDB (German).

Prepare both corpora once, then train:

  python -m data_prep --corpus=casia --raw_dir=/data/CASIA
  python -m data_prep --corpus=emodb --raw_dir=/data/EmoDB
  python -m emodna_jax.main --config=configs/casia_to_emodb.py --workdir=/tmp/casia_emodb

The task uses the five emotions both corpora share.  EmoDB's boredom and
disgust and CASIA's surprise stay out of training and form the OOD set.
That is ``configs/cross_corpus.py:casia,emodb,size=full`` with the class
list fixed, whatever else either corpus holds.
"""

from configs import cross_corpus


def get_config():
    config = cross_corpus.get_config("casia,emodb,size=full")
    config.data.classes = ("angry", "fear", "happy", "neutral", "sad")
    return config
