r"""Cross-corpus benchmark: tasks x methods x seeds, with the classical anchor.

  python benchmarks/cross_corpus.py --data_dir=D --out=OUT \
      --tasks=it_festival:en_flite,fr_espeak:es_phone --methods=source_only,dan,dann,emodna

Each run is what a user types: ``python -m emodna_jax.main
--config=configs/cross_corpus.py:SRC,TGT,METHOD --config.seed=K``, then
``--mode=evaluate``, in ``OUT/runs/SRC__TGT/METHOD/seedK``.  Its headline
figure is the target UAR/WAR of the checkpoint selected by source-validation
UAR (target labels never select); the last step's is a second column.

Reference columns per task: openSMILE eGeMAPSv02 + logistic regression
trained on the source (the anchor) and the target's own leave-one-speaker-out
figure (the ceiling), each with the functionals standardised per corpus and
per speaker, see benchmarks/egemaps.py.

A run with a ``result.json``, or a row in ``OUT/results.csv`` or in the csv
beside ``--doc``, is finished and skipped, so the runner resumes where it
stopped, also in a fresh checkout that has only the committed csv;
``results.csv``, ``results.md`` and ``results.png`` in OUT
are rewritten after every run (``--doc`` copies the table to a file of docs/).
Every table is written by this program: never edit one by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from data_prep import files
from emodna_jax import report

# The development suite (../shared/corpora/tts_corpora.py): every corpus is a
# source and a target at least once, each direction of three channels.
DEV_TASKS = ("it_festival:en_flite", "en_flite:it_festival", "fr_espeak:es_phone",
             "es_phone:fr_espeak", "cs_festival:fr_espeak", "es_phone:cs_festival")
# The shifted pairs (../shared/corpora/shifted_corpora.py), both directions:
# en_phone's actors swap anger and happiness against hi_festival's (no
# label-free method can name those two), en_subdued's keep every cue's order.
SWAPPED_TASKS = ("hi_festival:en_phone", "en_phone:hi_festival")
ORDER_KEEPING_TASKS = ("hi_festival:en_subdued", "en_subdued:hi_festival")
SHIFTED_TASKS = SWAPPED_TASKS + ORDER_KEEPING_TASKS
METHODS = ("source_only", "dan", "dann", "emodna")
LABELS = {"source_only": "source-only", "dan": "DAN (MMD)", "dann": "DANN",
          "emodna": "Emo-DNA", "no_cd": "Emo-DNA w/o L_cd",
          "no_ca": "Emo-DNA w/o L_ca", "no_mmd": "Emo-DNA w/o MMD",
          "no_cor": "Emo-DNA w/o L_cor", "no_consistency": "Emo-DNA w/o L_con",
          "no_diversity": "Emo-DNA w/o L_div",
          "no_clusters": "Emo-DNA, thresholds' pseudo-labels",
          "no_agreement": "Emo-DNA w/o the agreement check",
          "paper": "Emo-DNA as published"}
COLUMNS = ("task", "method", "seed", "uar", "war", "uar_last", "war_last",
           "source_val_uar", "selected_step", "pseudo_passed_fraction",
           "pseudo_passed_accuracy", "seconds",
           # Target UAR at the checkpoint each label-free rule picks, and the
           # oracle's (target labels: a reference, never a selection).
           "uar_snd", "uar_dev", "uar_entropy", "uar_oracle",
           # Target UAR and WAR of the mean posterior over every checkpoint
           # (emodna_jax/checkpoint_ensemble.py): no selection at all.
           "uar_ensemble", "war_ensemble",
           # Per-class recall at the selected checkpoint ("class=recall;..."),
           # and the classes loss.cluster_agreement left unadapted.
           "recall", "unadapted")
# Columns a row written by an older version lacks: read as missing.
TEXT_COLUMNS = ("task", "method", "recall", "unadapted")
SELECTION_RULES = (("uar", "source validation"), ("uar_snd", "SND"),
                   ("uar_dev", "DEV"), ("uar_entropy", "entropy"),
                   ("uar_ensemble", "mean posterior of every checkpoint"),
                   ("uar_oracle", "ORACLE (target labels)"))


def run_dir(out: str, task: str, method: str, seed: int) -> str:
    return os.path.join(out, "runs", task.replace(":", "__"), method, f"seed{seed}")


def _main_command(task: str, method: str, seed: int, workdir: str, data_dir: str,
                  overrides, mode: str) -> list[str]:
    source, target = task.split(":")
    return ([sys.executable, "-m", "emodna_jax.main",
             f"--config=configs/cross_corpus.py:{source},{target},{method}",
             f"--workdir={workdir}", f"--mode={mode}", f"--config.seed={seed}",
             f"--config.data.data_dir={data_dir}"]
            + [f"--config.{o}" for o in overrides])


def run_one(task: str, method: str, seed: int, *, out: str, data_dir: str,
            overrides=()) -> dict:
    """Trains and evaluates one run (or reads its finished result)."""
    workdir = run_dir(out, task, method, seed)
    done = os.path.join(workdir, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    for mode in ("train", "evaluate"):
        command = _main_command(task, method, seed, workdir, data_dir, overrides, mode)
        with open(os.path.join(workdir, f"{mode}.log"), "w") as log:
            code = subprocess.call(command, cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT)
        if code:
            raise RuntimeError(f"{task} {method} seed {seed}: {mode} exited {code}; "
                               f"see {workdir}/{mode}.log\n  "
                               + " ".join(shlex.quote(c) for c in command))
    with open(os.path.join(workdir, "eval", "summary.json")) as f:
        summary = json.load(f)
    return _write_result(summary, task, method, seed, workdir,
                         seconds=round(time.time() - start, 1))


def rescore_one(task: str, method: str, seed: int, *, out: str, data_dir: str,
                overrides=()) -> dict:
    """A finished run's result recomputed from its stored predictions
    (``evaluate.rescore``): the current metrics and selection rule, no
    training, no checkpoint."""
    import ast
    from configs import cross_corpus
    from emodna_jax import config_variants
    from emodna_jax import evaluate
    workdir = run_dir(out, task, method, seed)
    source, target = task.split(":")
    config = cross_corpus.get_config(f"{source},{target},{method}")
    config.seed, config.data.data_dir = seed, data_dir
    for override in overrides:
        key, value = override.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a plain string
        config.update_from_flattened_dict({key: value})
    summary = evaluate.rescore(config_variants.with_task_classes(config), workdir)
    with open(os.path.join(workdir, "result.json")) as f:
        seconds = json.load(f)["seconds"]
    return _write_result(summary, task, method, seed, workdir, seconds=seconds)


def _write_result(summary: dict, task: str, method: str, seed: int,
                  workdir: str, *, seconds: float) -> dict:
    """The run's row of the tables, from its evaluation summary, also written
    to ``WORKDIR/result.json``."""
    selected, last = summary["selected"], summary["last"]
    pseudo = selected.get("pseudo_labels", {})
    chosen = summary.get("selections", {})
    classes = summary["classes"]
    result = {"task": task, "method": method, "seed": seed,
              "uar": selected["target"]["uar"], "war": selected["target"]["war"],
              "uar_last": last["target"]["uar"], "war_last": last["target"]["war"],
              "source_val_uar": selected["source_val"]["uar"],
              "selected_step": selected["step"],
              "pseudo_passed_fraction": pseudo.get("passed_fraction", float("nan")),
              "pseudo_passed_accuracy": pseudo.get("passed_accuracy", float("nan")),
              "seconds": seconds,
              **{f"uar_{rule}": chosen.get(f"target_{rule}", {}).get("target_uar",
                                                                     float("nan"))
                 for rule in ("snd", "dev", "entropy")},
              "uar_oracle": summary["oracle_best_on_target"]["target"]["uar"],
              **{f"{k}_ensemble": (summary.get("checkpoint_ensemble") or {}).get(
                  k, float("nan")) for k in ("uar", "war")},
              "recall": ";".join(f"{c}={selected['target'][f'recall_{c}']:.4f}"
                                 for c in classes),
              "unadapted": ";".join(report.unadapted_classes(summary))}
    with files.atomic_write(os.path.join(workdir, "result.json")) as f:
        json.dump(result, f, indent=2)
    return result


def _prepared(data_dir: str, name: str):
    """A prepared dataset of corpus ``name``, at whatever feature setting: the
    anchor reads only its audio paths and labels."""
    import glob
    from data_prep import builder
    from data_prep.dataset import PreparedCorpus
    found = sorted(p for p in glob.glob(os.path.join(
        data_dir, builder.DATASET_NAME, f"{glob.escape(name)}-*", builder.DATASET_VERSION))
        if builder.is_complete(p))
    if not found:
        raise FileNotFoundError(f"--tasks: corpus {name!r} is not prepared in "
                                f"{data_dir} (python -m data_prep --name={name} ...)")
    return PreparedCorpus(found[0])


# The anchors: (key, column header, a cross-corpus figure (else a ceiling)).
ANCHORS = (("egemaps", "eGeMAPS + LR, per corpus", True),
           ("egemaps_speaker", "eGeMAPS + LR, per speaker", True),
           ("ceiling", "ceiling, per corpus", False),
           ("ceiling_speaker", "ceiling, per speaker", False))


def anchor_rows(tasks, *, data_dir: str, out: str) -> dict:
    """task -> {anchor key: UAR}: eGeMAPS + LR trained on the source and
    scored on the target, and the target's own leave-one-speaker-out figure
    (the ceiling), each with the functionals standardised per corpus and per
    speaker (benchmarks/egemaps.py)."""
    from benchmarks import egemaps
    cache = os.path.join(out, "egemaps")
    tables, rows = {}, {}
    for task in tasks:
        names = task.split(":")
        for name in names:
            if name not in tables:
                print(f"eGeMAPS functionals of {name}", flush=True)
                tables[name] = egemaps.corpus_functionals(
                    _prepared(data_dir, name), cache)
        source, target = (tables[n] for n in names)
        classes = [e for e in dict.fromkeys(source["emotion"]) if e in set(target["emotion"])]
        rows[task] = {}
        for by, suffix in (("corpus", ""), ("speaker", "_speaker")):
            rows[task]["egemaps" + suffix] = egemaps.cross_corpus_uar(
                source, target, classes, by=by)
            rows[task]["ceiling" + suffix] = egemaps.in_corpus_uar(target, classes, by=by)
    return rows


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std())


def aggregate(results: list[dict], tasks, methods) -> dict:
    """(task, method) -> {metric: (mean, std, n)} over seeds."""
    table = {}
    for task in tasks:
        for method in methods:
            runs = [r for r in results if r["task"] == task and r["method"] == method]
            if runs:
                table[task, method] = {
                    key: (*_mean_std([r.get(key, np.nan) for r in runs]), len(runs))
                    for key in ("uar", "war", "uar_last", "war_last",
                                "source_val_uar", "pseudo_passed_fraction",
                                "pseudo_passed_accuracy", "war_ensemble")
                    + tuple(k for k, _ in SELECTION_RULES[1:])}
                recalls = [_recalls(r) for r in runs]
                if all(recalls):
                    table[task, method]["recall"] = {
                        c: (*_mean_std([x[c] for x in recalls]), len(runs))
                        for c in recalls[0]}
                unadapted = [r.get("unadapted") or "" for r in runs]
                table[task, method]["unadapted"] = {
                    c: sum(c in u.split(";") for u in unadapted)
                    for c in dict.fromkeys(";".join(unadapted).split(";")) if c}
    return table


def _recalls(row) -> dict:
    """class -> recall of a row's "recall" column ({} if it has none)."""
    text = row.get("recall") or ""
    return {c: float(v) for c, v in (item.split("=") for item in text.split(";") if item)}


