"""The cross-corpus harness: config, DANN, diagnostics, runner, npy features."""

import csv
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from configs import cross_corpus
from configs import default
from data_prep import builder
from data_prep import corpora
from data_prep import extract
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig, FeatureExtractor
from emodna_jax import config_variants
from emodna_jax import input_pipeline
from emodna_jax import losses
from emodna_jax import models
from emodna_jax import objective as objective_lib
from emodna_jax.evaluators import pseudo_labels
from tests.conftest import objective_settings, tone, write_manifest

# End to end (trains, or runs the entry points): the full tier only.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/default.py shrunk to the toy corpora, as command-line overrides.
# The toy corpora have no prosody tracks, so no utterance statistics.
TOY_OVERRIDES = ("data.feature=logmel", "data.utterance_stats=False", "data.n_mels=16",
                 "data.num_frames=24", "data.eval_num_frames=56", "model.channels=8", "model.num_blocks=2", "model.projection_dim=8",
                 "batch_size=8", "eval_batch_size=16", "steps=4", "log_every=2",
                 "checkpoint_every=2", "keep_checkpoints=2")


# configs/cross_corpus.py reads data_prep's default feature kind.
RECIPE_FEATURES = FeatureConfig(kind="logmel_pitch", n_mels=16)


def _build(data_dir, raw_root, name, emotions, *, speakers=2, per_emotion=2):
    root = os.path.join(raw_root, name)
    os.makedirs(root, exist_ok=True)
    rows = []
    for s in range(speakers):
        for k, emotion in enumerate(emotions):
            for u in range(per_emotion):
                path = f"{name}_{s}_{emotion}_{u}.wav"
                sf.write(os.path.join(root, path), tone(0.3, 16000, 7 * s + k + 31 * u), 16000)
                rows.append([path, emotion, f"spk{s}", "female"])
    records, skipped = corpora.parse_csv(write_manifest(
        os.path.join(root, "m.csv"), rows), name=name)
    builder.build_corpus(records, corpus=name, root=root, data_dir=data_dir,
                         feature_config=RECIPE_FEATURES,
                         parse_skipped=skipped, progress=False, num_folds=0)


@pytest.fixture(scope="module")
def emotion_sets(tmp_path_factory):
    """Corpora with 4, 3 and 2 emotions, two of them shared with only one other."""
    root = tmp_path_factory.mktemp("sets")
    data_dir = str(root / "data")
    _build(data_dir, str(root / "raw"), "four", ("sad", "angry", "happy", "neutral"))
    _build(data_dir, str(root / "raw"), "three", ("sad", "happy", "fear"))
    _build(data_dir, str(root / "raw"), "other", ("angry", "fear", "disgust"))
    return data_dir


def _task_config(data_dir, arg):
    config = cross_corpus.get_config(arg)
    config.data.data_dir = data_dir
    config.data.n_mels = 16
    return config


# -- configs/cross_corpus.py -------------------------------------------------


def test_classes_are_the_emotions_both_corpora_share_in_source_order(emotion_sets):
    config = config_variants.with_task_classes(_task_config(emotion_sets, "four,three"))
    # 'four' is stored in canonical order: neutral, angry, happy, sad.
    assert config.data.classes == ("happy", "sad")
    reverse = config_variants.with_task_classes(_task_config(emotion_sets, "three,four"))
    assert PreparedCorpus.find(emotion_sets, "three", RECIPE_FEATURES).emotions \
        == ["happy", "sad", "fear"]
    assert reverse.data.classes == ("happy", "sad")


def test_explicit_classes_are_kept(emotion_sets):
    config = _task_config(emotion_sets, "four,three")
    config.data.classes = ("sad", "happy")
    assert config_variants.with_task_classes(config).data.classes == ("sad", "happy")


def test_a_cnn_on_pitch_frames_keeps_the_tracks_out_of_its_convolutions(emotion_sets):
    """The experiment tells the CNN how many of each frame's values are
    tracks: the corpus's prosody tracks and the recipe's utterance statistics."""
    from emodna_jax import experiment, utterance_stats
    config = config_variants.with_task_classes(_task_config(emotion_sets, "four,three"))
    config.model.backbone = "cnn"
    built = experiment.build(config)
    tracks = RECIPE_FEATURES.num_tracks + utterance_stats.NUM_STATS
    assert RECIPE_FEATURES.num_tracks == 3
    assert built.model.backbone_kwargs["num_tracks"] == built.augment.num_tracks == tracks
    pooling = built.abstract_state().params["backbone"]["pooling"]
    # The pooling reads the last map (16 bins pooled 4 times: 1 band of 64
    # channels) and the tracks.
    assert config.model.cnn_channels[-1] == 64 and len(config.model.cnn_channels) == 4
    assert pooling["score_hidden"]["kernel"].shape[0] == 64 + tracks


