"""Tests for the corpus parsers, on fake trees that follow each corpus's real
naming (tiny noise WAVs, so the whole file runs in well under a second or two).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import soundfile as sf

from data_prep.corpora import (PARSERS, parse_casia, parse_corpus, parse_cremad,
                               parse_csv, parse_emodb, parse_emovo,
                               parse_enterface, parse_iemocap, parse_ravdess,
                               parse_savee, parse_tess)
from data_prep.records import Record, Skipped

_RNG = np.random.default_rng(0)


def wav(path) -> str:
    """Writes 0.1 s of quiet noise at ``path`` and returns it as a string."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, (_RNG.standard_normal(1600) * 0.01).astype(np.float32),
             16000)
    return path


def text(path, content: str) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    return path


def records(corpus, *rows):
    """Expected records from (path, emotion, speaker, gender) rows, sorted."""
    return sorted((Record(p, e, s, g, corpus) for p, e, s, g in rows),
                  key=lambda r: r.path)


# --------------------------------------------------------------------------
# EmoDB


def test_emodb_parses_names_genders_and_sorts(tmp_path):
    root = tmp_path / "emodb" / "wav"
    a = wav(root / "16a05Lc.wav")
    b = wav(root / "03a01Fa.wav")
    c = wav(root / "08b02Wb.WAV")  # extension case must not matter
    d = wav(root / "10a07Tb.wav")
    e = wav(root / "13b09Ec.wav")
    f = wav(root / "11a02Aa.wav")
    g = wav(root / "12b10Nd.wav")
    text(root.parent / "erkennung.txt", "not audio")
    wav(root / "._03a01Fa.wav")  # macOS AppleDouble debris: ignored

    got, skipped = parse_emodb(tmp_path)  # a parent of the corpus root

    assert got == records(
        "emodb",
        (b, "happy", "03", "male"), (c, "angry", "08", "female"),
        (d, "sad", "10", "male"), (f, "fear", "11", "male"),
        (g, "neutral", "12", "male"), (e, "disgust", "13", "female"),
        (a, "boredom", "16", "female"))
    assert [r.path for r in got] == sorted(r.path for r in got)
    assert all(os.path.isabs(r.path) for r in got)
    assert skipped == []


def test_emodb_unknown_emotion_letter_names_file_and_code(tmp_path):
    wav(tmp_path / "wav" / "03a01Fa.wav")
    bad = wav(tmp_path / "wav" / "03a01Xa.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'X'"):
        parse_emodb(tmp_path)


def test_emodb_oddly_named_wav_is_skipped_with_reason(tmp_path):
    good = wav(tmp_path / "wav" / "09a01Na.wav")
    odd = wav(tmp_path / "wav" / "test_tone.wav")
    got, skipped = parse_emodb(tmp_path)
    assert got == records("emodb", (good, "neutral", "09", "female"))
    assert [s.path for s in skipped] == [odd]
    assert "does not follow the EmoDB naming" in skipped[0].reason


def test_emodb_unlisted_speaker_gets_unknown_gender(tmp_path):
    p = wav(tmp_path / "99a01Wa.wav")
    got, _ = parse_emodb(tmp_path)
    assert got == records("emodb", (p, "angry", "99", "unknown"))


# --------------------------------------------------------------------------
# eNTERFACE'05


def test_enterface_regular_and_irregular_names(tmp_path):
    root = tmp_path / "enterface database"
    a = wav(root / "subject 1" / "anger" / "sentence 1" / "s1_an_1.wav")
    b = wav(root / "subject 1" / "surprise" / "sentence 5" / "s1_su_5.wav")
    c = wav(root / "subject 6" / "fear" / "sentence 2" / "S6_Fe_2 .wav")
    d = wav(root / "subject 12" / "happiness" / "sentence 3" / "s_12_ha_3.wav")
    e = wav(root / "subject 16" / "disgust" / "sentence 4" / "s16_DI_4.wav")
    # Name that does not parse: falls back to the folder names.
    f = wav(root / "subject 7" / "sadness" / "sentence 1" / "take one.wav")
    # Zero-padded subject number: the same speaker as 'subject 7'.
    h = wav(root / "subject 7" / "anger" / "sentence 2" / "s07_an_2.wav")
    # No emotion folder either: cannot be labelled.
    g = wav(root / "subject 3" / "notes.wav")
    text(root / "subject 1" / "anger" / "sentence 1" / "s1_an_1.avi", "video")

    got, skipped = parse_enterface(tmp_path)

    assert got == records(
        "enterface",
        (a, "angry", "s1", "unknown"), (b, "surprise", "s1", "unknown"),
        (c, "fear", "s6", "unknown"), (d, "happy", "s12", "unknown"),
        (e, "disgust", "s16", "unknown"), (f, "sad", "s7", "unknown"),
        (h, "angry", "s7", "unknown"))
    assert [s.path for s in skipped] == [g]
    assert "eNTERFACE" in skipped[0].reason