GROUPS = (("development suite", DEV_TASKS), ("swapped pair", SWAPPED_TASKS),
          ("order-keeping pair", ORDER_KEEPING_TASKS))


def task_groups(tasks) -> list[tuple[str, list]]:
    """(name suffix, tasks) for each mean row: one row over all ``tasks``
    when they fall in at most one of GROUPS, else one row per group (and
    one for tasks of none), since each group has its own bar to meet."""
    found = [(f", {name}", [t for t in tasks if t in members])
             for name, members in GROUPS]
    found = [(name, members) for name, members in found if members]
    rest = [t for t in tasks if not any(t in members for _, members in GROUPS)]
    if len(found) + bool(rest) <= 1:
        return [("", list(tasks))]
    return found + ([(", other tasks", rest)] if rest else [])


def _cell(stats, key) -> str:
    if stats is None:
        return "-"
    mean, std, n = stats[key]
    return f"{mean:.3f} ± {std:.3f}" + ("" if n > 1 else " (1 seed)")


def markdown(results, tasks, methods, anchors: dict, command: str) -> str:
    table = aggregate(results, tasks, methods)
    lines = ["<!-- Written by benchmarks/cross_corpus.py; do not edit by hand. -->",
             "", f"Reproduce: `{command}`", ""]
    seeds = sorted({r["seed"] for r in results})
    lines.append(f"{len(results)} runs; seeds {seeds}; mean ± std over seeds.")
    anchor_cols = [header for _, header, _ in ANCHORS] if anchors else []

    def grid(title, key, with_anchor):
        header = ["task"] + [LABELS.get(m, m) for m in methods] + (
            anchor_cols if with_anchor else [])
        out = ["", f"### {title}", "", "| " + " | ".join(header) + " |",
               "|" + "---|" * len(header)]
        means = {m: [] for m in methods}
        for task in tasks:
            row = [task.replace(":", " → ")]
            for m in methods:
                stats = table.get((task, m))
                row.append(_cell(stats, key))
                if stats is not None:
                    means[m].append(stats[key][0])
            if with_anchor and anchors:
                a = anchors.get(task)
                row += [f"{a[k]:.3f}" if a else "-" for k, _, _ in ANCHORS]
            out.append("| " + " | ".join(row) + " |")
        complete = [t for t in tasks if all((t, m) in table for m in methods)]
        for name, members in task_groups(complete):
            row = [f"**mean over {len(members)} complete tasks{name}**"]
            for m in methods:
                values = [table[t, m][key][0] for t in members]
                row.append(f"**{np.mean(values):.3f}**" if values else "-")
            if with_anchor and anchors:
                for col, _, _ in ANCHORS:
                    values = [anchors[t][col] for t in members if t in anchors]
                    row.append(f"**{np.mean(values):.3f}**" if values else "-")
            out.append("| " + " | ".join(row) + " |")
        if "source_only" in methods and key in ("uar", "uar_last", "uar_ensemble"):
            row = ["tasks won against source-only"]
            for m in methods:
                wins = sum(table[t, m][key][0] > table[t, "source_only"][key][0]
                           for t in complete)
                row.append("-" if m == "source_only" else f"{wins} / {len(complete)}")
            if with_anchor and anchors:
                for col, _, cross in ANCHORS:
                    wins = sum(anchors[t][col] > table[t, "source_only"][key][0]
                               for t in complete if t in anchors)
                    row.append(f"{wins} / {len(complete)}" if cross else "")
            out.append("| " + " | ".join(row) + " |")
        return out

    lines += grid("Target UAR, checkpoint selected by source-validation UAR", "uar", True)
    lines += grid("Target UAR, last step", "uar_last", True)
    lines += grid("Target UAR, mean posterior of every checkpoint (no selection)",
                  "uar_ensemble", True)
    lines += grid("Target WAR, checkpoint selected by source-validation UAR", "war", False)
    lines += grid("Source-validation UAR (held-out source speakers) of the selected "
                  "checkpoint", "source_val_uar", False)
    adapting = [m for m in methods if m not in ("source_only", "dan", "dann")]
    if adapting:
        lines += ["", "### Pseudo-labels at the selected checkpoint", "",
                  "Share of target utterances that pass the stored adaptive "
                  "thresholds, and the accuracy of those that pass (target labels "
                  "read by evaluation only).", "",
                  "| task | " + " | ".join(f"{LABELS.get(m, m)}: passed | accuracy"
                                          for m in adapting) + " |",
                  "|---|" + "---|---|" * len(adapting)]
        for task in tasks:
            row = [task.replace(":", " → ")]
            for m in adapting:
                stats = table.get((task, m))
                row += ([_cell(stats, "pseudo_passed_fraction"),
                         _cell(stats, "pseudo_passed_accuracy")] if stats else ["-", "-"])
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "Classes `loss.cluster_agreement` left unadapted at the first "
                  "clustering (their cluster was mostly predicted as another class), "
                  "with the number of seeds:", "",
                  "| task | " + " | ".join(LABELS.get(m, m) for m in adapting) + " |",
                  "|---|" + "---|" * len(adapting)]
        for task in tasks:
            row = [task.replace(":", " → ")]
            for m in adapting:
                stats = table.get((task, m))
                unadapted = stats["unadapted"] if stats else {}
                row.append(", ".join(f"{c} ({k}/{stats['uar'][2]})"
                                     for c, k in unadapted.items()) or
                           ("none" if stats else "-"))
            lines.append("| " + " | ".join(row) + " |")
    lines += _selection_table(table, tasks, methods)
    lines += _recall_table(table, [t for t in tasks if t in SHIFTED_TASKS], methods)
    return "\n".join(lines) + "\n"


