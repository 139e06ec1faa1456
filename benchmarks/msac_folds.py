r"""MSAC-SERNet on held-out speakers of each corpus, beside eGeMAPS.

  python benchmarks/msac_folds.py --data_dir=D --out=OUT --corpora=it_festival,en_flite \
      --doc=docs/results.md --section=msac_folds

Each corpus is what a user types: ``python -m emodna_jax.main
--config=configs/msac_single_corpus.py --config.data.source=NAME
--config.data.build_synthetic=False``, every speaker fold in turn, in
``OUT/NAME``; its ``folds.json`` holds the per-fold UAR.  Beside it, the
classical figure a user would compare with: openSMILE eGeMAPSv02 + logistic
regression, one speaker left out at a time (benchmarks/egemaps.py).  A corpus
with a ``folds.json`` is finished and skipped, so the runner resumes; runs
made with other ``--set`` overrides are refused, never mixed in.  The
table is written by this program: never edit it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus
from benchmarks import egemaps
from data_prep import files

CLASSES = ("neutral", "angry", "happy", "sad")


def run_folds(name: str, *, out: str, data_dir: str, overrides=()) -> dict:
    """Every fold of corpus ``name`` (or its finished ``folds.json``)."""
    workdir = os.path.join(out, name)
    done = os.path.join(workdir, "folds.json")
    settings = os.path.join(workdir, "overrides.json")
    if os.path.exists(settings):  # runs of other settings are never reused
        with open(settings) as f:
            stored = json.load(f)
        if stored != list(overrides):
            raise ValueError(f"{workdir}: its runs were made with --set {stored}, "
                             f"not {list(overrides)}; use another --out")
    if not os.path.exists(done):
        os.makedirs(workdir, exist_ok=True)
        with files.atomic_write(settings) as f:
            json.dump(list(overrides), f)
        command = [sys.executable, "-m", "emodna_jax.main",
                   "--config=configs/msac_single_corpus.py", f"--workdir={workdir}",
                   f"--config.data.source={name}", "--config.data.build_synthetic=False",
                   f"--config.data.data_dir={data_dir}"] + [
                       f"--config.{o}" for o in overrides]
        with open(os.path.join(workdir, "train.log"), "a") as log:
            code = subprocess.call(command, cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT)
        if code or not os.path.exists(done):
            raise RuntimeError(f"{name}: exited {code}; see {workdir}/train.log\n  "
                               + " ".join(shlex.quote(c) for c in command))
    with open(done) as f:
        return json.load(f)


def table(rows: dict, command: str) -> str:
    """The markdown section: per corpus, the fold UARs, their mean and the
    eGeMAPS leave-one-speaker-out UAR, functionals standardised per corpus
    (the anchor) and per speaker (the networks' normalisation)."""
    lines = [f"Reproduce: `{command}`", "",
             "| corpus | MSAC-SERNet UAR per fold | mean ± std | eGeMAPS + LR, "
             "leave one speaker out, per corpus | MSAC-SERNet ≥ it | "
             "eGeMAPS + LR, per speaker | MSAC-SERNet ≥ it |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        folds = ", ".join(f"{f['uar']:.3f}" for f in row["folds"]["folds"])
        mean, std = row["folds"]["uar"]["mean"], row["folds"]["uar"]["std"]
        cells = [f"{row[k]:.3f} | {'yes' if mean >= row[k] else 'no'}"
                 for k in ("egemaps", "egemaps_speaker")]
        lines.append(f"| {name} | {folds} | {mean:.3f} ± {std:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="Prepared corpora.")
    parser.add_argument("--out", required=True, help="Runs and the table go here.")
    parser.add_argument("--corpora", required=True, help="Comma-separated names.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A config override for every run.")
    parser.add_argument("--doc", default=None,
                        help="Also write the table into this markdown file's "
                             "generated section.")
    parser.add_argument("--section", default="msac_folds")
    args = parser.parse_args(argv)
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    out = os.path.abspath(args.out)
    command = cross_corpus.reproduce_command("msac_folds.py", argv)
    rows = {}
    for name in [c.strip() for c in args.corpora.split(",") if c.strip()]:
        functionals = egemaps.corpus_functionals(
            cross_corpus._prepared(data_dir, name), os.path.join(out, "egemaps"))
        classes = [c for c in CLASSES if c in set(functionals["emotion"])]
        rows[name] = {"folds": run_folds(name, out=out, data_dir=data_dir,
                                         overrides=args.set),
                      "egemaps": egemaps.in_corpus_uar(functionals, classes),
                      "egemaps_speaker": egemaps.in_corpus_uar(functionals, classes,
                                                               by="speaker")}
        text = table(rows, command)
        print(text, flush=True)
        with files.atomic_write(os.path.join(out, "results.md")) as f:
            f.write(text)
        if args.doc:
            cross_corpus.write_section(
                args.doc, "<!-- Written by benchmarks/msac_folds.py; do not edit "
                f"by hand. -->\n\n{text}", args.section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
