"""The canonical emotion vocabulary every corpus is mapped onto.

Corpora name the same emotion in different ways (``W`` in EmoDB, ``ang`` in
IEMOCAP, ``angry`` in CASIA, ``rabbia`` in EMOVO).  Training across corpora
needs one vocabulary, so every parser maps onto :data:`EMOTIONS`, and free-text
labels (CSV manifests) are matched case-insensitively against the names and
their common synonyms.
"""

from __future__ import annotations

# Canonical order: the order class indices follow whenever a corpus's label set
# is turned into a label map.
EMOTIONS = (
    "neutral",
    "angry",
    "happy",
    "sad",
    "fear",
    "disgust",
    "surprise",
    "boredom",
    "calm",
    "frustrated",
    "excited",
    "contempt",
)

_SYNONYMS = {
    "neutral": ("neu", "neutrality", "neutre", "normal"),
    "angry": ("anger", "ang", "mad", "rage"),
    "happy": ("happiness", "hap", "joy", "joyful", "glad"),
    "sad": ("sadness", "unhappy"),
    "fear": ("fearful", "afraid", "fea", "scared", "anxiety", "anxious"),
    "disgust": ("disgusted", "dis"),
    "surprise": ("surprised", "sur", "pleasant_surprise", "pleasant surprise",
                 "pleasant_surprised", "ps"),
    "boredom": ("bored", "boring"),
    "calm": ("calmness",),
    "frustrated": ("frustration", "fru"),
    "excited": ("excitement", "exc"),
    "contempt": ("contemptuous",),
}

_LOOKUP = {name: name for name in EMOTIONS}
for _name, _alts in _SYNONYMS.items():
    for _alt in _alts:
        _LOOKUP[_alt] = _name


def canonical_emotion(label: str, *, source: str = "") -> str:
    """Maps a free-text emotion label onto :data:`EMOTIONS`.

    Args:
      label: the label as written in the corpus (any case, surrounding blanks
        ignored).
      source: where the label came from (a file, a manifest row), used only to
        make the error message useful.

    Raises:
      ValueError: naming ``source`` and the label when it is not recognised.
    """
    key = str(label).strip().lower()
    if key in _LOOKUP:
        return _LOOKUP[key]
    where = f"{source}: " if source else ""
    raise ValueError(
        f"{where}unknown emotion label {label!r}; expected one of "
        f"{', '.join(EMOTIONS)} (or a common synonym such as 'anger', "
        "'happiness', 'fearful')")


def sort_emotions(names) -> list[str]:
    """Sorts canonical emotion names into the canonical order."""
    order = {name: i for i, name in enumerate(EMOTIONS)}
    unknown = [n for n in names if n not in order]
    if unknown:
        raise ValueError(f"not canonical emotion names: {sorted(set(unknown))}")
    return sorted(set(names), key=order.__getitem__)


GENDERS = ("female", "male", "unknown")