def test_the_recipe_appends_the_utterance_statistics_to_every_frame(emotion_sets):
    """The recipe's frames carry 17 more values than the stored ones, which
    TIM-Net's input projection reads; without data.utterance_stats they are
    the stored frames."""
    from emodna_jax import experiment, utterance_stats
    config = config_variants.with_task_classes(_task_config(emotion_sets, "four,three"))
    assert config.data.utterance_stats
    for stats, values in ((True, 16 + 3 + utterance_stats.NUM_STATS), (False, 16 + 3)):
        config.data.utterance_stats = stats
        config.loss.cluster_labels = stats    # the clusters are of the statistics
        config.loss.cluster_agreement = stats  # and checks them
        built = experiment.build(config)
        assert built.num_bins == values
        kernel = built.abstract_state().params["backbone"]["input"]["kernel"]
        assert kernel.shape[:3] == (2, 1, values)   # [direction, taps, C_in, C_out]
        batch = next(iter(input_pipeline.train_dataset(
            built.source, built.target, global_batch_size=4, num_frames=24, seed=0)))
        assert batch["src_frames"].shape[-1] == batch["tgt_frames"].shape[-1] == values


def test_unknown_corpus_and_too_few_shared_emotions_are_clear_errors(emotion_sets):
    with pytest.raises(FileNotFoundError, match="config.data.target='nope': no complete"):
        config_variants.with_task_classes(_task_config(emotion_sets, "four,nope"))
    with pytest.raises(ValueError, match=r"three \(happy, sad, fear\) and other "
                                         r"\(.*\) share 1 emotion\(s\); a task needs at least 2"):
        config_variants.with_task_classes(_task_config(emotion_sets, "three,other"))