def test_enterface_unknown_code_names_file(tmp_path):
    bad = wav(tmp_path / "subject 2" / "anger" / "s2_xx_1.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'xx'"):
        parse_enterface(tmp_path)


# --------------------------------------------------------------------------
# CASIA


def test_casia_speakers_emotions_genders(tmp_path):
    root = tmp_path / "CASIA"
    a = wav(root / "liuchanhg" / "angry" / "201.wav")
    b = wav(root / "zhaoquanyin" / "fear" / "202.wav")
    c = wav(root / "wangzhe" / "happy" / "203.wav")
    d = wav(root / "ZhaoZuoxiang" / "neutral" / "204.wav")
    e = wav(root / "ZhaoZuoxiang" / "sad" / "205.wav")
    f = wav(root / "newspeaker" / "surprise" / "206.wav")

    got, skipped = parse_casia(tmp_path / "CASIA")

    assert got == records(
        "casia",
        (a, "angry", "liuchanhg", "female"), (b, "fear", "zhaoquanyin", "female"),
        (c, "happy", "wangzhe", "male"), (d, "neutral", "ZhaoZuoxiang", "male"),
        (e, "sad", "ZhaoZuoxiang", "male"),
        (f, "surprise", "newspeaker", "unknown"))
    assert skipped == []


def test_casia_unknown_emotion_folder_names_file(tmp_path):
    bad = wav(tmp_path / "wangzhe" / "sleepy" / "201.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'sleepy'"):
        parse_casia(tmp_path)


# --------------------------------------------------------------------------
# RAVDESS


def test_ravdess_speech_only_prefers_audio_only(tmp_path):
    root = tmp_path / "Audio_Speech_Actors_01-24"
    a = wav(root / "Actor_01" / "03-01-05-01-02-01-01.wav")
    # The same take extracted from the audio-video file: a duplicate.
    dup = wav(root / "Actor_01" / "01-01-05-01-02-01-01.wav")
    # Extracted from audio-video with no audio-only twin: kept.
    b = wav(root / "Actor_01" / "01-01-01-01-01-01-01.wav")
    c = wav(root / "Actor_02" / "03-01-02-02-01-02-02.wav")
    d = wav(root / "Actor_02" / "03-01-08-01-01-01-02.wav")
    e = wav(root / "Actor_13" / "03-01-06-01-01-01-13.wav")
    f = wav(root / "Actor_24" / "03-01-07-02-02-02-24.wav")
    g = wav(root / "Actor_24" / "03-01-03-01-01-01-24.wav")
    h = wav(root / "Actor_24" / "03-01-04-01-01-01-24.wav")
    # Song files are ignored, even with emotion codes speech lacks.
    wav(tmp_path / "Audio_Song_Actors" / "Actor_01" / "03-02-05-01-02-01-01.wav")

    got, skipped = parse_ravdess(tmp_path)

    assert got == records(
        "ravdess",
        (a, "angry", "Actor_01", "male"), (b, "neutral", "Actor_01", "male"),
        (c, "calm", "Actor_02", "female"), (d, "surprise", "Actor_02", "female"),
        (e, "fear", "Actor_13", "male"), (f, "disgust", "Actor_24", "female"),
        (g, "happy", "Actor_24", "female"), (h, "sad", "Actor_24", "female"))
    assert skipped == [Skipped(dup, f"duplicate of {a}")]


