"""Parsers that turn raw emotional-speech corpora into labelled records.

Every corpus is read in its original public layout and naming, so users can
unpack the archive they downloaded and point a parser at it (or at a parent
folder).  Each parser returns ``(records, skipped)`` sorted by path; no audio
is read here, that is left to the builder.

Conventions shared by all parsers:

* ``.wav`` files are searched recursively (extension case-insensitive).
  Hidden files and ``__MACOSX`` folders are ignored: they are the AppleDouble
  copies macOS puts into zip archives, not utterances.
* A ``.wav`` whose name does not follow the corpus naming goes to ``skipped``
  with a reason: visible to the user, but not fatal, since a parent folder may
  hold other material.
* A name that does follow the naming but carries an unknown emotion code raises
  ``ValueError``: it means the mapping is wrong, and dropping such files
  silently would bias the class balance.
* The same utterance found twice (an archive unpacked twice below the parent
  folder, audio extracted from several RAVDESS modalities) is kept once; the
  other copies go to ``skipped`` as duplicates.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Callable, Hashable, Iterator, Optional, Union

from data_prep.labels import canonical_emotion
from data_prep.records import Record, Skipped

PathLike = Union[str, "os.PathLike[str]"]
Result = tuple[list[Record], list[Skipped]]


# --------------------------------------------------------------------------
# Shared helpers


def _is_junk(name: str) -> bool:
    """Hidden files and macOS archive debris are never corpus material."""
    return name.startswith(".") or name == "__MACOSX"


def _find_files(root: str, suffix: str) -> list[str]:
    """All files below ``root`` ending in ``suffix`` (any case), sorted.

    ``os.walk`` with ``followlinks`` rather than ``Path.rglob`` because corpora
    are often symlinked into a data folder.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _is_junk(d))
        for name in filenames:
            if not _is_junk(name) and name.lower().endswith(suffix):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _lookup(table: dict[str, str], code: str, path: str, title: str,
            what: str = "emotion code") -> str:
    """Maps a corpus code, failing loudly (with file and code) when unknown."""
    try:
        return table[code]
    except KeyError:
        raise ValueError(
            f"{path}: unknown {title} {what} {code!r}; expected one of "
            f"{', '.join(sorted(table))}") from None


class _Collector:
    """Gathers one corpus's records.

    Shared so that the directory check, duplicate handling, the
    'nothing found' error and the sorting behave the same for every corpus.
    """

    def __init__(self, corpus: str, title: str, raw_dir: PathLike,
                 expected: str):
        root = os.path.abspath(os.path.expanduser(os.fspath(raw_dir)))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{title} raw directory not found: {root}")
        self.root = root
        self.corpus = corpus
        self.title = title
        self.expected = expected
        self._candidates: dict[Hashable, list[tuple[int, Record]]] = {}
        self._skipped: list[Skipped] = []
        self._unrecognised: list[Skipped] = []
        self._matched = 0

    def wavs(self) -> list[str]:
        return _find_files(self.root, ".wav")

    def add(self, path: str, emotion: str, speaker: str, gender: str, *,
            key: Hashable, rank: int = 0) -> None:
        """Adds an utterance; among copies with the same key the lowest
        ``rank`` (then the first path) is kept."""
        self._matched += 1
        record = Record(path, emotion, speaker, gender, self.corpus)
        self._candidates.setdefault(key, []).append((rank, record))

    def skip(self, path: str, reason: str) -> None:
        """A corpus utterance that cannot be used (e.g. no agreed label)."""
        self._matched += 1
        self._skipped.append(Skipped(path, reason))

    def named(self, pattern: re.Pattern) -> Iterator[tuple[str, re.Match]]:
        """(path, match) of every wav whose stem fully matches ``pattern``;
        the others are recorded as unrecognised."""
        for path in self.wavs():
            match = pattern.fullmatch(_stem(path))
            if match:
                yield path, match
            else:
                self.unrecognised(path)

    def unrecognised(self, path: str) -> None:
        """A wav that is not named like an utterance of this corpus."""
        self._unrecognised.append(Skipped(
            path, f"does not follow the {self.title} naming "
                  f"(expected {self.expected})"))

    def result(self) -> Result:
        if not self._matched:
            extra = ""
            if self._unrecognised:
                extra = (f" ({len(self._unrecognised)} .wav file(s) with other "
                         f"names, e.g. {self._unrecognised[0].path})")
            raise ValueError(
                f"no {self.title} files were found under {self.root}{extra}; "
                f"expected {self.expected}")
        records = []
        skipped = self._skipped + self._unrecognised
        for candidates in self._candidates.values():
            candidates.sort(key=lambda item: (item[0], item[1].path))
            keeper = candidates[0][1]
            records.append(keeper)
            skipped.extend(Skipped(r.path, f"duplicate of {keeper.path}")
                           for _, r in candidates[1:])
        return (sorted(records, key=lambda r: r.path),
                sorted(skipped, key=lambda s: s.path))