def test_main_reports_an_unprepared_corpus_in_one_line(emotion_sets, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "emodna_jax.main",
         "--config=configs/cross_corpus.py:four,nope", f"--workdir={tmp_path}",
         f"--config.data.data_dir={emotion_sets}", "--config.data.n_mels=16"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config.data.target='nope'")
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_every_target_loss_and_only_those_send_target_batches():
    """The step runs target batches (and source-only skips them) by one list
    of weights, which must name every target loss the objective has."""
    listed = set(objective_lib.TARGET_LOSS_WEIGHTS)
    weights = {f for f in objective_lib.ObjectiveConfig.__dataclass_fields__
               if f.startswith("w_")}
    # w_pseudo scales a part of class alignment and does nothing without w_ca.
    assert listed == weights - {"w_pseudo"}
    none = {w: 0.0 for w in weights}
    assert not objective_settings(4, 10, **none).uses_target
    for w in sorted(listed):
        assert objective_settings(4, 10, **dict(none, **{w: 0.5})).uses_target, w
        config = cross_corpus.get_config("a,b,source_only")
        config.loss[w] = 0.5
        assert config_variants.adapts(config), w
    assert not config_variants.adapts(cross_corpus.get_config("a,b,source_only"))
    assert objective_settings(4, 10, **none, attributes=(("corpus", "reverse", 1.0),)
                              ).uses_target


def test_methods_set_exactly_their_losses():
    weights = objective_lib.TARGET_LOSS_WEIGHTS

    def on(method):
        config = cross_corpus.get_config(f"a,b,{method}")
        return {w for w in weights if config.loss[w] > 0}

    assert on("source_only") == set()
    assert on("dan") == {"w_mmd"}
    assert on("dann") == {"w_dann"}
    assert on("emodna") == {"w_cor", "w_cd", "w_ca", "w_mmd", "w_diversity"}
    assert on("no_ca") == {"w_cor", "w_cd", "w_mmd", "w_diversity"}
    assert on("no_diversity") == {"w_cor", "w_cd", "w_ca", "w_mmd"}
    assert on("no_clusters") == on("emodna")
    clustered = {m for m in config_variants.METHODS
                 if cross_corpus.get_config(f"a,b,{m}").loss.cluster_labels}
    # Only the thresholds' variant and the methods without pseudo-labels
    # go without the target's clusters.
    assert clustered == set(config_variants.METHODS) - {
        "no_clusters", "source_only", "dan", "dann", "paper"}
    checked = {m for m in config_variants.METHODS
               if cross_corpus.get_config(f"a,b,{m}").loss.cluster_agreement}
    assert checked == clustered - {"no_agreement"}
    # The published objective: the paper's weights and thresholds, on the
    # recipe's input (features, normalisation, statistics) and model.
    paper, recipe = (cross_corpus.get_config(f"a,b,{m}") for m in ("paper", "emodna"))
    assert paper.loss.to_dict() == default.get_config().loss.to_dict()
    assert on("paper") == {"w_cor", "w_cd", "w_ca", "w_mmd"}
    assert (paper.data.to_dict(), paper.model.to_dict()) == (
        recipe.data.to_dict(), recipe.model.to_dict())
    assert cross_corpus.get_config("a,b").method == "emodna"
    with pytest.raises(ValueError, match="unknown method 'mdd'"):
        cross_corpus.get_config("a,b,mdd")
    with pytest.raises(ValueError, match=r"needs SOURCE,TARGET\[,method=emodna\]"):
        cross_corpus.get_config("a")


# -- DANN --------------------------------------------------------------------


def _dann_model():
    return models.EmoDNAModel(num_classes=3, backbone="tim",
                              backbone_kwargs={"features": 8, "num_blocks": 1},
                              projection_dim=8, hidden_dim=8, dropout_rate=0.0,
                              domain_discriminator=True)


def test_dann_reverses_the_discriminator_gradient_into_the_backbone():
    """The domain loss's gradient at the backbone and the emotion projector is
    -coefficient x the plain one; the discriminator itself descends as usual."""
    frames = jax.random.normal(jax.random.key(0), (6, 20, 8))
    mask = jnp.ones((6, 20), bool)
    corpus = jnp.array([0, 0, 0, 1, 1, 1])
    model = _dann_model()
    variables = model.init(jax.random.key(1), frames, mask, train=False)
    params = variables["params"]

    def grads(coefficient):
        def loss(p):
            out = model.apply({**variables, "params": p}, frames, mask, train=False,
                              domain_coefficient=coefficient)
            return losses.cross_entropy(out["domain_logits"], corpus)
        return jax.grad(loss)(params)

    reversed_, plain = grads(0.3), grads(-1.0)  # -1: reversal of a reversal
    for name in ("backbone", "emotion_projector"):
        for r, p in zip(jax.tree.leaves(reversed_[name]), jax.tree.leaves(plain[name])):
            np.testing.assert_allclose(r, -0.3 * p, rtol=1e-4, atol=1e-8)
        assert max(np.abs(g).max() for g in jax.tree.leaves(plain[name])) > 0
    for r, p in zip(jax.tree.leaves(reversed_["domain_discriminator"]),
                    jax.tree.leaves(plain["domain_discriminator"])):
        np.testing.assert_allclose(r, p, rtol=1e-5, atol=1e-8)
    # The corpus branch of Emo-DNA never sees the domain loss.
    assert all(np.all(g == 0) for g in jax.tree.leaves(plain["corpus_projector"]))


def test_objective_adds_the_weighted_domain_loss_unramped():
    rng = np.random.default_rng(0)
    n, c = 4, 3
    outputs = {"logits": jnp.asarray(rng.normal(size=(2 * n, c)), jnp.float32),
               "domain_logits": jnp.asarray(rng.normal(size=(2 * n, 2)), jnp.float32)}
    labels = jnp.asarray(rng.integers(0, c, n), jnp.int32)

    def total(w_dann):
        cfg = objective_settings(c, 100, w_cor=0.0, w_cd=0.0, w_ca=0.0, w_mmd=0.0,
                                 w_dann=w_dann)
        adapt = objective_lib.AdaptState.create(c, 8)
        loss, (_, metrics) = objective_lib.objective(cfg, outputs, labels, adapt,
                                                     jnp.int32(0))
        return float(loss), metrics

    logits = np.asarray(outputs["domain_logits"], np.float64)
    corpus = np.repeat([0, 1], n)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = -log_p[np.arange(2 * n), corpus].mean()
    with_dann, metrics = total(2.0)
    np.testing.assert_allclose(with_dann - float(metrics["loss_cls"]), 2.0 * want,
                               rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_dann"], want, rtol=1e-5)
    np.testing.assert_allclose(objective_lib.domain_coefficient(
        objective_settings(c, 100), 50),
        2 / (1 + np.exp(-5.0)) - 1, rtol=1e-6)


def test_training_logs_the_target_prediction_histogram():
    logits = jnp.asarray([[3.0, 0, 0], [2, 1, 0], [0, 5, 0], [1, 0, 0]])
    cfg = objective_settings(3, 10)
    out = objective_lib._prediction_histogram(cfg, logits)
    shares = np.array([0.75, 0.25, 0.0])
    np.testing.assert_allclose([out[f"target_predicted_{k}"] for k in range(3)], shares)
    np.testing.assert_allclose(out["target_prediction_entropy"],
                               -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)), rtol=1e-6)