def test_ravdess_only_song_files_is_an_error(tmp_path):
    wav(tmp_path / "Actor_01" / "03-02-05-01-02-01-01.wav")
    with pytest.raises(ValueError, match="no RAVDESS files were found"):
        parse_ravdess(tmp_path)


def test_ravdess_unknown_emotion_names_file(tmp_path):
    bad = wav(tmp_path / "Actor_01" / "03-01-09-01-02-01-01.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'09'"):
        parse_ravdess(tmp_path)


# --------------------------------------------------------------------------
# IEMOCAP

_EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _label_block(name, code, start=1.0):
    return (f"[{start:.4f} - {start + 2:.4f}]\t{name}\t{code}\t"
            "[2.5000, 2.5000, 2.5000]\n"
            f"C-E1:\tNeutral state;\t()\nC-E2:\tFrustration;\t()\n"
            f"A-E1:\tval 3; act 2; dom  2;\t()\n\n")


@pytest.fixture
def iemocap(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    s1 = root / "Session1"
    labels = {
        "Ses01F_impro01_F000": "neu",
        "Ses01F_impro01_M001": "exc",
        "Ses01F_impro01_F002": "xxx",
        "Ses01F_impro01_M003": "oth",
        "Ses01F_impro01_F004": "hap",
        "Ses01F_impro01_F006": "sad",  # label line without a wav
    }
    text(s1 / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt",
         _EMO_HEADER + "".join(_label_block(n, c) for n, c in labels.items()))
    # Per-annotator detail in a subfolder: must not be read as labels.
    text(s1 / "dialog" / "EmoEvaluation" / "Categorical" /
         "Ses01F_impro01_e2_cat.txt",
         "[1.0 - 2.0]\tSes01F_impro01_F000\tang\t[1, 1, 1]\n")
    script = {"Ses01F_script01_1_M002": "ang", "Ses01F_script01_1_F003": "fru"}
    text(s1 / "dialog" / "EmoEvaluation" / "Ses01F_script01_1.txt",
         _EMO_HEADER + "".join(_label_block(n, c) for n, c in script.items()))
    s2 = {"Ses02M_impro03_F010": "sur", "Ses02M_impro03_M011": "fea",
          "Ses02M_impro03_M012": "dis"}
    text(root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_impro03.txt",
         _EMO_HEADER + "".join(_label_block(n, c) for n, c in s2.items()))

    paths = {}
    for name in [*labels, *script, *s2, "Ses01F_impro01_F005"]:
        if name == "Ses01F_impro01_F006":
            continue
        session = f"Session{int(name[3:5])}"
        dialog = name.rsplit("_", 1)[0]
        paths[name] = wav(root / session / "sentences" / "wav" / dialog /
                          f"{name}.wav")
    # Whole-dialog recordings are not utterances.
    wav(s1 / "dialog" / "wav" / "Ses01F_impro01.wav")
    return root, paths


def test_iemocap_labels_speakers_and_skips(iemocap):
    root, p = iemocap
    got, skipped = parse_iemocap(root.parent)
    assert got == records(
        "iemocap",
        (p["Ses01F_impro01_F000"], "neutral", "Ses01F", "female"),
        (p["Ses01F_impro01_M001"], "happy", "Ses01M", "male"),
        (p["Ses01F_impro01_F004"], "happy", "Ses01F", "female"),
        (p["Ses01F_script01_1_M002"], "angry", "Ses01M", "male"),
        (p["Ses01F_script01_1_F003"], "frustrated", "Ses01F", "female"),
        (p["Ses02M_impro03_F010"], "surprise", "Ses02F", "female"),
        (p["Ses02M_impro03_M011"], "fear", "Ses02M", "male"),
        (p["Ses02M_impro03_M012"], "disgust", "Ses02M", "male"))
    reasons = {os.path.basename(s.path): s.reason for s in skipped}
    assert sorted(reasons) == ["Ses01F_impro01_F002.wav",
                               "Ses01F_impro01_F005.wav",
                               "Ses01F_impro01_M003.wav"]
    assert "'xxx'" in reasons["Ses01F_impro01_F002.wav"]
    assert "'oth'" in reasons["Ses01F_impro01_M003.wav"]
    assert "no label line" in reasons["Ses01F_impro01_F005.wav"]
    assert [s.path for s in skipped] == sorted(s.path for s in skipped)


def test_iemocap_excited_kept_apart_on_request(iemocap):
    root, p = iemocap
    got, _ = parse_iemocap(root, merge_excited=False)
    by_path = {r.path: r.emotion for r in got}
    assert by_path[p["Ses01F_impro01_M001"]] == "excited"
    assert by_path[p["Ses01F_impro01_F004"]] == "happy"
    assert sorted(set(by_path.values())) == [
        "angry", "disgust", "excited", "fear", "frustrated", "happy",
        "neutral", "surprise"]


def test_iemocap_unknown_code_names_label_file(iemocap):
    root, _ = iemocap
    bad = text(root / "Session3" / "dialog" / "EmoEvaluation" /
               "Ses03F_impro01.txt",
               _EMO_HEADER + _label_block("Ses03F_impro01_F000", "bor"))
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'bor'"):
        parse_iemocap(root)


def test_iemocap_wavs_without_any_label_file(tmp_path):
    wav(tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" /
        "Ses01F_impro01_F000.wav")
    with pytest.raises(ValueError, match="no label files"):
        parse_iemocap(tmp_path)


# --------------------------------------------------------------------------
# SAVEE


def test_savee_folder_and_flat_layouts(tmp_path):
    data = tmp_path / "AudioData"
    dup = wav(data / "DC" / "a01.wav")
    b = wav(data / "JE" / "sa02.wav")
    c = wav(data / "JE" / "su03.wav")
    d = wav(data / "JK" / "n01.wav")
    e = wav(data / "KL" / "h15.wav")
    text(data / "DC" / "info.txt", "not audio")
    f = wav(tmp_path / "ALL" / "KL_d01.wav")
    g = wav(tmp_path / "ALL" / "JK_f02.wav")
    # The same utterance in both layouts: kept once (first path wins).
    a = wav(tmp_path / "ALL" / "DC_a01.wav")

    got, skipped = parse_savee(tmp_path)

    assert got == records(
        "savee",
        (a, "angry", "DC", "male"), (b, "sad", "JE", "male"),
        (c, "surprise", "JE", "male"), (d, "neutral", "JK", "male"),
        (e, "happy", "KL", "male"), (f, "disgust", "KL", "male"),
        (g, "fear", "JK", "male"))
    assert skipped == [Skipped(dup, f"duplicate of {a}")]


def test_savee_unknown_prefix_names_file(tmp_path):
    bad = wav(tmp_path / "AudioData" / "DC" / "x01.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'x'"):
        parse_savee(tmp_path)


# --------------------------------------------------------------------------
# CREMA-D


@pytest.fixture
def cremad(tmp_path):
    root = tmp_path / "CREMA-D" / "AudioWAV"
    return tmp_path / "CREMA-D", [
        wav(root / "1001_DFA_ANG_XX.wav"),
        wav(root / "1002_IEO_HAP_HI.wav"),
        wav(root / "1002_TIE_DIS_LO.wav"),
        wav(root / "1040_ITH_SAD_X.wav"),
        wav(root / "1091_WSI_FEA_MD.wav"),
        wav(root / "1091_IWW_NEU_XX.wav"),
    ]


def test_cremad_without_demographics_gender_unknown(cremad):
    root, (a, b, c, d, e, f) = cremad
    got, skipped = parse_cremad(root)
    assert got == records(
        "cremad",
        (a, "angry", "1001", "unknown"), (b, "happy", "1002", "unknown"),
        (c, "disgust", "1002", "unknown"), (d, "sad", "1040", "unknown"),
        (e, "fear", "1091", "unknown"), (f, "neutral", "1091", "unknown"))
    assert skipped == []


def test_cremad_with_demographics_csv(cremad):
    root, (a, b, c, d, e, f) = cremad
    text(root / "meta" / "VideoDemographics.csv",
         "\ufeffActorID,Age,Sex,Race,Ethnicity\n"
         "1001,51,Male,Caucasian,Not Hispanic\n"
         "1002,21,Female,Caucasian,Not Hispanic\n"
         "1040,30,Male,African American,Not Hispanic\n")
    got, _ = parse_cremad(root)
    assert got == records(
        "cremad",
        (a, "angry", "1001", "male"), (b, "happy", "1002", "female"),
        (c, "disgust", "1002", "female"), (d, "sad", "1040", "male"),
        (e, "fear", "1091", "unknown"), (f, "neutral", "1091", "unknown"))


def test_cremad_unknown_emotion_names_file(tmp_path):
    bad = wav(tmp_path / "AudioWAV" / "1001_DFA_BOR_XX.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'BOR'"):
        parse_cremad(tmp_path)


# --------------------------------------------------------------------------
# TESS


def test_tess_emotions_and_mixed_case(tmp_path):
    root = tmp_path / "TESS Toronto emotional speech set data"
    a = wav(root / "OAF_angry" / "OAF_back_angry.wav")
    b = wav(root / "YAF_pleasant_surprised" / "YAF_bite_ps.wav")
    c = wav(root / "OAF_Fear" / "OAF_bath_Fear.wav")
    d = wav(root / "YAF_neutral" / "YAF_chain_NEUTRAL.wav")
    e = wav(root / "yaf_sad" / "yaf_dog_sad.wav")
    f = wav(root / "OAF_disgust" / "OAF_back_disgust.wav")
    g = wav(root / "YAF_happy" / "YAF_bite_happy.wav")

    got, skipped = parse_tess(tmp_path)

    assert got == records(
        "tess",
        (c, "fear", "OAF", "female"), (a, "angry", "OAF", "female"),
        (f, "disgust", "OAF", "female"), (d, "neutral", "YAF", "female"),
        (g, "happy", "YAF", "female"), (b, "surprise", "YAF", "female"),
        (e, "sad", "YAF", "female"))
    assert skipped == []


def test_tess_unknown_emotion_names_file(tmp_path):
    bad = wav(tmp_path / "OAF_bored" / "OAF_back_bored.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'bored'"):
        parse_tess(tmp_path)


# --------------------------------------------------------------------------
# EMOVO


def test_emovo_emotions_speakers_genders(tmp_path):
    a = wav(tmp_path / "EMOVO" / "f1" / "dis-f1-b1.wav")
    b = wav(tmp_path / "EMOVO" / "f2" / "gio-f2-l3.wav")
    c = wav(tmp_path / "EMOVO" / "f3" / "neu-f3-n5.wav")
    d = wav(tmp_path / "EMOVO" / "m1" / "pau-m1-d2.wav")
    e = wav(tmp_path / "EMOVO" / "m2" / "rab-m2-b2.wav")
    f = wav(tmp_path / "EMOVO" / "m3" / "sor-m3-l1.wav")
    g = wav(tmp_path / "EMOVO" / "m3" / "tri-m3-b3.wav")

    got, skipped = parse_emovo(tmp_path)

    assert got == records(
        "emovo",
        (a, "disgust", "f1", "female"), (b, "happy", "f2", "female"),
        (c, "neutral", "f3", "female"), (d, "fear", "m1", "male"),
        (e, "angry", "m2", "male"), (f, "surprise", "m3", "male"),
        (g, "sad", "m3", "male"))
    assert skipped == []


def test_emovo_unknown_code_names_file(tmp_path):
    bad = wav(tmp_path / "f1" / "noi-f1-b1.wav")
    with pytest.raises(ValueError, match=re.escape(bad) + r".*'noi'"):
        parse_emovo(tmp_path)


# --------------------------------------------------------------------------
# Shared directory checks

_ALL = sorted(PARSERS)


@pytest.mark.parametrize("corpus", _ALL)
def test_missing_raw_dir(tmp_path, corpus):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError,
                       match="raw directory not found: " + re.escape(str(missing))):
        PARSERS[corpus](missing)