# --------------------------------------------------------------------------
# EmoDB (Berlin Database of Emotional Speech)

_EMODB_NAME = re.compile(r"(\d{2})([a-z]\d{2})([A-Z])([a-z]*)")
_EMODB_EMOTIONS = {
    "W": "angry", "L": "boredom", "E": "disgust", "A": "fear",
    "F": "happy", "T": "sad", "N": "neutral",
}
_EMODB_GENDERS = {
    **{s: "male" for s in ("03", "10", "11", "12", "15")},
    **{s: "female" for s in ("08", "09", "13", "14", "16")},
}


def parse_emodb(raw_dir: PathLike) -> Result:
    """EmoDB: ``wav/03a01Fa.wav`` = speaker, text, emotion letter, version."""
    c = _Collector("emodb", "EmoDB", raw_dir,
                   "names like wav/03a01Fa.wav: speaker 03, text a01, "
                   "emotion letter F, version a")
    for path, m in c.named(_EMODB_NAME):
        speaker, _, code, _ = m.groups()
        emotion = _lookup(_EMODB_EMOTIONS, code, path, "EmoDB")
        c.add(path, emotion, speaker, _EMODB_GENDERS.get(speaker, "unknown"),
              key=_stem(path))
    return c.result()


# --------------------------------------------------------------------------
# eNTERFACE'05

# Tolerant of the real corpus's irregular names: 's6_an_1 ', 'S6_An_1',
# 's_12_an_1', 's6_an1' once blanks and dashes are folded into underscores.
_ENTERFACE_NAME = re.compile(r"s_?(\d+)_([a-z]{2,3})_?(\d+)")
_ENTERFACE_SUBJECT = re.compile(r"subject_?(\d+)")
_ENTERFACE_EMOTIONS = {
    "an": "angry", "ang": "angry", "di": "disgust", "dis": "disgust",
    "fe": "fear", "fea": "fear", "ha": "happy", "hap": "happy",
    "sa": "sad", "sad": "sad", "su": "surprise", "sur": "surprise",
}


