"""The grain pipelines: shapes, normalisation, crops, resumable state, eval passes."""

import os

import numpy as np
import pytest

from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig
from emodna_jax import input_pipeline
from tests.conftest import toy_config

CLASSES = ["neutral", "angry", "happy"]  # 'sad' is left out of the task


@pytest.fixture(scope="module")
def tasks(toy_data_dir):
    features = FeatureConfig(n_mels=16)
    src = PreparedCorpus.find(toy_data_dir, "toy_src", features)
    tgt = PreparedCorpus.find(toy_data_dir, "toy_tgt", features)
    return (input_pipeline.TaskCorpus.create(
                src, 0, CLASSES, train_split="train", eval_split="validation",
                normalization=src.normalization("train"), std_floor=0.01),
            input_pipeline.TaskCorpus.create(
                tgt, 1, CLASSES, train_split="all", eval_split="all",
                normalization=tgt.normalization("all"), std_floor=0.01))


def dataset(tasks, **kwargs):
    options = dict(global_batch_size=4, num_frames=24, seed=3)
    options.update(kwargs)
    return input_pipeline.train_dataset(*tasks, **options)


def test_class_map_follows_the_task(tasks):
    source, _ = tasks
    assert source.corpus.emotions == ["neutral", "angry", "happy", "sad"]
    np.testing.assert_array_equal(source.class_map, [0, 1, 2, input_pipeline.EXCLUDED])


def test_train_batches_shapes_labels_and_masks(tasks):
    batch = next(iter(dataset(tasks)))
    assert batch["src_frames"].shape == (4, 24, 16)
    assert batch["tgt_frames"].shape == (4, 24, 16)
    assert "tgt_label" not in batch and set(batch) == {
        "src_frames", "src_mask", "src_label", "src_speaker", "src_gender",
        "tgt_frames", "tgt_mask", "tgt_index", "src_row", "tgt_row"}
    np.testing.assert_array_equal(batch["src_row"], np.arange(4))
    assert set(batch["src_label"]) <= {0, 1, 2}  # 'sad' never reaches training
    # Each target row carries its utterance's index (what its cluster label
    # is looked up by), and the row is that utterance's crop.
    target = tasks[1]
    data = target.corpus.source(target.train_split)
    assert batch["tgt_index"].dtype == np.int32
    assert 0 <= batch["tgt_index"].min() and batch["tgt_index"].max() < len(data)
    for row, i in enumerate(batch["tgt_index"]):
        whole = target.normalize(data[int(i)])
        assert any(np.allclose(whole[s:s + 24], batch["tgt_frames"][row])
                   for s in range(len(whole) - 23))
    # 0.5 s utterances have 51 frames: always cropped to a full 24-frame window.
    assert batch["src_mask"].all() and batch["tgt_mask"].all()


def test_short_utterances_are_padded_and_masked(tasks):
    batch = next(iter(dataset(tasks, num_frames=80)))
    np.testing.assert_array_equal(batch["src_mask"].sum(1), 51)
    assert np.all(batch["src_frames"][:, 51:] == 0)


def test_frames_are_normalised_with_their_corpus_statistics(tasks):
    source, _ = tasks
    raw = source.corpus.source("train")[0]
    out = source.example(raw, 200, None, with_label=True)
    mean, std = source.corpus.normalization("train")
    want = (raw["features"] - mean) / np.maximum(std, 0.01)
    np.testing.assert_allclose(out["frames"][:51], want, rtol=1e-5, atol=1e-5)


def test_random_crop_in_training_and_centre_crop_in_evaluation(tasks):
    source, _ = tasks
    raw = source.corpus.source("train")[0]
    full = source.example(raw, 200, None, with_label=False)["frames"][:51]
    centre = source.example(raw, 21, None, with_label=False)["frames"]
    np.testing.assert_array_equal(centre, full[15:36])
    starts = set()
    for seed in range(20):
        crop = source.example(raw, 21, np.random.default_rng(seed), False)["frames"]
        starts.add(int(np.flatnonzero((full == crop[0]).all(1))[0]))
    assert len(starts) > 5 and max(starts) <= 30


def test_iterator_state_resumes_exactly(tasks):
    iterator = iter(dataset(tasks))
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(3)]
    resumed = iter(dataset(tasks))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_each_epoch_is_a_fresh_order_of_every_utterance():
    indices = np.array([3, 5, 7, 9, 11, 13, 15])
    order = input_pipeline._Order(indices, seed=4)
    stream = order(np.arange(5 * 7))
    epochs = stream.reshape(5, 7)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), indices)
    assert len({tuple(e) for e in epochs}) > 1
    # Any positions, in any order, across epoch ends: the same utterances.
    positions = np.array([30, 6, 7, 0, 13, 14])
    np.testing.assert_array_equal(input_pipeline._Order(indices, seed=4)(positions),
                                  stream[positions])
    assert not np.array_equal(input_pipeline._Order(indices, seed=5)(np.arange(7)),
                              epochs[0])


