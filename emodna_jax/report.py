"""Figures (PNG) and ``report.md`` of a batch evaluation.

Everything here reads what ``evaluate.evaluate_checkpoints`` wrote (the
result tables and the selected step's predictions), so the report's numbers
are the CSV's numbers.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_EMBEDDING_POINTS = 1500


def embed_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """t-SNE when scikit-learn is there, else PCA; returns (points, method)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        centred = features - features.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"
    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca",
                  random_state=seed).fit_transform(features)
    return points, "t-SNE"


def _emotion_names(predictions: dict, corpus) -> np.ndarray:
    return np.array([corpus.emotions[i] for i in predictions["emotion"]])


def plot_uar_curve(metrics_table, path: str):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for split, label in (("target", "target"), ("source_val", "source validation")):
        rows = metrics_table.select(split)
        ax.plot([r["step"] for r in rows], [r["uar"] for r in rows], marker="o",
                label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("UAR")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, classes, path: str, title: str):
    rows = confusion.sum(1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion),
                           where=rows > 0)
    fig, ax = plt.subplots(figsize=(4 + 0.3 * len(classes), 3.6 + 0.3 * len(classes)))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{normalised[i, j]:.2f}\n({int(confusion[i, j])})",
                    ha="center", va="center", fontsize=8,
                    color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Outside tab10 (the emotions' colours), so no corpus shares an emotion's colour.
_CORPUS_COLOURS = ("black", "#e6ab02")


def excluded_note(predictions: dict, target_corpus) -> str:
    """The sentence that says a figure of the evaluated utterances shows
    target utterances of emotions the task leaves out (the OOD set), or ''."""
    from emodna_jax.input_pipeline import EXCLUDED
    target = predictions["target"]
    excluded = target["label"] == EXCLUDED
    if not excluded.any():
        return ""
    names = sorted(set(_emotion_names(target, target_corpus)[excluded]))
    return (f"Includes {int(excluded.sum())} target utterances of "
            f"{', '.join(names)}, emotions the task excludes (its OOD set): "
            "drawn as crosses, '(excluded)' in the legend.")


def plot_embeddings(predictions: dict, source_corpus, target_corpus, path: str):
    """Emotion and corpus features, coloured by emotion and by corpus.

    Emo-DNA's qualitative claim: z_e clusters by emotion across corpora, while
    z_c clusters by corpus.  Target utterances of emotions outside the task
    are drawn as crosses, named so in the legend and the title: they are
    no class of the model.  Returns that title (``excluded_note``), '' when
    there are none.
    """
    from emodna_jax.input_pipeline import EXCLUDED
    parts = [("source", predictions["source_val"], source_corpus),
             ("target", predictions["target"], target_corpus)]
    emotions = np.concatenate([_emotion_names(p, c) for _, p, c in parts])
    excluded = np.concatenate([p["label"] == EXCLUDED for _, p, _ in parts])
    emotions = np.where(excluded, np.char.add(emotions.astype(str), " (excluded)"),
                        emotions)
    corpora = np.concatenate([[name] * len(p["emotion"]) for name, p, _ in parts])
    rng = np.random.default_rng(0)
    keep = np.arange(len(emotions))
    if len(keep) > MAX_EMBEDDING_POINTS:
        keep = np.sort(rng.choice(keep, MAX_EMBEDDING_POINTS, replace=False))
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for row, key, title in ((0, "z_e", "emotion features z_e"),
                            (1, "z_c", "corpus features z_c")):
        features = np.concatenate([p[key] for _, p, _ in parts])[keep]
        points, method = embed_2d(features)
        for col, (colour_by, values) in enumerate((("emotion", emotions[keep]),
                                                   ("corpus", corpora[keep]))):
            ax = axes[row, col]
            palette = _CORPUS_COLOURS if colour_by == "corpus" else plt.cm.tab10.colors
            for k, value in enumerate(sorted(set(values))):
                chosen = values == value
                colour = palette[k % len(palette)]
                plain, crossed = chosen & ~excluded[keep], chosen & excluded[keep]
                ax.scatter(points[plain, 0], points[plain, 1], s=6, color=colour,
                           label=value if plain.any() else None)
                if crossed.any():
                    ax.scatter(points[crossed, 0], points[crossed, 1], s=10,
                               marker="x", color=colour,
                               label=None if plain.any() else value)
            ax.set_title(f"{title} ({method}), by {colour_by}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=7, markerscale=2)
    note = excluded_note(predictions, target_corpus)
    if note:
        fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return note


def plot_ood_histograms(target: dict, path: str):
    from emodna_jax.input_pipeline import EXCLUDED
    names = sorted(k[len("score_"):] for k in target if k.startswith("score_"))
    is_ood = target["label"] == EXCLUDED
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3))
    for ax, name in zip(np.atleast_1d(axes), names):
        scores = target[f"score_{name}"]
        bins = np.linspace(scores.min(), scores.max(), 30)
        ax.hist(scores[~is_ood], bins=bins, alpha=0.6, density=True, label="in-task")
        ax.hist(scores[is_ood], bins=bins, alpha=0.6, density=True, label="OOD")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def unadapted_classes(summary: dict) -> list[str]:
    """The classes ``loss.cluster_agreement`` left to the source classifier,
    from an evaluation summary: read at the last step, since the verdict is
    taken at the first clustering and kept, and a checkpoint before that
    shows every class adapted."""
    verdict = summary["last"].get("pseudo_labels") or {}
    return [c for c in summary["classes"] if verdict.get(f"adapted_{c}", 1) == 0]