# -- pseudo-label diagnostics ------------------------------------------------


def test_pseudo_label_report_hand_worked():
    # tau_g 0.6, p_tilde (0.5, 0.25, 0.25): thresholds 0.6 * (1, 0.5, 0.5).
    probs = np.array([[0.7, 0.2, 0.1],     # class 0, 0.7 >= 0.6: passes, right
                      [0.5, 0.3, 0.2],     # class 0, 0.5 <  0.6: fails
                      [0.2, 0.35, 0.45],   # class 2, 0.45 >= 0.3: passes, wrong
                      [0.3, 0.4, 0.3],     # class 1, passes; out-of-task emotion
                      [0.1, 0.8, 0.1]],    # class 1, passes, right
                     np.float32)
    labels = np.array([0, 0, 1, input_pipeline.EXCLUDED, 1])
    adapt = objective_lib.AdaptState(jnp.float32(0.6), jnp.asarray([0.5, 0.25, 0.25]),
                                     jnp.zeros((3, 2)))
    cfg = objective_settings(3, 10)
    passed, pseudo = objective_lib.select_pseudo_labels(cfg, probs, jnp.ones((5, 2)),
                                                        adapt)
    row = pseudo_labels.pseudo_label_report(passed, pseudo, labels, ["a", "b", "c"])
    assert row["passed_fraction"] == pytest.approx(0.8)
    assert row["passed_count"] == 4
    assert row["passed_accuracy"] == pytest.approx(2 / 3)
    assert [row[f"predicted_{k}"] for k in "abc"] == [1, 2, 1]
    assert [row[f"true_{k}"] for k in "abc"] == [1, 2, 0]


# -- the benchmark runner ----------------------------------------------------


def test_runner_rows_table_doc_and_resume(toy_data_dir, tmp_path, monkeypatch):
    pytest.importorskip("opensmile")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from benchmarks import cross_corpus as runner
    out = str(tmp_path / "out")
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nProse that a rerun keeps.\n")
    argv = ["--data_dir", toy_data_dir, "--out", out, "--tasks", "toy_src:toy_tgt",
            "--methods", "source_only,dann", "--seeds", "0", "--doc", str(doc)]
    for override in TOY_OVERRIDES:
        argv += ["--set", override]
    assert runner.main(argv) == 0

    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["method"], r["seed"]) for r in rows] == [
        ("toy_src:toy_tgt", "dann", "0"), ("toy_src:toy_tgt", "source_only", "0")]
    for row in rows:
        summary = evaluate_summary(runner.run_dir(out, row["task"], row["method"], 0))
        assert float(row["uar"]) == pytest.approx(summary["selected"]["target"]["uar"])
        assert float(row["uar_last"]) == pytest.approx(summary["last"]["target"]["uar"])
        assert summary["selection_rule"] == "source_val_uar"
        for rule in ("snd", "dev", "entropy"):
            assert float(row[f"uar_{rule}"]) == pytest.approx(
                summary["selections"][f"target_{rule}"]["target_uar"])
        assert float(row["uar_oracle"]) >= float(row["uar"])
        assert float(row["uar_ensemble"]) == pytest.approx(
            summary["checkpoint_ensemble"]["uar"])
        recall = dict(item.split("=") for item in row["recall"].split(";"))
        assert np.mean([float(v) for v in recall.values()]) == pytest.approx(
            float(row["uar"]), abs=1e-3)
    table = open(os.path.join(out, "results.md")).read()
    assert "| toy_src → toy_tgt | " in table and "DANN" in table
    assert "eGeMAPS + LR" in table and "mean over 1 complete tasks" in table
    assert "--data_dir=DATA" in table and "--out=OUT" in table
    assert os.path.exists(os.path.join(out, "results.png"))
    text = doc.read_text()
    assert text.startswith("# Results\n\nProse that a rerun keeps.")
    assert text.count(runner.BEGIN) == 1

    # Reruns: every run is finished, so nothing trains; the doc keeps one
    # section.  First from the runs' result.json files alone, then, as in a
    # fresh checkout, from the csv committed beside the doc alone.
    def no_subprocess(*args, **kwargs):
        raise AssertionError("a finished run was started again")
    monkeypatch.setattr(runner.subprocess, "call", no_subprocess)
    # --rescore: the same rows from the stored predictions alone, nothing
    # run, and a run evaluated by this version is rewritten unchanged.
    workdir = runner.run_dir(out, "toy_src:toy_tgt", "dann", 0)
    metrics_csv = os.path.join(workdir, "eval", "metrics.csv")
    with open(metrics_csv) as f:
        kept = f.read()
    assert runner.main(argv + ["--rescore"]) == 0
    with open(os.path.join(out, "results.csv")) as f:
        rescored = list(csv.DictReader(f))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rescored] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rows]
    with open(metrics_csv) as f:
        assert f.read() == kept
    os.remove(os.path.join(out, "results.csv"))
    os.remove(tmp_path / "results.csv")
    assert runner.main(argv) == 0
    shutil.rmtree(os.path.join(out, "runs"))
    os.remove(os.path.join(out, "results.csv"))
    assert runner.main(argv) == 0
    for path in (os.path.join(out, "results.csv"), tmp_path / "results.csv"):
        with open(path) as f:
            assert list(csv.DictReader(f)) == rows
    assert doc.read_text().count(runner.BEGIN) == 1
    # --tables_only with a method never run: tables of what exists, no run.
    methods = argv.index("--methods") + 1
    only = argv[:methods] + ["source_only,dann,dan"] + argv[methods + 1:] + ["--tables_only"]
    assert runner.main(only) == 0
    assert not os.path.exists(runner.run_dir(out, "toy_src:toy_tgt", "dan", 0))
    assert "--tables_only" not in doc.read_text()


