"""data_prep/dataset.py: the per-split columns evaluation reads its labels
and lengths from, decoded once per split."""

import numpy as np

from data_prep import dataset
from emodna_jax import input_pipeline
from tests.conftest import toy_config


def test_columns_equal_the_records_and_are_read_once(toy_data_dir, monkeypatch):
    config = toy_config(toy_data_dir)
    corpus = dataset.PreparedCorpus.find(config.data.data_dir, config.data.source,
                                         input_pipeline.feature_config(config.data))
    data = corpus.source("train")
    want = {key: np.array([int(data[i][key]) for i in range(len(data))])
            for key in ("num_frames", "emotion", "speaker")}
    opened = []
    source = dataset.PreparedCorpus.source
    monkeypatch.setattr(dataset.PreparedCorpus, "source",
                        lambda self, split: opened.append(split) or source(self, split))
    for _ in range(2):
        columns = corpus.columns("train")
        for key, values in want.items():
            np.testing.assert_array_equal(columns[key], values)
    assert opened == ["train"]