@pytest.mark.parametrize("corpus", _ALL)
def test_raw_dir_that_is_a_file(tmp_path, corpus):
    f = text(tmp_path / "corpus.zip", "zip")
    with pytest.raises(FileNotFoundError, match=re.escape(f)):
        PARSERS[corpus](f)


_TITLES = {"emodb": "EmoDB", "enterface": "eNTERFACE", "casia": "CASIA",
           "ravdess": "RAVDESS", "iemocap": "IEMOCAP", "savee": "SAVEE",
           "cremad": "CREMA-D", "tess": "TESS", "emovo": "EMOVO"}


@pytest.mark.parametrize("corpus", _ALL)
def test_empty_raw_dir(tmp_path, corpus):
    text(tmp_path / "README.md", "nothing here")
    with pytest.raises(ValueError) as err:
        PARSERS[corpus](tmp_path)
    message = str(err.value)
    assert f"no {_TITLES[corpus]} files were found under {tmp_path}" in message
    assert "expected" in message


def test_wavs_named_for_another_corpus_count_as_none(tmp_path):
    wav(tmp_path / "Actor_01" / "03-01-05-01-02-01-01.wav")
    with pytest.raises(ValueError, match=r"no EmoDB files.*1 \.wav file"):
        parse_emodb(tmp_path)


