"""Prediction with a trained model, without its training data.

An export folder (``--mode=export``, emodna_jax/export.py) holds the model
(``model.jax``: a ``jax.export`` serialisation with symbolic batch and
frames; ``model.onnx``: the same function for onnxruntime) and
``preprocess.json``: everything that turns audio into the frames the model
reads (feature settings, normalisation, the target corpus's utterance
statistics), the class names, the OOD score and threshold, and the window.
:class:`Predictor` needs nothing else; with ``backend="onnx"`` it does not
import JAX either (numpy, librosa, soundfile and onnxruntime).

How a file is normalised.  Training standardised every utterance with its
own speaker's statistics.  ``predict_batch(items, speaker=...)`` does the
same for a batch that is one speaker's recordings: the frames of all of them
give the per-bin mean and std, and their utterance statistics the
speaker's.  Without ``speaker`` each file stands alone: its frames are
standardised with its own mean and std (as an utterance of unknown speaker
is during training), and its utterance statistics with the target corpus's
(``preprocess.json``), since nothing says what this speaker's neutral
sounds like.  A file is then judged against itself, so a recording that is
one emotion throughout carries less of its level cues; pass ``speaker``
when you have several files of one person.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import soundfile as sf

from data_prep import audio
from data_prep import stats as stats_lib
from data_prep.features import (FeatureConfig, FeatureExtractor, pitch_features,
                                pitch_frame_length)
from emodna_jax import ood
from emodna_jax import scoring
from emodna_jax import speech_gate
from emodna_jax import utterance_stats

FORMAT = "emodna_jax export"
# 2: 18 utterance statistics (the energy velocity added); 3: the model may
# return one row of outputs per checkpoint (config.serve='checkpoint_ensemble').
FORMAT_VERSION = 3
PREPROCESS = "preprocess.json"
MODEL_JAX = "model.jax"
MODEL_ONNX = "model.onnx"
BACKENDS = ("jax", "onnx")
WINDOWS_PER_CALL = 8        # one compiled shape for any file length
# Files longer than this are read and featurised in blocks of BLOCK_S, so
# memory does not grow with their length (an hour-long recording).
LONG_FILE_S = 60.0
BLOCK_S = 10.0
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")


@dataclasses.dataclass
class Prediction:
    """One file's verdict, as ``--mode=predict`` prints it."""
    path: str
    emotion: str | None = None
    probabilities: dict | None = None
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    error: str | None = None
    windows: list | None = None  # per window: start_s, end_s, probabilities
    # Why the file is not speech (emodna_jax/speech_gate.py): then no emotion
    # is given and out_of_distribution is True.
    not_speech: str | None = None
    # Whether the target corpus confirmed this emotion's naming: False from a
    # model not adapted to it, and for an emotion the adaptation could not
    # tell apart from another there (Predictor.adaptation says which); None
    # from an export that does not say.
    adapted: bool | None = None


def emotion_adapted(adaptation: dict | None, emotion: str) -> bool | None:
    """``Prediction.adapted`` of a prediction of ``emotion`` under an export's
    ``adaptation`` entry (export.adaptation_info; None: the export does not
    say)."""
    if adaptation is None:
        return None
    unsure = set(adaptation["unadapted"]).union(*map(set, adaptation["not_told_apart"]))
    return bool(adaptation["adapted"]) and emotion not in unsure


class ExportError(ValueError):
    """A folder that is not a usable export: one line says why."""


def read_preprocess(folder: str, backend: str = "jax") -> dict:
    """``preprocess.json`` of an export folder, checked: the files the
    backend needs exist and the format is one this version reads."""
    if backend not in BACKENDS:
        raise ExportError(f"backend={backend!r}: one of {', '.join(BACKENDS)}")
    path = os.path.join(folder, PREPROCESS)
    if not os.path.isfile(path):
        raise ExportError(f"{folder}: not an export folder (no {PREPROCESS}); write one "
                          "with --mode=export --export_dir=...")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: unreadable ({error})") from None
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: format {info.get('format')!r} version "
                          f"{info.get('format_version')!r}; this version of emodna_jax "
                          f"reads {FORMAT!r} version {FORMAT_VERSION}: export it again")
    model = os.path.join(folder, MODEL_JAX if backend == "jax" else MODEL_ONNX)
    if not os.path.isfile(model):
        raise ExportError(f"{model}: missing (the {backend} backend needs it)")
    return info


