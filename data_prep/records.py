"""What a corpus parser yields: one labelled utterance, before any audio is read."""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Record:
    """One utterance of a corpus.

    Attributes:
      path: absolute path of the audio file.
      emotion: canonical emotion name (see ``data_prep.labels.EMOTIONS``).
      speaker: speaker id, unique within the corpus.
      gender: 'female', 'male' or 'unknown' when the corpus does not say.
      corpus: corpus name, e.g. 'emodb'.
      split: a split the corpus itself prescribes ('train', 'validation'), or
        None to let the builder split by speaker.
    """
    path: str
    emotion: str
    speaker: str
    gender: str
    corpus: str
    split: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file a parser or the audio checks left out, and why."""
    path: str
    reason: str