def test_runner_means_each_task_group_apart_and_shows_selection_and_recall():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from benchmarks import cross_corpus as runner
    tasks = [runner.DEV_TASKS[0], runner.SWAPPED_TASKS[0], runner.SWAPPED_TASKS[1]]

    def row(task, method, uar):
        return {"task": task, "method": method, "seed": 0, "uar": uar, "war": uar,
                "uar_last": uar, "war_last": uar, "source_val_uar": 0.9,
                "pseudo_passed_fraction": 1.0, "pseudo_passed_accuracy": 0.5,
                "uar_snd": uar - 0.1, "uar_dev": uar, "uar_entropy": uar,
                "uar_ensemble": uar + 0.05, "war_ensemble": uar,
                "uar_oracle": uar + 0.1, "recall": f"angry={uar:.4f};happy=0.5000",
                "unadapted": "angry" if method == "emodna" else ""}
    results = [row(t, m, u) for t, u in zip(tasks, (0.8, 0.4, 0.6))
               for m in ("source_only", "emodna")]
    text = runner.markdown(results, tasks, ["source_only", "emodna"], {}, "c")
    grid = text.split("### Target UAR, checkpoint selected")[1].split("###")[0]
    assert "| **mean over 1 complete tasks, development suite** | **0.800** | **0.800** |" in grid
    assert "| **mean over 2 complete tasks, swapped pair** | **0.500** | **0.500** |" in grid
    assert "mean over 3" not in grid
    selection = text.split("### Target UAR by checkpoint selection rule")[1]
    assert ("| **mean over 2 tasks, swapped pair** | Emo-DNA | **0.500** | **0.400** | "
            "**0.500** | **0.500** | **0.550** | **0.600** |") in selection
    ensemble = text.split("### Target UAR, mean posterior of every checkpoint")[1].split("###")[0]
    assert "| **mean over 2 complete tasks, swapped pair** | **0.550** | **0.550** |" in ensemble
    recall = text.split("### Per-class target recall")[1]
    assert "| hi_festival → en_phone | Emo-DNA | 0.40 | 0.50 |" in recall
    assert "it_festival" not in recall        # the shifted pairs only
    assert "| hi_festival → en_phone | angry (1/1) |" in text
    # One group only: the single mean row of before.
    assert runner.task_groups(list(runner.DEV_TASKS[:2])) == [("", list(runner.DEV_TASKS[:2]))]
    assert runner.task_groups(["a:b"]) == [("", ["a:b"])]


def test_runner_table_shows_both_anchors_and_counts_their_wins():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from benchmarks import cross_corpus as runner
    def row(method, uar):
        return {"task": "a:b", "method": method, "seed": 0, "uar": uar, "war": uar,
                "uar_last": uar, "war_last": uar, "source_val_uar": 0.9,
                "pseudo_passed_fraction": float("nan"),
                "pseudo_passed_accuracy": float("nan")}
    anchors = {"a:b": {"egemaps": 0.55, "egemaps_speaker": 0.70, "ceiling": 0.8,
                       "ceiling_speaker": 0.95}}
    text = runner.markdown([row("source_only", 0.60), row("emodna", 0.75)], ["a:b"],
                           ["source_only", "emodna"], anchors, "c")
    grid = text.split("### Target UAR, checkpoint selected")[1].split("###")[0]
    lines = [line for line in grid.splitlines() if line.startswith("|")]
    assert lines[0] == ("| task | source-only | Emo-DNA | eGeMAPS + LR, per corpus | "
                        "eGeMAPS + LR, per speaker | ceiling, per corpus | "
                        "ceiling, per speaker |")
    assert lines[-2].endswith("| **0.550** | **0.700** | **0.800** | **0.950** |")
    # Against source-only's 0.60: the per-corpus anchor loses, the per-speaker wins.
    assert lines[-1] == "| tasks won against source-only | - | 1 / 1 | 0 / 1 | 1 / 1 |  |  |"