class Preprocessor:
    """Audio -> the frames the model reads, as the training data were made:
    data_prep's loading and features, then the normalisation and the
    utterance statistics of training (module docstring)."""

    def __init__(self, info: dict):
        self.info = info
        self.feature_config = FeatureConfig.from_dict(info["features"])
        self._extractor = None
        norm = info["normalization"]
        self.kind, self.std_floor = norm["kind"], norm["std_floor"]
        self.mean = None if norm.get("mean") is None else np.asarray(norm["mean"], np.float32)
        self.std = None if norm.get("std") is None else np.asarray(norm["std"], np.float32)
        self.band_mask = (None if norm.get("band_mask") is None
                          else np.asarray(norm["band_mask"], np.float32))
        stats = info.get("utterance_stats")
        self.stats = None if stats is None else utterance_stats.SpeakerStats(
            {}, {}, np.asarray(stats["corpus_mean"]), np.asarray(stats["corpus_std"]), {})

    def features(self, item) -> tuple[np.ndarray, np.ndarray]:
        """``(features [T, bins] as stored, pitch tracks [T, 3])`` of a path
        or ``(waveform, rate)``; the tracks are what the speech gate reads."""
        cfg = self.feature_config
        if isinstance(item, (str, os.PathLike)):
            if not os.path.isfile(item):
                raise FileNotFoundError(item)
            waveform = audio.load_audio(str(item), cfg.sample_rate).waveform
        else:
            waveform, item_rate = item
            waveform = audio.to_rate(np.asarray(waveform, np.float32), int(item_rate),
                                     cfg.sample_rate)
        stored = self._extractor_for()(waveform)
        tracks = (stored[:, -3:] if cfg.kind == "logmel_pitch"
                  else pitch_features(waveform, cfg))
        return stored, tracks

    def is_long(self, item) -> bool:
        """Whether ``item`` is a file over ``LONG_FILE_S`` (read in blocks)."""
        if not isinstance(item, (str, os.PathLike)) or not os.path.isfile(item):
            return False
        try:
            return sf.info(str(item)).duration > LONG_FILE_S
        except RuntimeError:   # unreadable: the whole-file path names the problem
            return False

    def _blocks(self, path: str):
        """``(features, tracks)`` of consecutive stretches of ``BLOCK_S`` of a
        long file, each computed with enough audio on either side that its
        frames are the whole file's (but for the pitch interpolated across
        unvoiced frames near a block's edge)."""
        cfg = self.feature_config
        hop, rate = cfg.hop_length, cfg.sample_rate
        context = -(-2 * max(cfg.n_fft, pitch_frame_length(rate)) // hop) * hop  # whole hops
        with sf.SoundFile(path) as f:
            native, length = f.samplerate, f.frames
            samples = int(np.ceil(length * rate / native))           # at ``rate``
            total = 1 + samples // hop
            step = int(BLOCK_S * rate) // hop
            for first in range(0, total, step):
                last = min(first + step, total)
                begin = max(first * hop - context, 0)
                end = min(last * hop + context, samples)
                lo = int(np.floor(begin * native / rate))
                hi = min(int(np.ceil(end * native / rate)) + 1, length)
                f.seek(lo)
                block = f.read(hi - lo, dtype="float32", always_2d=True).mean(1)
                if not np.all(np.isfinite(block)):
                    raise audio.AudioProblem("audio holds NaN or infinite samples")
                waveform = audio.to_rate(block, native, rate)
                shift = int(round(begin - lo * rate / native))
                waveform = waveform[shift:shift + (end - begin)]
                stored = self._extractor_for()(waveform)
                tracks = (stored[:, -3:] if cfg.kind == "logmel_pitch"
                          else pitch_features(waveform, cfg))
                keep = slice(first - begin // hop, last - begin // hop)
                yield stored[keep], tracks[keep]

    def long_file_moments(self, path: str):
        """First pass over a long file: ``((mean, std) of its frames, its
        pitch tracks [T, 3])``; a file whose loudest frame is under
        ``load_audio``'s silence level (in RMS) is refused as silent."""
        sums, tracks, peak = stats_lib.GroupSums(), [], 0.0
        for stored, block_tracks in self._blocks(path):
            as_f64 = stored.astype(np.float64)
            sums.add("file", len(stored), as_f64.sum(0), np.square(as_f64).sum(0))
            tracks.append(block_tracks.copy())   # not a view holding the block
            peak = max(peak, float(np.exp(block_tracks[:, 2].max() / 2)))
        if peak < audio.SILENCE_PEAK:
            raise audio.AudioProblem("silent (peak below -80 dBFS)")
        mean, std = stats_lib.mean_std(sums.to_json(), ["file"])
        return (mean.astype(np.float32), np.maximum(std, self.std_floor).astype(np.float32)
                ), np.concatenate(tracks)

    def long_file_frames(self, path: str, moments, tracks):
        """Second pass: the model frames of a long file, block by block,
        normalised as a file of unknown speaker is (``frames``)."""
        stats = (None if self.stats is None else
                 self.stats.standardised(np.asarray(tracks, np.float64), None))
        for stored, _ in self._blocks(path):
            yield self._normalised(stored, moments, stats)

    def _extractor_for(self):
        if self._extractor is None:   # refuses 'npy' features, with the reason
            self._extractor = FeatureExtractor(self.feature_config)
        return self._extractor

    def _normalised(self, stored, moments, stats):
        """One utterance's (or block's) model frames: standardised with
        ``moments`` (mean, std), the band mask, the utterance statistics."""
        if self.kind == "corpus":
            moments = (self.mean, self.std)
        mean, std = moments
        frames = ((stored.astype(np.float32) - mean) / std).astype(np.float32)
        if self.band_mask is not None:
            frames = frames * self.band_mask
        if stats is not None:
            frames = np.concatenate([frames, np.broadcast_to(stats, (len(frames), len(stats)))], 1)
        return frames

    def frames(self, stored: list, speaker: bool) -> list:
        """Model frames of each of ``stored`` (features from ``features``):
        with ``speaker``, all of them one speaker's, normalised together."""
        if self.kind == "corpus":
            moments = [(self.mean, self.std)] * len(stored)
        elif speaker:
            sums = stats_lib.GroupSums()
            for values in stored:
                as_f64 = values.astype(np.float64)
                sums.add("speaker", len(values), as_f64.sum(0), np.square(as_f64).sum(0))
            mean, std = stats_lib.mean_std(sums.to_json(), ["speaker"])
            moments = [(mean.astype(np.float32),
                        np.maximum(std, self.std_floor).astype(np.float32))] * len(stored)
        else:
            moments = [(values.astype(np.float32).mean(0),
                        np.maximum(values.astype(np.float32).std(0), self.std_floor))
                       for values in stored]
        stats = self._statistics(stored, speaker)
        return [self._normalised(values, moment, None if stats is None else stats[k])
                for k, (values, moment) in enumerate(zip(stored, moments))]

    def _statistics(self, stored: list, speaker: bool):
        """[N, 17] standardised utterance statistics, or None without them."""
        if self.stats is None:
            return None
        raw = np.stack([utterance_stats.functionals(values) for values in stored])
        if speaker:
            return self.stats.of_group(raw)
        return np.stack([self.stats.standardised(values, None) for values in stored])


class _JaxBackend:
    def __init__(self, folder: str):
        import jax
        with open(os.path.join(folder, MODEL_JAX), "rb") as f:
            exported = jax.export.deserialize(bytearray(f.read()))
        self._call = jax.jit(exported.call)

    def __call__(self, frames, mask):
        logits, e = self._call(frames, mask)
        return np.asarray(logits), np.asarray(e)


class _OnnxBackend:
    def __init__(self, folder: str):
        import onnxruntime
        self._session = onnxruntime.InferenceSession(
            os.path.join(folder, MODEL_ONNX), providers=["CPUExecutionProvider"])

    def __call__(self, frames, mask):
        logits, e = self._session.run(None, {"frames": frames,
                                             "mask": mask.astype(np.float32)})
        return logits, e


class Predictor:
    """A trained model on new audio: ``Predictor.load(folder)``, then
    ``predict_file``, ``predict_waveform`` or ``predict_batch``."""

    def __init__(self, info: dict, model):
        """``model``: ``(frames [B, W, F] float32, mask [B, W] bool) ->
        (posterior logits [B, C], embedding [B, D])`` for windows of
        ``info["window"]["frames"]`` frames; a checkpoint ensemble's returns
        one row per checkpoint (logits [B, K, C], embedding [B, K, D])."""
        self.info, self._model = info, model
        self.preprocessor = Preprocessor(info)
        self.classes = list(info["classes"])
        self.window = int(info["window"]["frames"])
        self.hop_s = self.preprocessor.feature_config.hop_ms / 1000
        ood = info["ood"]
        self.ood_score, self.ood_threshold = ood["score"], ood["threshold"]
        self.speech_gate = bool(info["speech_gate"])
        # What the served checkpoint adapted to the target (export.adaptation_info).
        self.adaptation = info.get("adaptation")

    @classmethod
    def load(cls, path: str, backend: str = "jax") -> "Predictor":
        """``path``: an export folder, or a workdir holding one in ``export/``."""
        if not os.path.isfile(os.path.join(path, PREPROCESS)) and os.path.isfile(
                os.path.join(path, "export", PREPROCESS)):
            path = os.path.join(path, "export")
        info = read_preprocess(path, backend)
        return cls(info, (_JaxBackend if backend == "jax" else _OnnxBackend)(path))

    def predict_file(self, path: str) -> Prediction:
        return self.predict_batch([path])[0]

    def predict_waveform(self, waveform: np.ndarray, rate: int) -> Prediction:
        return self.predict_batch([(waveform, rate)])[0]

    def predict_batch(self, items, speaker: str | None = None) -> list[Prediction]:
        """One Prediction per item (a path, or ``(waveform, rate)``), in
        order.  ``speaker``: the items are all this speaker's recordings and
        are normalised together (module docstring); without it each stands
        alone, and items are read one at a time.  An item that cannot be read
        gets its error, the others are still predicted (a speaker's
        statistics then come from the rest)."""
        names = [str(item) if isinstance(item, (str, os.PathLike)) else f"<waveform {k}>"
                 for k, item in enumerate(items)]
        if speaker is None:
            return [self._predict_long(item) if self.preprocessor.is_long(item)
                    else self._predict_group([item], [name], False)[0]
                    for item, name in zip(items, names)]
        return self._predict_group(items, names, True)

    def _predict_group(self, items, names, speaker: bool) -> list[Prediction]:
        stored, results = [], [None] * len(items)
        for k, item in enumerate(items):
            try:
                values, tracks = self.preprocessor.features(item)
            except FileNotFoundError:
                results[k] = Prediction(names[k], error="file not found")
                continue
            except (audio.AudioProblem, OSError) as problem:
                results[k] = Prediction(names[k], error=str(problem))
                continue
            reason = (speech_gate.verdict(speech_gate.descriptors(tracks, self.hop_s))
                      if self.speech_gate else None)
            if reason is None:
                stored.append((k, values))
            else:     # no emotion for what is not speech, whatever the model says
                results[k] = Prediction(names[k], out_of_distribution=True,
                                        not_speech=reason)
        if stored:
            frames = self.preprocessor.frames([v for _, v in stored], speaker)
            for (k, _), values in zip(stored, frames):
                results[k] = self._score(names[k], values)
        return results

    def _score(self, name: str, frames: np.ndarray) -> Prediction:
        """One utterance's verdict from its frames in memory."""
        starts = scoring.window_starts(len(frames), self.window)
        return self._verdict(name, len(frames), starts, (
            (start,) + scoring.window(frames, start, self.window) for start in starts))

    def _verdict(self, name: str, num_frames: int, starts, windows) -> Prediction:
        """The windows (``(start, frames, mask)`` in ``starts``' order) through
        the model in fixed batches, combined as evaluation combines them
        (emodna_jax/scoring.py)."""
        logits = []
        batch = mask = None
        rows = 0
        for _, frames, valid in windows:
            if batch is None:
                batch = np.zeros((WINDOWS_PER_CALL, self.window, frames.shape[1]), np.float32)
                mask = np.zeros((WINDOWS_PER_CALL, self.window), bool)
            batch[rows], mask[rows] = frames, valid
            rows += 1
            if rows == WINDOWS_PER_CALL:
                logits.append(np.asarray(self._model(batch, mask)[0]))
                rows = 0
        if rows:
            mask[rows:] = False
            mask[rows:, 0] = True   # padding rows: one valid frame, ignored
            logits.append(np.asarray(self._model(batch, mask)[0])[:rows])
        logits = np.concatenate(logits)
        if logits.ndim == 2:        # one checkpoint: an ensemble of one
            logits = logits[:, None, :]
        # Each checkpoint's windows combined as evaluation combines them, then
        # their posteriors averaged, as evaluation's checkpoint ensemble.
        _, combined = scoring.combine({"logits": logits}, np.zeros(len(starts), np.int32))
        utterance = combined["logits"][0]                   # [K, C]
        probs = _softmax(utterance).mean(axis=0)
        score = float(ood.checkpoint_ensemble_score(self.ood_score, utterance[:, None])[0])
        windows = [{"start_s": round(start * self.hop_s, 3),
                    "end_s": round(min(start + self.window, num_frames) * self.hop_s, 3),
                    "probabilities": {c: float(p) for c, p in zip(self.classes, row)}}
                   for start, row in zip(starts, _softmax(logits).mean(axis=1))]
        emotion = self.classes[int(np.argmax(probs))]
        return Prediction(
            name, emotion=emotion,
            probabilities={c: float(p) for c, p in zip(self.classes, probs)},
            ood_score=score,
            out_of_distribution=(None if self.ood_threshold is None
                                 else bool(score < self.ood_threshold)),
            windows=windows, adapted=emotion_adapted(self.adaptation, emotion))

    def _predict_long(self, path: str) -> Prediction:
        """A file over ``LONG_FILE_S``, in blocks: a first pass for its
        statistics and the speech gate, a second for the frames, which are
        windowed as they come, so memory does not grow with the file."""
        try:
            moments, tracks = self.preprocessor.long_file_moments(path)
        except (audio.AudioProblem, OSError, RuntimeError) as problem:
            return Prediction(path, error=str(problem))
        reason = (speech_gate.verdict(speech_gate.descriptors(tracks, self.hop_s))
                  if self.speech_gate else None)
        if reason is not None:
            return Prediction(path, out_of_distribution=True, not_speech=reason)
        num_frames = len(tracks)
        starts = scoring.window_starts(num_frames, self.window)
        blocks = self.preprocessor.long_file_frames(path, moments, tracks)
        return self._verdict(path, num_frames, starts,
                             _windows_of_blocks(blocks, starts, self.window))


def _windows_of_blocks(blocks, starts, window: int):
    """``(start, frames, mask)`` of each window in ``starts`` from frames that
    arrive in consecutive blocks; only the frames a window still needs are
    kept."""
    buffer, offset = None, 0       # buffer holds frames offset, offset + 1, ...
    pending = list(starts)
    for block in blocks:
        buffer = block if buffer is None else np.concatenate([buffer, block])
        while pending and pending[0] + window <= offset + len(buffer):
            start = pending.pop(0)
            yield (start,) + scoring.window(buffer, start - offset, window)
        if pending:
            keep = pending[0] - offset
            buffer, offset = buffer[keep:], pending[0]
    for start in pending:          # the last window may run past the end
        yield (start,) + scoring.window(buffer, start - offset, window)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


def expand_inputs(inputs) -> list[str]:
    """Files, and the audio files found (recursively) in directories."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                paths += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(AUDIO_EXTENSIONS)]
        else:
            paths.append(item)
    if not paths:
        raise FileNotFoundError(f"no audio files in {list(inputs)}")
    return paths


def format_predictions(results, as_json: bool) -> str:
    if as_json:
        return json.dumps([dataclasses.asdict(r) for r in results], indent=2)
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.path}: ERROR {r.error}")
            continue
        if r.not_speech:
            lines.append(f"{r.path}: {r.not_speech}")
            continue
        probs = "  ".join(f"{c}={p:.3f}" for c, p in r.probabilities.items())
        flag = {None: "ood=unknown (no threshold)", True: "OOD", False: "in-task"}[
            r.out_of_distribution]
        lines.append(f"{r.path}: {r.emotion}  [{probs}]  {flag}"
                     + ("  not adapted to the target" if r.adapted is False else ""))
    return "\n".join(lines)