def adaptation_note(summary: dict) -> list[str]:
    """report.md's lines on the classes left unadapted (none if every class
    adapted)."""
    unadapted = unadapted_classes(summary)
    if not unadapted:
        return []
    return ["", f"**Left unadapted: {', '.join(unadapted)}.** At the first clustering "
            "the target's cluster of each was mostly called another class "
            "(`loss.cluster_agreement`), so it keeps the source classifier's naming; "
            "an export flags its predictions, and those of the class that took its "
            "cluster (`adapted = False`, docs/serving.md)."]


def _table(headers, rows) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(
            f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return lines


def write_report(out_dir: str, metrics_table, ood_table, summary: dict, config,
                 *, target_corpus, source_corpus):
    """Writes the figures and ``report.md`` into ``out_dir``."""
    from emodna_jax import metrics as metrics_lib
    from emodna_jax.evaluators import embeddings
    classes = summary["classes"]
    selected = summary["selected"]["step"]
    plot_uar_curve(metrics_table, os.path.join(out_dir, "uar_vs_step.png"))
    figures, embedding_note = ["uar_vs_step.png"], ""
    stored = os.path.exists(embeddings.path(out_dir, selected))
    if stored:   # the 'embeddings' evaluator's file: the per-utterance figures
        predictions = embeddings.load(out_dir, selected)
        target = predictions["target"]
        in_task = target["label"] >= 0
        confusion = metrics_lib.confusion_matrix(
            target["label"][in_task], np.argmax(target["logits"][in_task], -1),
            len(classes))
        plot_confusion(confusion, classes, os.path.join(out_dir, "confusion.png"),
                       f"{summary['target']}, step {selected}")
        embedding_note = plot_embeddings(predictions, source_corpus, target_corpus,
                                         os.path.join(out_dir, "embeddings.png"))
        figures += ["confusion.png", "embeddings.png"]
        if any(k.startswith("score_") for k in target):
            plot_ood_histograms(target, os.path.join(out_dir, "ood_histograms.png"))
            figures.append("ood_histograms.png")

    lines = [f"# Evaluation: {summary['task']}", "",
             f"Config hash `{summary['config_hash']}`: the config entries these "
             "numbers depend on (evaluate.evaluation_label).", "",
             f"Classes: {', '.join(classes)}. Checkpoint selection rule: "
             f"`{summary['selection_rule']}` (target labels are never used to "
             "select).", "", "## Summary", ""]
    rows = []
    for label, key in (("selected", "selected"), ("last", "last")):
        entry = summary[key]
        rows.append([label, entry["step"], entry["target"]["uar"],
                     entry["target"]["war"], entry["target"]["macro_f1"],
                     entry["source_val"]["uar"]])
    ensemble = summary.get("checkpoint_ensemble")
    if ensemble:
        rows.append([f"mean posterior of all {len(ensemble['steps'])}",
                     f"{ensemble['steps'][0]}-{ensemble['steps'][-1]}", ensemble["uar"],
                     ensemble["war"], ensemble["macro_f1"], "-"])
    oracle = summary["oracle_best_on_target"]
    rows.append(["oracle (best on target labels)", oracle["step"],
                 oracle["target"]["uar"], oracle["target"]["war"],
                 oracle["target"]["macro_f1"], "-"])
    lines += _table(["checkpoint", "step", "target UAR", "target WAR",
                     "target macro-F1", "source val UAR"], rows)
    lines += adaptation_note(summary)
    lines += ["", "## Per-class recall (selected step, target)", ""]
    lines += _table(classes, [[summary["selected"]["target"][f"recall_{c}"]
                               for c in classes]])
    lines += ["", "## Every checkpoint", ""]
    lines += _table(["step", "target UAR", "target WAR", "target macro-F1",
                     "source val UAR", "source val WAR"],
                    [[t["step"], t["uar"], t["war"], t["macro_f1"], s["uar"], s["war"]]
                     for t, s in zip(metrics_table.select("target"),
                                     metrics_table.select("source_val"))])
    if summary["selected"]["ood"]:
        ood = summary["selected"]["ood"]
        lines += ["", "## Out-of-distribution detection (selected step)", "",
                  "ID: target utterances of the task's classes; OOD: target "
                  "utterances of the emotions the task excludes. Scores are "
                  "higher for in-distribution.", ""]
        lines += _table(["score", "AUROC", "AUPR-In", "AUPR-Out", "FPR@95%TPR"],
                        [[name, v["auroc"], v["aupr_in"], v["aupr_out"],
                          v["fpr_at_95_tpr"]] for name, v in ood.items()])
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    if not stored:
        lines += ["", "No per-utterance figures: `config.evals` stores no "
                  "predictions (add `embeddings`)."]
    if embedding_note:
        lines += ["", f"embeddings.png: {embedding_note}"]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