def test_holding_a_corpus_in_memory_changes_no_batch(tasks):
    """The same seed gives the same batches whether the corpora are held in
    memory or read from the shards at every access; and a batch is a copy,
    so changing it changes nothing later."""
    held = iter(dataset(tasks, num_frames=40))
    read = iter(dataset(tasks, num_frames=40, cache_mib=0))
    for _ in range(8):   # 8 x 4 passes the 24-utterance splits' ends
        want, got = next(read), next(held)
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        got["src_frames"][:] = np.nan
        got["tgt_frames"][:] = np.nan


def test_only_a_corpus_that_fits_is_held_in_memory(tasks, monkeypatch):
    source, _ = tasks
    reads = []
    shards = source.corpus.source("train")

    class Counting:
        def __len__(self):
            return len(shards)

        def __getitem__(self, i):
            reads.append(i)
            return shards[i]

    monkeypatch.setattr(source.corpus, "source", lambda split: Counting())
    indices = np.arange(6)
    mib = source.frames_mib()
    load = input_pipeline._loader(source, "train", indices, with_label=True,
                                  cache_mib=mib)
    assert sorted(reads) == list(range(6))           # one pass, at once
    first = load(3)
    assert load(3) is first and len(reads) == 6      # then from memory
    assert set(first) == {"frames", "label", "speaker", "gender"}
    reads.clear()
    load = input_pipeline._loader(source, "train", indices, with_label=False,
                                  cache_mib=mib / 2)   # too big: read per access
    assert not reads
    assert set(load(3)) == {"frames", "index"} and reads == [3]
    assert load(3)["index"] == 3


def test_processes_read_disjoint_shares_that_make_the_global_batch(tasks):
    """Two processes' first local batches are, between them, exactly the
    one-process global batch: disjoint utterances, none missing.  Crops
    longer than every utterance make each row its whole utterance, so rows
    name utterances."""
    long = dict(global_batch_size=4, num_frames=2000)
    whole = next(iter(dataset(tasks, **long)))
    shares = [next(iter(dataset(tasks, process_index=k, process_count=2, **long)))
              for k in range(2)]
    for stream in ("src", "tgt"):
        rows = lambda batch: [r.tobytes() for r in batch[f"{stream}_frames"]]  # noqa: E731
        local = [rows(share) for share in shares]
        assert [len(r) for r in local] == [2, 2]
        assert not set(local[0]) & set(local[1])
        assert sorted(local[0] + local[1]) == sorted(rows(whole))


def test_a_rows_crop_is_the_same_whatever_process_reads_it(tasks):
    """With random crops (24 of 51 frames), each process's rows are exactly
    those rows of the one-process batch, crop included, for several
    batches: the crop is drawn for the global batch position, not for the
    process's own rows."""
    whole = iter(dataset(tasks, global_batch_size=4))
    shares = [iter(dataset(tasks, global_batch_size=4, process_index=k, process_count=2))
              for k in range(2)]
    for _ in range(3):
        want = next(whole)
        for k, share in enumerate(shares):
            got = next(share)
            for key in ("src_frames", "tgt_frames", "src_row", "tgt_row", "tgt_index"):
                np.testing.assert_array_equal(got[key], want[key][k::2], err_msg=key)


def test_eval_batches_visit_every_utterance_once(tasks):
    _, target = tasks
    batches = list(input_pipeline.eval_batches(target, "all", batch_size=6,
                                               num_frames=60))
    weights = np.concatenate([b["weight"] for b in batches])
    indices = np.concatenate([b["index"] for b in batches])[weights > 0]
    labels = np.concatenate([b["label"] for b in batches])[weights > 0]
    keep = np.flatnonzero(target.task_labels("all") != input_pipeline.EXCLUDED)
    np.testing.assert_array_equal(np.sort(indices), keep)
    assert len(indices) == 24 and set(labels) == {0, 1, 2}
    assert all(b["frames"].shape == (6, 60, 16) for b in batches)
    everything = list(input_pipeline.eval_batches(target, "all", batch_size=6,
                                                  num_frames=60, include_excluded=True))
    assert sum(b["weight"].sum() for b in everything) == 32