def _selection_table(table, tasks, methods) -> list[str]:
    """Target UAR at the checkpoint each rule picks: source validation (the
    headline), the label-free target scores, and the oracle."""
    header = ["task", "method"] + [name for _, name in SELECTION_RULES]
    out = ["", "### Target UAR by checkpoint selection rule", "",
           "Every rule but the oracle reads no target label; each run's "
           "checkpoints, the source-only warm-up's included, are the candidates "
           "(emodna_jax/selection.py).", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # Per task: source-only and the headline method (the last); the means
    # below cover every method.
    shown = [m for m in methods if m == "source_only"] + methods[-1:]
    for task in tasks:
        for m in dict.fromkeys(shown):
            stats = table.get((task, m))
            if stats is not None:
                out.append("| " + " | ".join(
                    [task.replace(":", " → "), LABELS.get(m, m)]
                    + [_cell(stats, k) for k, _ in SELECTION_RULES]) + " |")
    complete = [t for t in tasks if all((t, m) in table for m in methods)]
    for name, members in task_groups(complete):
        for m in methods:
            out.append("| " + " | ".join(
                [f"**mean over {len(members)} tasks{name}**", LABELS.get(m, m)]
                + [f"**{np.nanmean([table[t, m][k][0] for t in members]):.3f}**"
                   for k, _ in SELECTION_RULES]) + " |")
    return out


def _recall_table(table, tasks, methods) -> list[str]:
    """Per-class target recall at the selected checkpoint, mean over seeds."""
    rows = [(t, m) for t in tasks for m in methods
            if "recall" in table.get((t, m), {})]
    if not rows:
        return []
    classes = list(dict.fromkeys(c for key in rows for c in table[key]["recall"]))
    out = ["", "### Per-class target recall, checkpoint selected by "
           "source-validation UAR", "",
           "| task | method | " + " | ".join(classes) + " |",
           "|---|---|" + "---|" * len(classes)]
    for task, m in rows:
        recall = table[task, m]["recall"]
        out.append("| " + " | ".join(
            [task.replace(":", " → "), LABELS.get(m, m)]
            + [f"{recall[c][0]:.2f}" if c in recall else "-" for c in classes]) + " |")
    return out


def figure(results, tasks, methods, anchors, path: str):
    """Bars (mean target UAR, selected checkpoint) with seed std error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = aggregate(results, tasks, methods)
    bars = [(k, header) for k, header, cross in ANCHORS if cross] if anchors else []
    names = list(methods) + [k for k, _ in bars]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 3.6))
    x = np.arange(len(tasks))
    for k, name in enumerate(names):
        if name in dict(bars):
            means = [anchors.get(t, {}).get(name, np.nan) for t in tasks]
            stds = [0.0] * len(tasks)
        else:
            means = [table[t, name]["uar"][0] if (t, name) in table else np.nan
                     for t in tasks]
            stds = [table[t, name]["uar"][1] if (t, name) in table else 0.0
                    for t in tasks]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, means, width, yerr=stds,
               capsize=2, label=LABELS.get(name) or dict(bars)[name])
    ax.set_xticks(x, [t.replace(":", "\n→ ") for t in tasks], fontsize=7)
    ax.set_ylabel("target UAR")
    ax.axhline(0.25, color="grey", lw=0.5, ls=":")
    ax.legend(fontsize=7, ncol=min(len(names), 3))
    fig.tight_layout()
    with files.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def read_results(path: str) -> dict:
    """(task, method, seed) -> result row of a results.csv written before."""
    if not os.path.exists(path):
        return {}
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            row = {k: (v if k in TEXT_COLUMNS else
                       int(v) if k in ("seed", "selected_step") else
                       float(v) if v not in ("", None) else float("nan"))
                   for k, v in row.items()}
            for key in COLUMNS:     # a csv from before the column
                row.setdefault(key, "" if key in TEXT_COLUMNS else float("nan"))
            rows[row["task"], row["method"], row["seed"]] = row
    return rows


def _beside(path: str, section: str, suffix: str) -> str:
    """docs/results.md, section 'x' -> docs/results_x.csv (or .png)."""
    return os.path.splitext(path)[0] + (f"_{section}" if section else "") + suffix


def _csv_paths(out: str, doc: str | None, section: str = "") -> list[str]:
    """results.csv in OUT, and beside --doc: committed with the doc, it lets
    a fresh checkout resume the table without the runs' folders."""
    return [os.path.join(out, "results.csv")] + (
        [_beside(doc, section, ".csv")] if doc else [])


def write_outputs(results, tasks, methods, anchors, out: str, command: str,
                  doc: str | None, section: str = ""):
    for path in _csv_paths(out, doc, section):
        with files.atomic_write(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(sorted(results, key=lambda r: (r["task"], r["method"],
                                                            r["seed"])))
    text = markdown(results, tasks, methods, anchors, command)
    for path in [os.path.join(out, "results.md")] + ([doc] if doc else []):
        image = _beside(path, section if path == doc else "", ".png")
        figure(results, tasks, methods, anchors, image)
        body = text + f"\n![target UAR per task]({os.path.basename(image)})\n"
        if path == doc:   # a new doc starts with the section's markers too
            body = _replace_section(open(doc).read() if os.path.exists(doc) else "",
                                    body, section)
        with files.atomic_write(path) as f:
            f.write(body)


def markers(section: str = "") -> tuple[str, str]:
    """The comments around a generated section of a --doc file."""
    name = f"cross_corpus.py{' ' + section if section else ''}"
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


BEGIN, END = markers()


def _replace_section(document: str, table: str, section: str = "") -> str:
    """``document`` with its generated section (between the markers) replaced,
    so prose around a generated table, and other sections, survive a rerun.
    The end marker always starts a line of its own, whether or not ``table``
    ends with a newline (or is empty)."""
    begin, end = markers(section)
    body = table if not table or table.endswith("\n") else table + "\n"
    generated = f"{begin}\n{body}{end}"
    if begin in document and end in document:
        head, rest = document.split(begin, 1)
        return head + generated + rest.split(end, 1)[1]
    return document.rstrip("\n") + "\n\n" + generated + "\n"


def write_section(doc: str, text: str, section: str = "") -> None:
    """Writes ``text`` into ``doc``'s generated section ``section`` (the file
    is created if missing; prose and other sections survive)."""
    document = open(doc).read() if os.path.exists(doc) else ""
    with files.atomic_write(doc) as f:
        f.write(_replace_section(document, text, section))


def reproduce_command(script: str, argv, *, drop=()) -> str:
    """The command a reader reruns: this machine's folders shown as DATA and
    OUT, without the flags in ``drop`` (those only rewrite tables)."""
    shown, given = [], iter(argv if argv is not None else sys.argv[1:])
    for a in given:
        folder = {"--data_dir": "DATA", "--out": "OUT"}.get(a.split("=", 1)[0])
        if folder:
            if "=" not in a:
                next(given, None)   # "--out PATH": the path is the next argument
            shown.append(f"{a.split('=', 1)[0]}={folder}")
        elif a not in drop:
            shown.append(a)
    return f"python benchmarks/{script} " + " ".join(map(shlex.quote, shown))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="Prepared corpora.")
    parser.add_argument("--out", required=True, help="Runs and tables go here.")
    parser.add_argument("--tasks", default=",".join(DEV_TASKS + SHIFTED_TASKS),
                        help="SRC:TGT pairs, comma-separated (default: the "
                             "development suite and the shifted pairs).")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override for every run, e.g. steps=800.")
    parser.add_argument("--no_anchor", action="store_true",
                        help="Skip the eGeMAPS rows (needs the opensmile package).")
    parser.add_argument("--doc", default=None,
                        help="Also write the table into this markdown file's "
                             "generated section (e.g. docs/results.md).")
    parser.add_argument("--tables_only", action="store_true",
                        help="Write the tables from the runs finished so far; "
                             "start none.")
    parser.add_argument("--rescore", action="store_true",
                        help="Recompute every finished run found in OUT from "
                             "its stored predictions (a new metric or "
                             "selection rule); start none.")
    parser.add_argument("--section", default="",
                        help="Name of that section, for several tables in one "
                             "file (its csv and figure take the name too).")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if len(t.split(":")) != 2]
    if bad:
        parser.error(f"--tasks: {bad[0]!r} is not SOURCE:TARGET")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    command = reproduce_command("cross_corpus.py", argv,
                                drop=("--tables_only", "--rescore"))

    anchors = {}
    if not args.no_anchor:
        anchors = anchor_rows(tasks, data_dir=data_dir, out=out)

    # Seed by seed, so a partial table already covers every task.
    plan = [(t, m, s) for s in seeds for t in tasks for m in methods]
    known = {}
    for path in reversed(_csv_paths(out, args.doc, args.section)):
        known.update(read_results(path))
    results, start = [], time.time()
    fresh = 0
    for k, (task, method, seed) in enumerate(plan, 1):
        local = os.path.exists(os.path.join(run_dir(out, task, method, seed),
                                            "result.json"))
        finished = (task, method, seed) in known or local
        if (args.tables_only or args.rescore) and not finished:
            continue
        if args.rescore and local:
            result = rescore_one(task, method, seed, out=out, data_dir=data_dir,
                                 overrides=args.set)
        else:
            result = known.get((task, method, seed)) or run_one(
                task, method, seed, out=out, data_dir=data_dir, overrides=args.set)
        results.append(result)
        if not finished:
            fresh += 1
            rate = (time.time() - start) / fresh
            remaining = sum(p not in known and not os.path.exists(os.path.join(
                run_dir(out, *p), "result.json")) for p in plan[k:])
            print(f"[{k}/{len(plan)}] {task} {method} seed {seed}: target UAR "
                  f"{result['uar']:.3f} (last {result['uar_last']:.3f}), "
                  f"{result['seconds']:.0f} s; about {remaining * rate / 60:.0f} min "
                  "left", flush=True)
        else:
            print(f"[{k}/{len(plan)}] {task} {method} seed {seed}: "
                  + ("rescored" if args.rescore and local else
                     "done before, skipped"), flush=True)
        write_outputs(results, tasks, methods, anchors, out, command, args.doc,
                      args.section)
    print(f"tables: {os.path.join(out, 'results.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
