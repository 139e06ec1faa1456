r"""How much real speech the speech gate rejects, and what it says of the
sounds it is for.

  python benchmarks/speech_gate.py --data_dir=DATA [--doc=docs/results.md]

Reads the stored pitch tracks (``logmel_pitch``) of every prepared corpus in
DATA, every utterance, and reports the share the gate calls "not speech"
(each of them a wrong rejection), with the bounds' descriptors; then the
gate's verdict on synthetic noise, tones, music-like notes and near-silence.
The table is written by this program.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import cross_corpus
from data_prep import builder
from data_prep.dataset import PreparedCorpus
from data_prep.features import FeatureConfig, pitch_features
from emodna_jax import speech_gate


def non_speech_signals(rate: int = 16000, seconds: float = 5.0) -> dict:
    """The kinds of audio users feed a speech model that are not speech."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    notes = sum(0.2 * np.sin(2 * np.pi * f * t) * ((t // 0.5).astype(int) % 4 == k)
                for k, f in enumerate((262, 330, 392, 523)))
    # Notes of 0.4 s, each fading, 0.1 s apart: pauses like speech's.
    note = np.arange(int(0.4 * rate)) / rate
    pause = np.zeros(int(0.1 * rate))
    melody = np.concatenate([np.concatenate([
        0.3 * np.exp(-3 * note) * (np.sin(2 * np.pi * f * note)
                                   + 0.3 * np.sin(4 * np.pi * f * note)), pause])
        for f in (262, 294, 330, 349, 392, 440, 494, 523, 440, 392)])
    melody = np.resize(melody, len(t))
    return {"white noise": 0.1 * rng.normal(size=len(t)),
            "tone": 0.3 * np.sin(2 * np.pi * 220 * t),
            "sweep": 0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t),
            "music-like notes": notes,
            "chord": sum(0.1 * np.sin(2 * np.pi * f * t) for f in (262, 330, 392))
                     * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t)),
            "notes with pauses": melody,
            "near-silence": 1e-3 * rng.normal(size=len(t))}


def corpus_rows(data_dir: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(data_dir, builder.DATASET_NAME, "*-logmel_pitch*",
                                              builder.DATASET_VERSION))):
        corpus = PreparedCorpus(path)
        hop_s = corpus.feature_config.hop_ms / 1000
        data = corpus.source("all")
        values = [speech_gate.descriptors(np.asarray(data[i]["features"])[:, -3:], hop_s)
                  for i in range(len(data))]
        rejected = [v for v in values if speech_gate.verdict(v)]
        rows.append({"corpus": corpus.name, "n": len(values), "rejected": len(rejected),
                     **{k: (min(v[k] for v in values), max(v[k] for v in values))
                        for k in values[0]}})
    return rows


def markdown(rows, signals, command: str) -> str:
    lines = ["<!-- Written by benchmarks/speech_gate.py; do not edit by hand. -->", "",
             f"Reproduce: `{command}`", "",
             "| corpus | utterances | rejected as not speech | energy range (dB) | "
             "voiced share | longest voiced stretch (s) | steady-pitch share | "
             "consonant share |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['n']} | {r['rejected']} ({r['rejected'] / r['n']:.1%}) | "
                     + " | ".join(f"{r[k][0]:.2f}-{r[k][1]:.2f}" for k in (
                         "energy_range_db", "voiced_share", "longest_voiced_s",
                         "steady_pitch_share", "consonant_share")) + " |")
    total = sum(r["rejected"] for r in rows), sum(r["n"] for r in rows)
    lines.append(f"| **all** | {total[1]} | **{total[0]} ({total[0] / max(total[1], 1):.1%})** "
                 "| | | | | |")
    lines += ["", "| 5 s of | verdict |", "|---|---|"]
    lines += [f"| {name} | {verdict or 'speech'} |" for name, verdict in signals.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--doc", default=None)
    args = parser.parse_args(argv)
    config = FeatureConfig(kind="logmel_pitch")
    signals = {name: speech_gate.verdict(speech_gate.descriptors(
        pitch_features(np.asarray(x, np.float32), config), config.hop_ms / 1000))
        for name, x in non_speech_signals().items()}
    text = markdown(corpus_rows(os.path.expanduser(args.data_dir)), signals,
                    cross_corpus.reproduce_command("speech_gate.py", argv))
    print(text)
    if args.doc:
        cross_corpus.write_section(args.doc, text, "speech_gate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