def evaluate_summary(workdir):
    import json
    with open(os.path.join(workdir, "eval", "summary.json")) as f:
        return json.load(f)


def test_egemaps_anchor_on_separable_functionals():
    """LR on z-normalised functionals: a per-corpus offset is removed, so a
    class shift that survives it transfers; LOSO never trains on its speaker."""
    from benchmarks import egemaps
    rng = np.random.default_rng(0)

    def table(offset, n=40):
        emotion = np.array(["angry", "sad"] * n)
        x = rng.normal(size=(2 * n, 5)) + offset
        x[:, 0] += np.where(emotion == "angry", 3.0, -3.0)
        return {"x": x, "emotion": emotion,
                "speaker": np.array([f"s{i % 4}" for i in range(2 * n)])}

    assert egemaps.cross_corpus_uar(table(0.0), table(50.0), ["angry", "sad"]) > 0.95
    assert egemaps.in_corpus_uar(table(0.0), ["angry", "sad"]) > 0.95
    noise = table(0.0)
    noise["x"] = rng.normal(size=noise["x"].shape)
    assert egemaps.in_corpus_uar(noise, ["angry", "sad"]) < 0.75


def test_egemaps_standardises_per_corpus_or_per_speaker():
    from benchmarks import egemaps
    table = {"x": np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 5.0], [30.0, 5.0]]),
             "speaker": np.array(["a", "a", "b", "b"]), "emotion": np.array(["x"] * 4)}
    by_speaker = egemaps.standardised(table, "speaker")["x"]
    np.testing.assert_allclose(by_speaker, [[-1, 0], [1, 0], [-1, 0], [1, 0]])
    assert by_speaker.dtype == np.float64
    column = table["x"][:, 0]
    np.testing.assert_allclose(egemaps.standardised(table, "corpus")["x"][:, 0],
                               (column - column.mean()) / column.std())
    assert table["x"][0, 0] == 1.0   # input untouched
    with pytest.raises(ValueError, match="by='utterance': one of corpus, speaker"):
        egemaps.standardised(table, "utterance")


def test_egemaps_per_speaker_anchor_removes_a_speaker_offset():
    """Each speaker's voice shifts every functional by its own offset, larger
    than the emotion's effect: only per-speaker z-scores transfer."""
    from benchmarks import egemaps
    rng = np.random.default_rng(1)

    def table(n=60):
        emotion = np.array(["angry", "sad"] * n)
        speaker = np.array([f"s{(i // 2) % 6}" for i in range(2 * n)])
        offset = {s: rng.normal(scale=8.0, size=3) for s in np.unique(speaker)}
        x = rng.normal(size=(2 * n, 3)) + np.stack([offset[s] for s in speaker])
        x[:, 0] += np.where(emotion == "angry", 1.5, -1.5)
        return {"x": x, "emotion": emotion, "speaker": speaker}

    source, target = table(), table()
    classes = ["angry", "sad"]
    assert egemaps.cross_corpus_uar(source, target, classes, by="speaker") > 0.9
    assert egemaps.cross_corpus_uar(source, target, classes, by="corpus") < 0.8
    assert egemaps.in_corpus_uar(target, classes, by="speaker") > 0.9


# -- bring your own features (.npy) ------------------------------------------


def _npy_corpus(root, shapes):
    os.makedirs(root, exist_ok=True)
    rows, arrays = [], {}
    rng = np.random.default_rng(0)
    for i, shape in enumerate(shapes):
        name = f"u{i}.npy"
        arrays[name] = rng.normal(size=shape).astype(np.float32)
        np.save(os.path.join(root, name), arrays[name])
        rows.append([name, ("angry", "sad")[i % 2], f"spk{i % 3}", "male"])
    return write_manifest(os.path.join(root, "m.csv"), rows), arrays


