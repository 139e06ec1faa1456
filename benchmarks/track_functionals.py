r"""How much emotion the prosody tracks carry as utterance statistics alone.

  python benchmarks/track_functionals.py --data_dir=DATA \
      --corpora=it_festival,en_flite,fr_espeak,es_phone,cs_festival \
      --doc=docs/results.md --section=probe_track_functionals

A diagnostic, not a model.  From the three per-frame tracks of the
``logmel_pitch`` features (log F0, voicing NCCF, log energy; docs/data.md),
each utterance becomes the 18 functionals of emodna_jax/utterance_stats.py:
F0 over voiced frames, energy over all frames and over voiced frames (each
mean, std, 20th/50th/80th percentile), the voiced share of frames, voiced
onsets per 100 frames and the energy velocity; one column leaves the
velocity out (the 17 of the recipe before it), one adds the number of
frames.  The functionals are standardised per speaker (label-free, as the
pipeline's per-speaker normalisation; one column over the corpus, for
comparison) and scored exactly as benchmarks/egemaps.py scores eGeMAPS (logistic
regression, one speaker left out, predictions pooled).  Beside them:
eGeMAPS as that anchor computes it (standardised over the corpus) and
eGeMAPS standardised per speaker, the same normalisation the networks'
frames get.  Where these beat a network fed the same tracks frame by frame,
the network is not reading the utterance-level prosody its input holds.

With ``--tasks=SRC:TGT,...`` the table is across corpora instead: the
logistic regression is trained on the whole source and scored on the
target, as the runner's eGeMAPS columns are (benchmarks/cross_corpus.py).
It is the figure a network given these statistics has to beat before its
frames or its adaptation add anything.  The table is written by this
program.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus
from benchmarks import egemaps
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig
from emodna_jax.utterance_stats import NUM_STATS, functionals

CLASSES = ("neutral", "angry", "happy", "sad")


def track_table(corpus: PreparedCorpus) -> dict:
    """Every utterance's track functionals and, last, its number of frames,
    in egemaps.py's table layout."""
    rows, emotions, speakers = [], [], []
    data = corpus.source("all")
    for i in range(len(data)):
        raw = data[i]
        rows.append(functionals(raw["features"], with_length=True))
        emotions.append(corpus.emotions[int(raw["emotion"])])
        speakers.append(int(raw["speaker"]))
    return {"x": np.stack(rows), "emotion": np.asarray(emotions),
            "speaker": np.asarray(speakers)}


def in_corpus_lines(args, features) -> list[str]:
    """Per corpus, one speaker left out at a time."""
    lines = ["UAR leaving one speaker out, logistic regression, the task's four "
             "classes.", "",
             f"| corpus | {NUM_STATS} track functionals, per-speaker | the same without "
             "the energy velocity | the same + utterance length "
             f"| the {NUM_STATS}, per-corpus | eGeMAPS, per-corpus (the anchor) | eGeMAPS, "
             "per-speaker |", "|---|---|---|---|---|---|---|"]
    for name in args.corpora.split(","):
        corpus = PreparedCorpus.find(args.data_dir, name, features)
        smile = egemaps.corpus_functionals(corpus, args.egemaps_cache)
        with_length = track_table(corpus)
        tracks = dict(with_length, x=with_length["x"][:, :-1])
        no_velocity = dict(with_length, x=with_length["x"][:, :-2])   # velocity: 2nd last
        uars = [egemaps.in_corpus_uar(tracks, CLASSES, by="speaker"),
                egemaps.in_corpus_uar(no_velocity, CLASSES, by="speaker"),
                egemaps.in_corpus_uar(with_length, CLASSES, by="speaker"),
                egemaps.in_corpus_uar(tracks, CLASSES)]
        uars += [egemaps.in_corpus_uar(smile, CLASSES),
                 egemaps.in_corpus_uar(smile, CLASSES, by="speaker")]
        lines.append(f"| {name} | " + " | ".join(f"{u:.3f}" for u in uars) + " |")
        print(lines[-1], flush=True)
    return lines


def cross_corpus_lines(args, features) -> list[str]:
    """Per task, trained on the whole source and scored on the target."""
    tasks = [t.split(":") for t in args.tasks.split(",") if t.strip()]
    tables = {}
    for name in dict.fromkeys(n for task in tasks for n in task):
        corpus = PreparedCorpus.find(args.data_dir, name, features)
        tracks = track_table(corpus)
        tables[name] = (dict(tracks, x=tracks["x"][:, :-1]),
                        dict(tracks, x=tracks["x"][:, :-2]),   # without the velocity
                        egemaps.corpus_functionals(corpus, args.egemaps_cache))
    lines = ["Target UAR, logistic regression trained on the whole source, the "
             "task's four classes.", "",
             f"| task | {NUM_STATS} track functionals, per-speaker | the same without the "
             f"energy velocity | the {NUM_STATS}, per-corpus | "
             "eGeMAPS, per-corpus (the anchor) | eGeMAPS, per-speaker |",
             "|---|---|---|---|---|---|"]
    columns = []
    for source, target in tasks:
        (s_tracks, s_short, s_smile), (t_tracks, t_short, t_smile) = (tables[source],
                                                                     tables[target])
        uars = [egemaps.cross_corpus_uar(s_tracks, t_tracks, CLASSES, by="speaker"),
                egemaps.cross_corpus_uar(s_short, t_short, CLASSES, by="speaker"),
                egemaps.cross_corpus_uar(s_tracks, t_tracks, CLASSES),
                egemaps.cross_corpus_uar(s_smile, t_smile, CLASSES),
                egemaps.cross_corpus_uar(s_smile, t_smile, CLASSES, by="speaker")]
        columns.append(uars)
        lines.append(f"| {source} → {target} | " + " | ".join(f"{u:.3f}" for u in uars)
                     + " |")
        print(lines[-1], flush=True)
    lines.append(f"| **mean over {len(tasks)} tasks** | "
                 + " | ".join(f"**{m:.3f}**" for m in np.mean(columns, axis=0)) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--corpora", default="", help="comma-separated names")
    parser.add_argument("--tasks", default="",
                        help="SRC:TGT pairs, comma-separated: the table across corpora")
    parser.add_argument("--egemaps_cache", required=True,
                        help="eGeMAPS functionals per corpus (benchmarks/egemaps.py's cache)")
    parser.add_argument("--doc", default=None)
    parser.add_argument("--section", default="probe_track_functionals")
    args = parser.parse_args(argv)
    if bool(args.corpora) == bool(args.tasks):
        parser.error("give --corpora (held-out speakers) or --tasks (across corpora)")
    features = FeatureConfig(kind="logmel_pitch")
    shown = [a for a in (argv if argv is not None else sys.argv[1:])
             if not a.startswith("--egemaps_cache")] + ["--egemaps_cache=CACHE"]
    lines = [f"Reproduce: `{cross_corpus.reproduce_command('track_functionals.py', shown)}`",
             ""] + (cross_corpus_lines(args, features) if args.tasks
                    else in_corpus_lines(args, features))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