# --------------------------------------------------------------------------
# CSV manifests


def test_csv_manifest(tmp_path):
    a = wav(tmp_path / "data" / "audio" / "a.wav")
    b = wav(tmp_path / "data" / "audio" / "b.wav")
    c = wav(tmp_path / "elsewhere" / "c.wav")
    d = wav(tmp_path / "data" / "d.wav")
    manifest = text(tmp_path / "data" / "mine.csv",
                    "Path,EMOTION,Speaker,Gender,Split,notes\n"
                    "audio/b.wav,Anger,spk2,F,val,first take\n"
                    "\n"
                    f"{c},HAPPINESS,spk1,man,train,\n"
                    "audio/a.wav,fearful,spk1,,,\n"
                    "d.wav, Neutral ,spk3,female,test,\n")
    got, skipped = parse_csv(manifest)
    assert got == [
        Record(a, "fear", "spk1", "unknown", "mine", None),
        Record(b, "angry", "spk2", "female", "mine", "validation"),
        Record(d, "neutral", "spk3", "female", "mine", "test"),
        Record(c, "happy", "spk1", "male", "mine", "train"),
    ]
    assert skipped == []


def test_csv_without_optional_columns_and_named(tmp_path):
    a = wav(tmp_path / "x.wav")
    manifest = text(tmp_path / "list.csv", "speaker,path,emotion\nbob,x.wav,sad\n")
    got, _ = parse_csv(manifest, name="mycorpus")
    assert got == [Record(a, "sad", "bob", "unknown", "mycorpus", None)]