def test_npy_features_are_stored_as_given(tmp_path):
    manifest, arrays = _npy_corpus(str(tmp_path / "raw"), [(7 + i, 5) for i in range(6)])
    records, skipped = corpora.parse_csv(manifest, name="mine")
    config = FeatureConfig(kind="npy", npy_dim=5)
    result = builder.build_corpus(records, corpus="mine", root=os.path.dirname(manifest),
                                  data_dir=str(tmp_path / "data"), feature_config=config,
                                  parse_skipped=skipped, progress=False, num_folds=0)
    assert result.path.endswith(os.path.join("mine-npy5", "1.0.0"))
    corpus = PreparedCorpus(result.path)
    assert corpus.feature_config == config and config.num_bins == 5
    data = corpus.source("all")
    got = {data[i]["path"].decode(): data[i]["features"] for i in range(len(data))}
    assert sorted(got) == sorted(arrays)
    for name, frames in got.items():
        np.testing.assert_array_equal(frames, arrays[name])
    with pytest.raises(ValueError, match="computed outside emodna_jax"):
        FeatureExtractor(config)


def test_npy_features_of_the_wrong_shape_are_a_clear_error(tmp_path):
    manifest, _ = _npy_corpus(str(tmp_path / "raw"), [(7, 5), (8, 4), (9, 5)])
    records, _ = corpora.parse_csv(manifest, name="mine")
    with pytest.raises(extract.StrictModeError,
                       match=r"u1\.npy: features have shape \(8, 4\); expected \[T, 5\]"):
        builder.build_corpus(records, corpus="mine", root=os.path.dirname(manifest),
                             data_dir=str(tmp_path / "data"),
                             feature_config=FeatureConfig(kind="npy", npy_dim=5),
                             parse_skipped=[], progress=False, num_folds=0)
    assert not os.path.exists(builder.dataset_dir(
        str(tmp_path / "data"), "mine", FeatureConfig(kind="npy", npy_dim=5)))
    with pytest.raises(ValueError, match="npy_dim .* must be given"):
        FeatureConfig(kind="npy")


def test_a_class_left_unadapted_is_counted_even_when_an_earlier_step_is_selected(tmp_path):
    from benchmarks import cross_corpus as runner
    classes = ["neutral", "angry"]
    figures = {"uar": 0.5, "war": 0.5, **{f"recall_{c}": 0.5 for c in classes}}
    # Selected at the end of the warm-up, before the first clustering's
    # verdict: its record still shows every class adapted.
    summary = {"classes": classes, "selections": {},
               "selected": {"step": 100, "target": figures, "source_val": {"uar": 0.9},
                            "pseudo_labels": {"adapted_neutral": 1, "adapted_angry": 1}},
               "last": {"step": 400, "target": figures,
                        "pseudo_labels": {"adapted_neutral": 1, "adapted_angry": 0}},
               "oracle_best_on_target": {"target": {"uar": 0.6}}}
    result = runner._write_result(summary, "s:t", "emodna", 0, str(tmp_path), seconds=1.0)
    assert result["unadapted"] == "angry" and result["selected_step"] == 100
    # The evaluation's report.md says so too, from the same summary.
    from emodna_jax import report
    note = report.adaptation_note(summary)
    assert note[1].startswith("**Left unadapted: angry.**")
    summary["last"]["pseudo_labels"]["adapted_angry"] = 1
    assert report.adaptation_note(summary) == []


def test_doc_sections_are_replaced_in_place_and_independently():
    from benchmarks import cross_corpus as runner
    doc = "# R\n\nintro\n"
    doc = runner._replace_section(doc, "table A1\n")
    doc = runner._replace_section(doc, "table B1\n", "probe")
    doc = doc + "\nclosing prose\n"
    doc = runner._replace_section(doc, "table A2\n")
    assert doc == ("# R\n\nintro\n\n<!-- cross_corpus.py: begin -->\ntable A2\n"
                   "<!-- cross_corpus.py: end -->\n\n<!-- cross_corpus.py probe: begin -->"
                   "\ntable B1\n<!-- cross_corpus.py probe: end -->\n\nclosing prose\n")
    assert runner._beside("docs/results.md", "probe", ".csv") == "docs/results_probe.csv"


def test_doc_section_end_marker_starts_its_own_line():
    from benchmarks import cross_corpus as runner
    for table, body in (("last line", "last line\n"), ("", "")):
        assert runner._replace_section("", table, "s") == (
            f"\n\n<!-- cross_corpus.py s: begin -->\n{body}<!-- cross_corpus.py s: end -->\n")


