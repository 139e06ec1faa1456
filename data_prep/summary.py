"""The closing summary of a preparation run: what went in, what was left out."""

from __future__ import annotations

import collections
from typing import Sequence

from data_prep.extract import Extracted
from data_prep.records import Skipped


def summarize(extracted: Sequence[Extracted], skipped: Sequence[Skipped],
              splits: dict) -> dict:
    """A JSON-able summary; stored with the shards and printed by the CLI."""
    records = [e.record for e in extracted]
    return {
        "files_found": len(extracted) + len(skipped),
        "files_used": len(extracted),
        "hours": sum(e.duration_s for e in extracted) / 3600.0,
        "frames": sum(e.num_frames for e in extracted),
        "per_class": dict(sorted(collections.Counter(
            r.emotion for r in records).items())),
        "per_speaker": dict(sorted(collections.Counter(
            r.speaker for r in records).items())),
        "per_split": {"all": len(extracted),
                      **{name: len(indices) for name, indices in splits.items()}},
        "converted": [[e.record.path, ", ".join(e.conversions)]
                      for e in extracted if e.conversions],
        "skipped": [[s.path, s.reason] for s in skipped],
    }


def _table(counts: dict, indent: str = "    ") -> list[str]:
    width = max((len(str(k)) for k in counts), default=0)
    return [f"{indent}{k:<{width}}  {v}" for k, v in counts.items()]


def format_summary(name: str, path: str, summary: dict) -> str:
    lines = [
        f"{name}: {summary['files_used']} of {summary['files_found']} files, "
        f"{summary['hours']:.3f} h of audio, {summary['frames']} frames",
        f"  dataset: {path}",
        "  per class:", *_table(summary["per_class"]),
        "  per speaker:", *_table(summary["per_speaker"]),
        "  per split:", *_table(summary["per_split"]),
    ]
    if summary["converted"]:
        lines.append(f"  converted ({len(summary['converted'])}):")
        lines += [f"    {p}: {how}" for p, how in summary["converted"]]
    lines.append(f"  skipped ({len(summary['skipped'])}):")
    lines += [f"    {p}: {why}" for p, why in summary["skipped"]]
    return "\n".join(lines)