@pytest.mark.parametrize("content, pattern", [
    ("path,emotion\nx.wav,sad\n",
     r"row 1: missing required column\(s\) speaker"),
    ("path,emotion,speaker\nx.wav,sad,s1\ny.wav,bored-ish,s1\n",
     r"row 3: unknown emotion label 'bored-ish'"),
    ("path,emotion,speaker,gender\nx.wav,sad,s1,f\n\ny.wav,sad,s1,robot\n",
     r"row 4: unknown gender 'robot'"),
    ("path,emotion,speaker,split\nx.wav,sad,s1,holdout\n",
     r"row 2: unknown split 'holdout'"),
    ("path,emotion,speaker\nx.wav,sad,\n", r"row 2: empty speaker"),
    ("path,emotion,speaker\n,sad,s1\n", r"row 2: empty path"),
    ("path,emotion,speaker\nx.wav,sad,s1\nx.wav,happy,s2\n",
     r"row 3: .*x\.wav is already listed in row 2"),
])
def test_csv_errors_name_file_row_and_value(tmp_path, content, pattern):
    wav(tmp_path / "x.wav")
    wav(tmp_path / "y.wav")
    manifest = text(tmp_path / "m.csv", content)
    with pytest.raises(ValueError, match=re.escape(manifest) + " " + pattern):
        parse_csv(manifest)


def test_csv_missing_audio_file(tmp_path):
    wav(tmp_path / "x.wav")
    manifest = text(tmp_path / "m.csv",
                    "path,emotion,speaker\nx.wav,sad,s1\n"
                    + "\n" * 4 + "gone/y.wav,sad,s1\n")
    missing = str(tmp_path / "gone" / "y.wav")
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"{manifest} row 7: file not found: "
                                       f"{missing}")):
        parse_csv(manifest)