def test_ablation_table_lines_up_rows_from_several_csvs(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from benchmarks import ablation, cross_corpus as runner

    def write(path, rows):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=runner.COLUMNS)
            writer.writeheader()
            for task, method, seed, uar in rows:
                writer.writerow({c: 0 for c in runner.COLUMNS} | {
                    "task": task, "method": method, "seed": seed, "uar": uar})

    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    write(a, [("s:t", "emodna", 0, 0.6), ("s:t", "emodna", 1, 0.8),
              ("u:v", "emodna", 0, 0.5), ("u:v", "emodna", 1, 0.7),
              ("s:t", "dan", 0, 0.1), ("s:t", "dan", 1, 0.1)])
    write(b, [("s:t", "no_ca", 0, 0.4), ("s:t", "no_ca", 1, 0.6),
              ("w:x", "no_ca", 0, 0.9), ("w:x", "no_ca", 1, 0.9)])
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n")
    ablation.main(["--doc", str(doc), "--seeds", "0,1",
                   "--row", f"recipe={a}:emodna", "--row", f"without L_ca={b}:no_ca"])
    text = doc.read_text()
    assert text.startswith("# Results\n") and "do not edit by hand" in text
    # Only s:t is in both rows: 0.7 vs 0.5, each over two seeds 0.2 apart, so
    # the difference's standard error is sqrt(0.02 / 2 + 0.02 / 2).
    assert "| recipe (`a.csv`: emodna) | 0.700 | **0.700** |" in text
    assert ("| without L_ca (`b.csv`: no_ca) | 0.500 | **0.500** (-0.200 ± 0.141) |"
            in text)
    assert "u → v" not in text and "w → x" not in text
    ablation.main(["--doc", str(doc), "--seeds", "0,1", "--section", "short", "--means_only",
                   "--row", f"recipe={a}:emodna", "--row", f"without L_ca={b}:no_ca"])
    short = doc.read_text().split("<!-- cross_corpus.py short: begin -->")[1]
    assert "| variant | mean |" in short and "s → t" not in short
    assert "| without L_ca (`b.csv`: no_ca) | **0.500** (-0.200 ± 0.141) |" in short
    with pytest.raises(SystemExit):
        ablation.main(["--doc", str(doc), "--row", "no-equals-sign"])


def test_msac_folds_never_reuses_runs_of_other_settings(tmp_path, monkeypatch):
    from benchmarks import msac_folds
    calls = []

    def fake_call(command, **kwargs):  # a finished corpus, as main writes it
        calls.append(command)
        workdir = next(c for c in command if c.startswith("--workdir=")).split("=", 1)[1]
        with open(os.path.join(workdir, "folds.json"), "w") as f:
            f.write('{"uar": {"mean": 0.5, "std": 0.0}, "folds": []}')
        return 0

    monkeypatch.setattr(msac_folds.subprocess, "call", fake_call)
    overrides = ["augment.warp=0.2"]
    first = msac_folds.run_folds("c", out=str(tmp_path), data_dir="D", overrides=overrides)
    again = msac_folds.run_folds("c", out=str(tmp_path), data_dir="D", overrides=overrides)
    assert first == again and len(calls) == 1                # resumed, not rerun
    assert "--config.augment.warp=0.2" in calls[0]
    with pytest.raises(ValueError, match=r"c: its runs were made with --set "
                                         r"\['augment.warp=0.2'\], not \[\]; use another --out"):
        msac_folds.run_folds("c", out=str(tmp_path), data_dir="D")


def test_features_made_elsewhere_turn_off_what_reads_audio_features():
    """The recipe with --config.data.feature=npy: the settings that need the
    prosody tracks or mel bands are turned off, by name, and the result
    validates; data_prep's default features keep the recipe whole."""
    from emodna_jax import config_validation
    config = cross_corpus.get_config("a,b")
    assert config_variants.for_feature_kind(config) == (config, "")
    config.data.feature, config.data.feature_dim = "npy", 20
    derived, note = config_variants.for_feature_kind(config)
    assert note == ("note: data.feature='npy' has no prosody tracks or mel bands: "
                    "data.utterance_stats, loss.cluster_labels, loss.cluster_agreement, "
                    "strong_augment.warp turned off")
    assert (derived.data.utterance_stats, derived.loss.cluster_labels,
            derived.loss.cluster_agreement, derived.strong_augment.warp) == (
        False, False, False, 0.0)
    assert config.loss.cluster_labels  # the caller's config is left as it was
    derived.data.classes = ("angry", "sad")
    config_validation.validate_config(derived)
    config.data.feature, config.data.feature_dim = "logmel", 0
    derived, note = config_variants.for_feature_kind(config)
    assert derived.strong_augment.warp == 0.1 and not derived.data.utterance_stats
    assert note.startswith("note: data.feature='logmel' has no prosody tracks: ")
