r"""The Quickstart's claim, measured: on the built-in synthetic pair, at the
default seed, Emo-DNA's target UAR is above that of the same model trained on
the source alone.

  python benchmarks/default_run.py --doc=docs/speed.md --section=default_run

The whole default config runs (the synthetic build, 400 steps of each method,
evaluation of every checkpoint) on one device, as on a user's CPU; the table
gives both methods' figures and the wall time of each part.  It exits 1 when
Emo-DNA is not ahead by ``--margin``, so a change that cost the adaptation
its lead shows here.  A training run is an experiment, not a test: it lives
here rather than in tests/.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus
from configs import default
from emodna_jax import config_variants, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="", help="Markdown file to write the table into.")
    parser.add_argument("--section", default="default_run")
    parser.add_argument("--margin", type=float, default=0.02,
                        help="Emo-DNA must lead source-only by more than this.")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="emodna_default_") as tmp:
        config = default.get_config()
        config.data.data_dir = os.path.join(tmp, "data")
        config.num_devices = 1
        for name, method_config in (("Emo-DNA", config),
                                    ("source-only", config_variants.source_only(config))):
            start = time.perf_counter()
            result = train.train_and_evaluate(method_config, os.path.join(tmp, name))
            rows.append((name, result, time.perf_counter() - start))
    (_, emodna, _), (_, baseline, _) = rows
    lead = emodna["target_uar"] - baseline["target_uar"]
    ok = lead > args.margin
    lines = [f"Reproduce: `{cross_corpus.reproduce_command('default_run.py', argv)}`", "",
             f"{os.cpu_count()} CPUs, one device; the first row's time includes "
             "building the synthetic shards.", "",
             "| method | target UAR | target WAR | source-val UAR | wall s |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['target_uar']:.3f} | {r['target_war']:.3f} | "
              f"{r['source_val_uar']:.3f} | {seconds:.0f} |" for name, r, seconds in rows]
    lines += ["", f"Emo-DNA's lead: {lead:+.3f} (must exceed {args.margin}): "
              + ("ok" if ok else "**missed**")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, args.section)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