def test_every_problem_of_a_manifest_is_reported_in_one_run(tmp_path):
    """A missing file, an unknown label and a duplicate path: one error
    lists all three, by row; a longer list is capped, with its count."""
    wav(tmp_path / "x.wav")
    manifest = text(tmp_path / "m.csv", "path,emotion,speaker\n"
                    "x.wav,sad,s1\ngone.wav,sad,s1\nx.wav,happy,s2\n"
                    "x.wav,grumpy,s3\n")
    with pytest.raises(ValueError) as error:
        parse_csv(manifest)
    message = str(error.value)
    assert message.splitlines() == [message]
    assert message.startswith(f"{manifest}: 4 problems: row 3: file not found: ")
    assert "row 4: " in message and "is already listed in row 2" in message
    assert "row 5: unknown emotion label 'grumpy'; row 5: " in message
    many = text(tmp_path / "many.csv", "path,emotion,speaker\n"
                + "".join(f"gone{k}.wav,sad,s1\n" for k in range(9)))
    with pytest.raises(FileNotFoundError, match=r"many\.csv: 9 problems: row 2: .*"
                                                r"row 6: [^;]*; and 4 more$"):
        parse_csv(many)


def test_csv_missing_manifest_and_empty_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="CSV manifest not found"):
        parse_csv(tmp_path / "none.csv")
    empty = text(tmp_path / "empty.csv", "\n\n")
    with pytest.raises(ValueError, match="empty manifest"):
        parse_csv(empty)
    header_only = text(tmp_path / "h.csv", "path,emotion,speaker\n")
    with pytest.raises(ValueError, match="no rows"):
        parse_csv(header_only)


# --------------------------------------------------------------------------
# Registry and dispatch


def test_registry_names():
    assert set(PARSERS) == {"emodb", "enterface", "casia", "ravdess", "iemocap",
                            "savee", "cremad", "tess", "emovo"}


def test_parse_corpus_dispatches(tmp_path, iemocap):
    root, p = iemocap
    assert parse_corpus("iemocap", raw_dir=root) == parse_iemocap(root)
    merged, _ = parse_corpus("IEMOCAP", raw_dir=root, merge_excited=False)
    assert {r.emotion for r in merged
            if r.path == p["Ses01F_impro01_M001"]} == {"excited"}
    a = wav(tmp_path / "cd" / "1001_DFA_ANG_XX.wav")
    assert parse_corpus("CREMA-D", raw_dir=tmp_path / "cd")[0] == records(
        "cremad", (a, "angry", "1001", "unknown"))
    manifest = text(tmp_path / "cd" / "m.csv", "path,emotion,speaker\n"
                    "1001_DFA_ANG_XX.wav,angry,x\n")
    assert parse_corpus("csv", manifest=manifest, name="n")[0] == [
        Record(a, "angry", "x", "unknown", "n", None)]


def test_parse_corpus_errors(tmp_path):
    with pytest.raises(ValueError) as err:
        parse_corpus("berlin", raw_dir=tmp_path)
    assert "unknown corpus 'berlin'" in str(err.value)
    for name in [*PARSERS, "csv"]:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="'emodb' needs raw_dir"):
        parse_corpus("emodb")
    with pytest.raises(ValueError, match="'csv' needs manifest"):
        parse_corpus("csv", raw_dir=tmp_path)
    with pytest.raises(TypeError, match="merge_excited"):
        parse_corpus("emodb", raw_dir=tmp_path, merge_excited=False)


def test_speaker_folds_balance_utterances_greedily():
    from data_prep import splits
    # Hand-worked: a(5) -> fold 1, b(4) -> fold 2, c(3) -> fold 2 (7),
    # d(2) -> fold 1 (7), e(1) -> either lightest (8 / 7).
    folds = splits.speaker_folds({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}, 2)
    assert sorted(map(tuple, folds)) in ([("a", "d", "e"), ("b", "c")],
                                         [("a", "d"), ("b", "c", "e")])
    assert all(isinstance(s, str) for fold in folds for s in fold)
    with pytest.raises(ValueError, match="3 folds need at least 3 speakers"):
        splits.speaker_folds({"a": 1, "b": 1}, 3)