def _fold(name: str) -> str:
    """Lower case, blanks and dashes as single underscores."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower()).strip("_")


def _enterface_from_folders(path: str, root: str
                            ) -> tuple[Optional[str], Optional[str]]:
    """Subject and emotion from 'subject N' / 'anger' folders, when the file
    name itself is too irregular to parse."""
    subject = emotion = None
    for folder in os.path.relpath(os.path.dirname(path), root).split(os.sep):
        m = _ENTERFACE_SUBJECT.fullmatch(_fold(folder))
        if m:
            subject = str(int(m.group(1)))
            continue
        try:
            emotion = canonical_emotion(folder)
        except ValueError:
            pass
    return subject, emotion


def parse_enterface(raw_dir: PathLike) -> Result:
    """eNTERFACE'05 audio: ``subject 1/anger/sentence 1/s1_an_1.wav``.

    The subject and emotion come from the file name; when the name does not
    parse, from the 'subject N' and emotion folder names.  Gender is not
    published, so it is 'unknown'.  Speakers are ``s<N>``.
    """
    c = _Collector("enterface", "eNTERFACE", raw_dir,
                   "names like subject 1/anger/sentence 1/s1_an_1.wav: "
                   "subject, emotion code (an, di, fe, ha, sa, su), sentence")
    for path in c.wavs():
        m = _ENTERFACE_NAME.fullmatch(_fold(_stem(path)))
        if m:
            subject = str(int(m.group(1)))
            emotion = _lookup(_ENTERFACE_EMOTIONS, m.group(2), path,
                              "eNTERFACE")
        else:
            subject, emotion = _enterface_from_folders(path, c.root)
            if subject is None or emotion is None:
                c.unrecognised(path)
                continue
        # Keyed by path: the irregular names make name-based duplicate
        # detection unreliable.
        c.add(path, emotion, f"s{subject}", "unknown", key=path)
    return c.result()


# --------------------------------------------------------------------------
# CASIA (Chinese emotional speech, public 1200-utterance subset)

_CASIA_GENDERS = {
    "liuchanhg": "female", "zhaoquanyin": "female",
    "wangzhe": "male", "zhaozuoxiang": "male",
}


def parse_casia(raw_dir: PathLike) -> Result:
    """CASIA: ``<speaker>/<emotion>/<id>.wav``; the folders carry the labels.

    Speakers outside the four published ones get gender 'unknown'.
    """
    c = _Collector("casia", "CASIA", raw_dir,
                   "<speaker>/<emotion>/<id>.wav with emotion folders angry, "
                   "fear, happy, neutral, sad, surprise")
    for path in c.wavs():
        parts = os.path.relpath(path, c.root).split(os.sep)
        if len(parts) < 3:
            c.unrecognised(path)
            continue
        speaker, folder = parts[-3], parts[-2]
        emotion = canonical_emotion(folder, source=f"{path} (emotion folder)")
        gender = _CASIA_GENDERS.get(speaker.lower(), "unknown")
        c.add(path, emotion, speaker, gender,
              key=(speaker, emotion, _stem(path)))
    return c.result()


# --------------------------------------------------------------------------
# RAVDESS

_RAVDESS_NAME = re.compile(r"(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})")
_RAVDESS_EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
}
_RAVDESS_MODALITIES = {"01": "audio-video", "02": "video-only",
                       "03": "audio-only"}
_RAVDESS_CHANNELS = {"01": "speech", "02": "song"}


def parse_ravdess(raw_dir: PathLike) -> Result:
    """RAVDESS speech: ``Actor_01/03-01-05-01-02-01-01.wav``.

    Fields: modality, vocal channel, emotion, intensity, statement,
    repetition, actor.  Song files (channel 02) are ignored silently, they are
    a different task.  Audio extracted from audio-video files (modality 01/02)
    is kept unless the audio-only file (03) of the same take exists, which is
    preferred.  Odd actors are male, even ones female; speakers are
    ``Actor_NN``.
    """
    c = _Collector("ravdess", "RAVDESS", raw_dir,
                   "speech names like Actor_01/03-01-05-01-02-01-01.wav: "
                   "modality-channel-emotion-intensity-statement-repetition-"
                   "actor, channel 01 (speech)")
    for path, m in c.named(_RAVDESS_NAME):
        modality, channel, code, *take, actor = m.groups()
        _lookup(_RAVDESS_MODALITIES, modality, path, "RAVDESS",
                "modality code")
        if _lookup(_RAVDESS_CHANNELS, channel, path, "RAVDESS",
                   "vocal channel code") == "song":
            continue
        emotion = _lookup(_RAVDESS_EMOTIONS, code, path, "RAVDESS")
        gender = "male" if int(actor) % 2 else "female"
        rank = 0 if modality == "03" else int(modality)
        c.add(path, emotion, f"Actor_{actor}", gender,
              key=(channel, code, *take, actor), rank=rank)
    return c.result()


# --------------------------------------------------------------------------
# IEMOCAP

_IEMOCAP_UTTERANCE = re.compile(r"(Ses\d{2})[FM]_.+_([FM])\d{3}")
_IEMOCAP_LABEL_LINE = re.compile(r"\[[^\]]*\]\s+(\S+)\s+(\S+)(?:\s|$)")
_IEMOCAP_EMOTIONS = {
    "neu": "neutral", "ang": "angry", "hap": "happy", "exc": "excited",
    "sad": "sad", "fru": "frustrated", "sur": "surprise", "fea": "fear",
    "dis": "disgust",
}
# Codes IEMOCAP uses for utterances without a usable label.
_IEMOCAP_UNLABELLED = {
    "xxx": "no agreed label (IEMOCAP 'xxx': annotators disagreed)",
    "oth": "label 'other' (IEMOCAP 'oth')",
}
_IEMOCAP_CODES = sorted({*_IEMOCAP_EMOTIONS, *_IEMOCAP_UNLABELLED})


def _iemocap_labels(root: str) -> dict[str, tuple[str, str]]:
    """Utterance name -> (code, label file) from every
    ``dialog/EmoEvaluation/*.txt``.

    Only files directly in an EmoEvaluation folder are read: its subfolders
    (Categorical, Attribute, Self-evaluation) hold per-annotator detail in
    other formats.
    """
    labels: dict[str, tuple[str, str]] = {}
    for txt in _find_files(root, ".txt"):
        if os.path.basename(os.path.dirname(txt)).lower() != "emoevaluation":
            continue
        with open(txt, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                if not line.startswith("["):
                    continue  # header, annotator lines (C-, A-), blanks
                m = _IEMOCAP_LABEL_LINE.match(line)
                if not m:
                    raise ValueError(
                        f"{txt} line {line_no}: malformed IEMOCAP label "
                        f"line {line.strip()!r}")
                name, code = m.groups()
                if code not in _IEMOCAP_CODES:
                    raise ValueError(
                        f"{txt} line {line_no}: unknown IEMOCAP emotion code "
                        f"{code!r} for {name}; expected one of "
                        f"{', '.join(_IEMOCAP_CODES)}")
                previous = labels.get(name)
                if previous and previous[0] != code:
                    raise ValueError(
                        f"{txt} line {line_no}: {name} labelled {code!r} but "
                        f"{previous[1]} labels it {previous[0]!r}")
                labels[name] = (code, txt)
    return labels


def parse_iemocap(raw_dir: PathLike, *, merge_excited: bool = True) -> Result:
    """IEMOCAP: ``SessionN/sentences/wav/<dialog>/<utterance>.wav`` labelled
    by ``SessionN/dialog/EmoEvaluation/<dialog>.txt``.

    ``merge_excited`` maps 'exc' to happy, the usual practice since the two are
    hard to tell apart and 'hap' alone is small.  Utterances labelled 'xxx' or
    'oth', and wavs with no label line, go to ``skipped``.  Label lines whose
    wav is absent are ignored: users often unpack only some sessions.
    Whole-dialog recordings (under ``dialog/``) are not utterances and are
    ignored.  The speaker is the session plus the letter before the utterance
    number (``Ses01F_impro01_M012`` -> ``Ses01M``, male).
    """
    c = _Collector("iemocap", "IEMOCAP", raw_dir,
                   "SessionN/sentences/wav/<dialog>/Ses01F_impro01_F000.wav "
                   "with labels in SessionN/dialog/EmoEvaluation/<dialog>.txt")
    labels = _iemocap_labels(c.root)
    for path in c.wavs():
        folders = os.path.relpath(path, c.root).lower().split(os.sep)[:-1]
        if "dialog" in folders:
            continue
        name = _stem(path)
        m = _IEMOCAP_UTTERANCE.fullmatch(name)
        if not m:
            c.unrecognised(path)
            continue
        if not labels:
            raise ValueError(
                f"IEMOCAP utterances found under {c.root} but no label files "
                "(SessionN/dialog/EmoEvaluation/<dialog>.txt)")
        if name not in labels:
            c.skip(path, f"no label line for {name} in any "
                         "dialog/EmoEvaluation/*.txt file")
            continue
        code = labels[name][0]
        if code in _IEMOCAP_UNLABELLED:
            c.skip(path, _IEMOCAP_UNLABELLED[code])
            continue
        emotion = _IEMOCAP_EMOTIONS[code]
        if merge_excited and emotion == "excited":
            emotion = "happy"
        session, letter = m.groups()
        gender = "female" if letter == "F" else "male"
        c.add(path, emotion, session + letter, gender, key=name)
    return c.result()


# --------------------------------------------------------------------------
# SAVEE

_SAVEE_IN_FOLDER = re.compile(r"([a-z]{1,2})(\d+)", re.IGNORECASE)
_SAVEE_FLAT = re.compile(r"([a-z]{2})_([a-z]{1,2})(\d+)", re.IGNORECASE)
_SAVEE_SPEAKER_FOLDER = re.compile(r"[A-Za-z]{2}")
_SAVEE_EMOTIONS = {
    "a": "angry", "d": "disgust", "f": "fear", "h": "happy",
    "n": "neutral", "sa": "sad", "su": "surprise",
}
_SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")  # all male


def parse_savee(raw_dir: PathLike) -> Result:
    """SAVEE: ``AudioData/DC/a01.wav`` or the flat Kaggle ``ALL/DC_a01.wav``.

    The emotion is the letter prefix (a, d, f, h, n, sa, su).  The four
    speakers are male; any other speaker folder gets gender 'unknown'.
    """
    c = _Collector("savee", "SAVEE", raw_dir,
                   "names like AudioData/DC/a01.wav or ALL/DC_a01.wav: "
                   "speaker, emotion prefix (a, d, f, h, n, sa, su), number")
    for path in c.wavs():
        stem = _stem(path)
        folder = os.path.basename(os.path.dirname(path))
        flat = _SAVEE_FLAT.fullmatch(stem)
        nested = _SAVEE_IN_FOLDER.fullmatch(stem)
        if flat:
            speaker, code, number = flat.groups()
        elif nested and _SAVEE_SPEAKER_FOLDER.fullmatch(folder):
            speaker, (code, number) = folder, nested.groups()
        else:
            c.unrecognised(path)
            continue
        speaker, code = speaker.upper(), code.lower()
        emotion = _lookup(_SAVEE_EMOTIONS, code, path, "SAVEE")
        gender = "male" if speaker in _SAVEE_SPEAKERS else "unknown"
        c.add(path, emotion, speaker, gender, key=(speaker, code, int(number)))
    return c.result()


# --------------------------------------------------------------------------
# CREMA-D

_CREMAD_NAME = re.compile(r"(\d+)_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})",
                          re.IGNORECASE)
_CREMAD_EMOTIONS = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
    "NEU": "neutral", "SAD": "sad",
}


def _cremad_genders(root: str) -> dict[str, str]:
    """Actor id -> gender from ``VideoDemographics.csv``, wherever it lies."""
    genders: dict[str, str] = {}
    for path in _find_files(root, ".csv"):
        if os.path.basename(path).lower() != "videodemographics.csv":
            continue
        with open(path, newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                actor = (row.get("ActorID") or "").strip()
                sex = (row.get("Sex") or "").strip().lower()
                if actor and sex in ("male", "female"):
                    genders[actor] = sex
    return genders


def parse_cremad(raw_dir: PathLike) -> Result:
    """CREMA-D: ``AudioWAV/1001_DFA_ANG_XX.wav`` = actor, sentence, emotion,
    level.

    Gender comes from ``VideoDemographics.csv`` when it is anywhere under
    ``raw_dir`` (it ships separately from the audio), else 'unknown'.
    """
    c = _Collector("cremad", "CREMA-D", raw_dir,
                   "names like AudioWAV/1001_DFA_ANG_XX.wav: actor, sentence, "
                   "emotion (ANG, DIS, FEA, HAP, NEU, SAD), level")
    genders = _cremad_genders(c.root)
    for path, m in c.named(_CREMAD_NAME):
        actor, _, code, _ = m.groups()
        emotion = _lookup(_CREMAD_EMOTIONS, code.upper(), path, "CREMA-D")
        c.add(path, emotion, actor, genders.get(actor, "unknown"),
              key=_stem(path).upper())
    return c.result()


# --------------------------------------------------------------------------
# TESS (Toronto emotional speech set)

_TESS_NAME = re.compile(r"([A-Za-z]{3})_(.+)_([A-Za-z]+)")
_TESS_EMOTIONS = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
    "neutral": "neutral", "sad": "sad", "ps": "surprise",
    "surprise": "surprise", "surprised": "surprise",
}
_TESS_SPEAKERS = ("OAF", "YAF")  # both female


def parse_tess(raw_dir: PathLike) -> Result:
    """TESS: ``OAF_angry/OAF_back_angry.wav``; the emotion is the last
    underscore field of the name ('ps' = pleasant surprise), any case."""
    c = _Collector("tess", "TESS", raw_dir,
                   "names like OAF_angry/OAF_back_angry.wav: speaker (OAF, "
                   "YAF), word, emotion")
    for path, m in c.named(_TESS_NAME):
        speaker, _, code = m.groups()
        speaker = speaker.upper()
        emotion = _lookup(_TESS_EMOTIONS, code.lower(), path, "TESS")
        gender = "female" if speaker in _TESS_SPEAKERS else "unknown"
        c.add(path, emotion, speaker, gender, key=_stem(path).lower())
    return c.result()


# --------------------------------------------------------------------------
# EMOVO (Italian)

_EMOVO_NAME = re.compile(r"([a-z]{3})-([fm]\d)-([a-z]+\d*)", re.IGNORECASE)
_EMOVO_EMOTIONS = {
    "dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fear",
    "rab": "angry", "sor": "surprise", "tri": "sad",
}


def parse_emovo(raw_dir: PathLike) -> Result:
    """EMOVO: ``f1/dis-f1-b1.wav`` = emotion, speaker, sentence; speakers
    f1-f3 are female, m1-m3 male."""
    c = _Collector("emovo", "EMOVO", raw_dir,
                   "names like f1/dis-f1-b1.wav: emotion (dis, gio, neu, pau, "
                   "rab, sor, tri), speaker, sentence")
    for path, m in c.named(_EMOVO_NAME):
        code, speaker, _ = (g.lower() for g in m.groups())
        emotion = _lookup(_EMOVO_EMOTIONS, code, path, "EMOVO")
        gender = "female" if speaker[0] == "f" else "male"
        c.add(path, emotion, speaker, gender, key=_stem(path).lower())
    return c.result()


# --------------------------------------------------------------------------
# Generic CSV manifest

_MANIFEST_REQUIRED = ("path", "emotion", "speaker")
_MANIFEST_OPTIONAL = ("gender", "split")
_MANIFEST_GENDERS = {
    "": "unknown", "unknown": "unknown",
    "f": "female", "female": "female", "woman": "female",
    "m": "male", "male": "male", "man": "male",
}
_MANIFEST_SPLITS = {
    "": None, "train": "train", "test": "test",
    "validation": "validation", "val": "validation", "valid": "validation",
    "dev": "validation",
}


def _manifest_columns(header: list[str], where: str) -> dict[str, int]:
    """Column name -> index for the columns we use; others are ignored."""
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = raw.strip().lower()
        if name not in _MANIFEST_REQUIRED + _MANIFEST_OPTIONAL:
            continue
        if name in columns:
            raise ValueError(f"{where}: column {name!r} appears twice")
        columns[name] = index
    missing = [name for name in _MANIFEST_REQUIRED if name not in columns]
    if missing:
        raise ValueError(
            f"{where}: missing required column(s) {', '.join(missing)}; the "
            f"header must name path, emotion, speaker (found: "
            f"{', '.join(cell.strip() for cell in header)})")
    return columns


def _manifest_value(table: dict, value: str, where: str, what: str):
    try:
        return table[value.lower()]
    except KeyError:
        raise ValueError(
            f"{where}: unknown {what} {value!r}; expected one of "
            f"{', '.join(sorted(k for k in table if k))} or empty") from None


# A manifest's problems are reported together, in one line: this many, then a count.
MAX_LISTED_PROBLEMS = 5


def _manifest_record(cell: dict, *, base: str, corpus: str, row: int,
                     first_row: dict) -> tuple[Optional[Record], list[str]]:
    """One manifest row as a Record, or None with every problem it has
    (each 'row N: what is wrong'), so that one run can list them all."""
    problems = []

    def checked(read):
        try:
            return read()
        except ValueError as error:
            problems.append(str(error))
            return None

    where = f"row {row}"
    if not cell["path"]:
        problems.append(f"{where}: empty path")
    if not cell["speaker"]:
        problems.append(f"{where}: empty speaker")
    emotion = checked(lambda: canonical_emotion(cell["emotion"], source=where))
    gender = checked(lambda: _manifest_value(_MANIFEST_GENDERS, cell.get("gender", ""),
                                             where, "gender"))
    split = checked(lambda: _manifest_value(_MANIFEST_SPLITS, cell.get("split", ""),
                                            where, "split"))
    if cell["path"]:
        path = os.path.normpath(os.path.join(base, os.path.expanduser(cell["path"])))
        if not os.path.isfile(path):
            problems.append(f"{where}: file not found: {path}")
        if path in first_row:
            # The same file twice could land in two splits and leak.
            problems.append(f"{where}: {path} is already listed in row {first_row[path]}")
        else:
            first_row[path] = row
    if problems:
        return None, problems
    return Record(path, emotion, cell["speaker"], gender, corpus, split), []


def _manifest_error(manifest: str, problems: list[str]) -> Exception:
    """Every problem of a manifest in one line: one as it is, several as a
    short list (each up to its first ';'), capped, with their count.  A
    FileNotFoundError when files are all that is missing."""
    kind = (FileNotFoundError if all(": file not found: " in p for p in problems)
            else ValueError)
    if len(problems) == 1:
        return kind(f"{manifest} {problems[0]}")
    listed = "; ".join(p.split(";")[0] for p in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    return kind(f"{manifest}: {len(problems)} problems: {listed}"
                + (f"; and {more} more" if more > 0 else ""))


def parse_csv(manifest: PathLike, name: Optional[str] = None) -> Result:
    """A user-written manifest for corpora without a parser of their own.

    Columns ``path, emotion, speaker`` are required, ``gender`` and ``split``
    optional; names are case-insensitive, other columns ignored.  Relative
    paths resolve against the manifest's folder.  Errors name the manifest and
    the row, counted as lines of the file (header = row 1), so they can be
    found in an editor; blank lines are ignored.  Every row's problems are
    reported in one error (a missing file, an unknown label and a duplicate
    need one run, not three).  The records' corpus is ``name``, by default
    the manifest's stem.  Nothing is ever skipped: every row is the user's
    explicit choice, so a bad row is an error.
    """
    manifest = os.path.abspath(os.path.expanduser(os.fspath(manifest)))
    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"CSV manifest not found: {manifest}")
    corpus = name or _stem(manifest)
    base = os.path.dirname(manifest)
    columns: Optional[dict[str, int]] = None
    records: list[Record] = []
    problems: list[str] = []
    first_row: dict[str, int] = {}
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _manifest_columns(row, f"{manifest} row {reader.line_num}")
                continue
            cell = {col: row[i].strip() if i < len(row) else ""
                    for col, i in columns.items()}
            record, found = _manifest_record(cell, base=base, corpus=corpus,
                                             row=reader.line_num, first_row=first_row)
            problems += found
            if record is not None:
                records.append(record)
    if columns is None:
        raise ValueError(f"{manifest}: empty manifest; expected a header row "
                         "with columns path, emotion, speaker")
    if problems:
        raise _manifest_error(manifest, problems)
    if not records:
        raise ValueError(f"{manifest}: the manifest has a header but no rows")
    return sorted(records, key=lambda r: r.path), []


# --------------------------------------------------------------------------
# Registry and entry point

PARSERS: dict[str, Callable[..., Result]] = {
    "emodb": parse_emodb,
    "enterface": parse_enterface,
    "casia": parse_casia,
    "ravdess": parse_ravdess,
    "iemocap": parse_iemocap,
    "savee": parse_savee,
    "cremad": parse_cremad,
    "tess": parse_tess,
    "emovo": parse_emovo,
}


def parse_corpus(corpus: str, *, raw_dir: Optional[PathLike] = None,
                 manifest: Optional[PathLike] = None, **options) -> Result:
    """Parses ``corpus`` by name: one entry point for configs and the CLI.

    Names are matched ignoring case, '-' and '_' ('CREMA-D' -> 'cremad').
    ``'csv'`` takes ``manifest`` (and optionally ``name``); every other corpus
    takes ``raw_dir``.  ``options`` go to the parser (e.g. ``merge_excited``
    for IEMOCAP).
    """
    key = re.sub(r"[-_\s]", "", str(corpus).lower())
    if key == "csv":
        if manifest is None:
            raise ValueError("corpus 'csv' needs manifest=<path of the CSV "
                             "manifest>")
        if raw_dir is not None:
            raise ValueError("corpus 'csv' takes manifest=, not raw_dir=")
        return parse_csv(manifest, **options)
    if key not in PARSERS:
        raise ValueError(f"unknown corpus {corpus!r}; known corpora: "
                         f"{', '.join(sorted(PARSERS))}, csv")
    if raw_dir is None:
        raise ValueError(f"corpus {key!r} needs raw_dir=<folder of the "
                         "unpacked corpus>")
    if manifest is not None:
        raise ValueError(f"corpus {key!r} takes raw_dir=, not manifest= "
                         "(use corpus 'csv' for a manifest)")
    return PARSERS[key](raw_dir, **options)
