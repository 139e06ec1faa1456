"""The classical anchor: openSMILE eGeMAPSv02 functionals + logistic regression.

What a user would otherwise pick (Eyben et al. 2016): 88 utterance-level
functionals of pitch, loudness, voice quality and spectral shape, each corpus
z-normalised with its own statistics (no labels needed), and a logistic
regression.  Two figures per corpus pair:

* cross-corpus: trained on every source utterance, scored on the target;
* in-corpus (the ceiling): the target corpus alone, one speaker left out at a
  time (``LeaveOneGroupOut``), so no speaker is both trained and tested on.

Both are UAR (balanced accuracy) over the task's classes.  Functionals are
computed once per corpus from the audio the prepared dataset was built from,
and cached.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.preprocessing import StandardScaler

from data_prep import files
from data_prep.dataset import PreparedCorpus


def corpus_functionals(corpus: PreparedCorpus, cache_dir: str) -> dict:
    """``{'x' [N, 88], 'emotion' [N] names, 'speaker' [N]}`` of every
    utterance of ``corpus``, cached as ``cache_dir/<corpus>.npz``."""
    path = os.path.join(cache_dir, f"{corpus.name}.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            return {k: cached[k] for k in cached.files}
    import opensmile  # a benchmark extra: pip install -e ".[bench]"
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    data = corpus.source("all")
    root = corpus.metadata["source"]
    rows, emotions, speakers = [], [], []
    speaker_names = corpus.metadata["speakers"]
    for i in range(len(data)):
        example = data[i]
        path_i = example["path"]
        path_i = path_i.decode() if isinstance(path_i, bytes) else str(path_i)
        rows.append(smile.process_file(os.path.join(root, path_i)).to_numpy()[0])
        emotions.append(corpus.emotions[int(example["emotion"])])
        speakers.append(speaker_names[int(example["speaker"])])
    out = {"x": np.asarray(rows, np.float64), "emotion": np.asarray(emotions),
           "speaker": np.asarray(speakers)}
    os.makedirs(cache_dir, exist_ok=True)
    with files.atomic_write(path, "wb") as f:
        np.savez(f, **out)
    return out


NORMALISATIONS = ("corpus", "speaker")


def standardised(table: dict, by: str = "corpus") -> dict:
    """``table`` with its features z-scored over the whole corpus or over
    each speaker's utterances (``by``); a constant feature becomes 0."""
    if by not in NORMALISATIONS:
        raise ValueError(f"by={by!r}: one of {', '.join(NORMALISATIONS)}")
    x = np.asarray(table["x"], np.float64)
    groups = table["speaker"] if by == "speaker" else np.zeros(len(x), int)
    out = np.empty_like(x)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = StandardScaler().fit_transform(x[rows])
    return dict(table, x=out)


def _task_rows(table: dict, classes, by: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features (``by`` corpus or speaker), task labels, speakers
    of the utterances whose emotion is one of ``classes``."""
    x = standardised(table, by)["x"]
    keep = np.isin(table["emotion"], classes)
    labels = np.array([list(classes).index(e) for e in table["emotion"][keep]])
    return x[keep], labels, table["speaker"][keep]


def _classifier() -> LogisticRegression:
    return LogisticRegression(max_iter=5000)


def cross_corpus_uar(source: dict, target: dict, classes, by: str = "corpus") -> float:
    """Trained on all of ``source``, UAR on all of ``target``."""
    xs, ys, _ = _task_rows(source, classes, by)
    xt, yt, _ = _task_rows(target, classes, by)
    return float(balanced_accuracy_score(yt, _classifier().fit(xs, ys).predict(xt)))


def in_corpus_uar(table: dict, classes, by: str = "corpus") -> float:
    """Leave-one-speaker-out UAR within one corpus (predictions pooled).
    Per speaker, the held-out speaker is standardised with its own unlabelled
    utterances, as a new speaker of a deployed system would be."""
    x, y, speakers = _task_rows(table, classes, by)
    predicted = np.empty_like(y)
    for train, test in LeaveOneGroupOut().split(x, y, speakers):
        predicted[test] = _classifier().fit(x[train], y[train]).predict(x[test])
    return float(balanced_accuracy_score(y, predicted))