def test_single_corpus_protocol_holds_out_one_fold(toy_data_dir):
    config = toy_config(toy_data_dir)
    config.data.protocol = "single_corpus"
    config.data.fold = 1
    source, held_out = input_pipeline.open_task(config)
    folds = source.corpus.metadata["fold_speakers"]
    assert held_out.train_split == held_out.eval_split == "fold1"
    assert source.train_split == "+".join(f"fold{k}" for k in range(len(folds)) if k != 1)
    speakers = source.corpus.metadata["speakers"]
    train_speakers = {speakers[source.corpus.source(source.train_split)[i]["speaker"]]
                      for i in range(len(source.corpus.source(source.train_split)))}
    assert train_speakers == set(speakers) - set(folds[1])
    mean, _ = source.corpus.fold_normalization(1)
    np.testing.assert_allclose(source.mean, mean, rtol=1e-6)
    np.testing.assert_array_equal(source.mean, held_out.mean)
    config.data.fold = 9
    with pytest.raises(ValueError, match="config.data.fold: .* no fold 9"):
        input_pipeline.open_task(config)


def test_open_task_reports_missing_corpora(toy_data_dir):
    config = toy_config(toy_data_dir)
    config.data.target = "nowhere"
    with pytest.raises(FileNotFoundError, match="config.data.target='nowhere'"):
        input_pipeline.open_task(config)


def test_per_speaker_normalisation_uses_each_speakers_own_frames(toy_data_dir):
    """Every utterance is standardised with the mean/std of all frames of its
    speaker, recomputed here from the stored frames; unknown speaker (new
    audio): with the utterance's own."""
    corpus = PreparedCorpus.find(toy_data_dir, "toy_src", FeatureConfig(n_mels=16))
    task = input_pipeline.TaskCorpus.create(
        corpus, 0, CLASSES, train_split="all", eval_split="all",
        normalization=corpus.normalization("all"), std_floor=0.01, per_speaker=True)
    data = corpus.source("all")
    examples = [data[i] for i in range(len(data))]
    for speaker in {int(e["speaker"]) for e in examples}:
        frames = np.concatenate([e["features"] for e in examples
                                 if e["speaker"] == speaker]).astype(np.float64)
        mean, std = frames.mean(0), np.maximum(frames.std(0), 0.01)
        for e in [e for e in examples if e["speaker"] == speaker][:2]:
            got = task.example(e, e["features"].shape[0], None, with_label=True)["frames"]
            np.testing.assert_allclose(got, (e["features"] - mean) / std, rtol=1e-4,
                                       atol=1e-4)
    alone = examples[0]["features"].astype(np.float64)
    got = task.normalize({"features": alone})
    np.testing.assert_allclose(got, (alone - alone.mean(0)) / np.maximum(alone.std(0), 0.01),
                               rtol=1e-4, atol=1e-4)
    corpus_wide = input_pipeline.TaskCorpus.create(
        corpus, 0, CLASSES, train_split="all", eval_split="all",
        normalization=corpus.normalization("all"), std_floor=0.01)
    assert not np.allclose(corpus_wide.normalize(examples[0]), task.normalize(examples[0]))


def test_shared_bands_drop_the_bins_an_8khz_corpus_leaves_empty(toy_data_dir, tmp_path):
    """A target recorded at 8 kHz has nothing above 4 kHz; with
    data.shared_bands those bins are zero in both corpora, and exactly those
    whose std over the target's stored frames is below DEAD_BAND_STD."""
    from data_prep import builder, corpora
    from tests.conftest import make_corpus
    manifest = make_corpus(str(tmp_path / "raw8k"), num_speakers=2, per_speaker=4,
                           sample_rate=8000)
    records, skipped = corpora.parse_csv(manifest, name="toy_phone")
    builder.build_corpus(records, corpus="toy_phone", root=os.path.dirname(manifest),
                         data_dir=toy_data_dir, feature_config=FeatureConfig(n_mels=16),
                         parse_skipped=skipped, progress=False, num_folds=0)
    config = toy_config(toy_data_dir, **{"data.target": "toy_phone",
                                         "data.classes": CLASSES,
                                         "data.shared_bands": True})
    source, target = input_pipeline.open_task(config)
    data = target.corpus.source("all")
    frames = np.concatenate([data[i]["features"] for i in range(len(data))])
    dead = frames.std(0) < input_pipeline.DEAD_BAND_STD
    assert 0 < dead.sum() < 16 and dead[-1] and not dead[0]
    np.testing.assert_array_equal(target.band_mask, (~dead).astype(np.float32))
    np.testing.assert_array_equal(source.band_mask, target.band_mask)
    example = source.corpus.source("train")[0]
    got = source.example(example, 24, None, with_label=False)["frames"]
    assert np.all(got[:, dead] == 0) and np.any(got[:, ~dead] != 0)
    plain = input_pipeline.open_task(toy_config(toy_data_dir, **{
        "data.target": "toy_phone", "data.classes": CLASSES}))[0]
    assert plain.band_mask is None
