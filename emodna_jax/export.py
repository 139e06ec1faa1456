"""``--mode=export``: one folder that predicts without the training data.

``EXPORT_DIR`` gets ``preprocess.json`` (emodna_jax/serving.py says what it
holds and how prediction uses it), ``model.jax`` and ``model.onnx``: the
inference function ``(frames [B, T, F], mask [B, T]) -> (posterior logits
[B, C], emotion embedding e [B, D])`` of one checkpoint, with the
checkpoint's parameters and BatchNorm statistics baked in.

* ``model.jax`` is a ``jax.export`` serialisation with symbolic batch and
  frames, lowered for every platform the installed JAX can lower for (cpu,
  and cuda and tpu where it can), so it runs on any of them without the
  project's code.
* ``model.onnx`` comes from jax2onnx with a dynamic batch.  Its frames are
  fixed at the window length (``data.eval_num_frames``): prediction scores
  every file in windows of exactly that many frames (emodna_jax/scoring.py),
  and jax2onnx cannot yet trace the model's convolutions over a symbolic
  time axis.  Its mask is float (1 = a real frame).

With ``config.serve = "checkpoint_ensemble"`` the function runs every
checkpoint ``--mode=evaluate`` scored and returns each one's outputs on a
second axis (posterior logits [B, K, C], e [B, K, D]); the Predictor averages
their posteriors, as evaluation's ``checkpoint_ensemble`` figures do
(emodna_jax/checkpoint_ensemble.py), and flags out-of-distribution input by
the mean of their OOD scores against the threshold evaluation found for
that mean.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from data_prep import files
from emodna_jax import evaluate
from emodna_jax import experiment
from emodna_jax import losses
from emodna_jax import serving

PLATFORMS = ("cpu", "cuda", "tpu")


def _summary(workdir: str) -> dict | None:
    """``eval/summary.json`` of ``--mode=evaluate``, or None before any."""
    path = os.path.join(workdir, evaluate.EVAL_DIR, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def selected_step(workdir: str) -> int | None:
    """The checkpoint ``--mode=evaluate`` selected, or None before any
    evaluation."""
    summary = _summary(workdir)
    return None if summary is None else int(summary["selected"]["step"])


def served(config) -> str:
    """``config.serve`` (a config saved before it existed: 'selected')."""
    return config.get("serve", "selected")


def ensemble_steps(workdir: str) -> list[int]:
    """The checkpoints of the evaluated checkpoint ensemble; a one-line
    error where evaluation has not scored one."""
    summary = _summary(workdir)
    entry = None if summary is None else summary.get("checkpoint_ensemble")
    if not entry:
        raise FileNotFoundError(
            f"{os.path.join(workdir, evaluate.EVAL_DIR, 'summary.json')}: no checkpoint "
            "ensemble evaluated; config.serve='checkpoint_ensemble' needs --mode=evaluate "
            "first, with the 'embeddings' evaluator")
    return [int(step) for step in entry["steps"]]


def ood_threshold(config, workdir: str) -> float | None:
    """The configured threshold, else the 95%-TPR one evaluation found for
    what is served (the selected checkpoint, or the checkpoint ensemble)."""
    if config.ood_threshold is not None:
        return float(config.ood_threshold)
    summary = _summary(workdir)
    if summary is None:
        return None
    served_entry = ((summary.get("checkpoint_ensemble") or {})
                    if served(config) == "checkpoint_ensemble" else summary["selected"])
    entry = served_entry.get("ood", {}).get(config.ood_score)
    return None if entry is None else float(entry["threshold_at_95_tpr"])


def config_hash(config) -> str:
    return hashlib.sha256(config.to_json(sort_keys=True).encode()).hexdigest()[:16]


def preprocess_info(config, built, step: int, ood_threshold) -> dict:
    """What prediction needs besides the model (serving.Preprocessor reads it)."""
    target = built.target
    stats = target.utterance_stats
    per_corpus = config.data.normalization == "corpus"

    def listed(values):
        return None if values is None else np.asarray(values, np.float64).tolist()

    return {
        "format": serving.FORMAT, "format_version": serving.FORMAT_VERSION,
        "classes": list(built.classes),
        "features": target.corpus.feature_config.to_dict(),
        "normalization": {
            "kind": config.data.normalization, "std_floor": float(target.std_floor),
            "mean": listed(target.mean) if per_corpus else None,
            "std": listed(target.std) if per_corpus else None,
            "band_mask": listed(target.band_mask),
            "unknown_speaker": "each file with its own statistics",
        },
        "utterance_stats": None if stats is None else {
            "corpus_mean": listed(stats.corpus_mean), "corpus_std": listed(stats.corpus_std)},
        "window": {"frames": int(config.data.eval_num_frames),
                   "hop_frames": int(config.data.eval_num_frames // 2 or 1)},
        "posterior": {"classifier": config.model.classifier,
                      "am_scale": float(config.loss.am_scale),
                      "note": "the models return posterior logits: softmax them"},
        "ood": {"score": config.ood_score, "threshold": ood_threshold},
        "speech_gate": bool(config.speech_gate),
        "source": {"checkpoint_step": int(step), "config_hash": config_hash(config),
                   "source_corpus": config.data.source, "target_corpus": config.data.target,
                   "emodna_jax": _version("emodna_jax"), "jax": jax.__version__},
    }


def adaptation_info(objective, classes, adapt, step: int) -> dict:
    """What the served checkpoint adapted to the target corpus, for the
    Predictor to say with every prediction (docs/serving.md, "What was
    adapted").

    ``adapted`` is False for a model trained on the source alone and for a
    checkpoint of the source-only warm-up; otherwise ``unadapted`` names the
    classes ``loss.cluster_agreement`` left to the source classifier (their
    target cluster was mostly called another class) and ``not_told_apart``
    each such class with the class that took its cluster: on this target the
    model cannot tell which of them it hears, so predictions of either are
    flagged.  ``adapt``: the checkpoint's ``AdaptState`` (host arrays)."""
    classes = list(classes)
    if not objective.uses_target:
        return {"adapted": False, "why": "trained on the source corpus alone",
                "unadapted": classes, "not_told_apart": []}
    if objective.use_ramp and step <= objective.adapt_start * objective.total_steps:
        return {"adapted": False,
                "why": f"step {step} is in the source-only warm-up (the first "
                       f"{objective.adapt_start:.0%} of {objective.total_steps} steps)",
                "unadapted": classes, "not_told_apart": []}
    if adapt.cluster_agrees is None:      # no agreement check: every class adapts
        return {"adapted": True, "why": None, "unadapted": [], "not_told_apart": []}
    agrees = np.asarray(adapt.cluster_agrees, bool)
    groups = np.asarray(adapt.class_groups)
    pooled = [[classes[c] for c in np.flatnonzero(groups == g)]
              for g in np.unique(groups) if np.sum(groups == g) > 1]
    return {"adapted": True,
            "why": None if agrees.all() else "the target's clusters contradicted "
                   "the source classifier's naming of these classes",
            "unadapted": [c for c, a in zip(classes, agrees) if not a],
            "not_told_apart": pooled}


def served_adaptation(config, built, state, step: int) -> dict | None:
    """``preprocess.json``'s ``adaptation`` of a checkpoint: None for a
    model of one corpus's held-out speakers, which has no target to adapt to."""
    if config.data.protocol == "single_corpus":
        return None
    return adaptation_info(built.objective, built.classes, jax.device_get(state.adapt),
                           step)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def inference_function(config, built, state):
    """``(frames, mask) -> (posterior logits, e)`` with the state's
    variables as constants."""
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})

    def infer(frames, mask):
        out = built.model.apply(variables, frames, mask, train=False)
        return losses.config_posterior_logits(config, out["logits"]), out["e"]
    return infer


def ensemble_inference_function(config, built, states):
    """``(frames, mask) -> (posterior logits [B, K, C], e [B, K, D])``: the
    inference function of each of the K states, side by side."""
    each = [inference_function(config, built, state) for state in states]

    def infer(frames, mask):
        outputs = [one(frames, mask) for one in each]
        return (jnp.stack([logits for logits, _ in outputs], axis=1),
                jnp.stack([e for _, e in outputs], axis=1))
    return infer


def served_model(config, workdir: str, checkpoint: int | None = None, *,
                 prefer: int | None = None):
    """``(built, infer, info)``: what ``config.serve`` serves of a workdir.
    'selected': ``checkpoint``, else ``prefer`` or the newest readable one
    (experiment.restore); 'checkpoint_ensemble': every checkpoint of the
    evaluated ensemble, which a named ``checkpoint`` contradicts."""
    if served(config) != "checkpoint_ensemble":
        built, state, step = experiment.restore(config, workdir, checkpoint, prefer=prefer)
        info = preprocess_info(config, built, step, ood_threshold(config, workdir))
        info["adaptation"] = served_adaptation(config, built, state, step)
        return built, inference_function(config, built, state), info
    if checkpoint is not None:
        raise ValueError(f"--checkpoint={checkpoint}: config.serve='checkpoint_ensemble' "
                         "serves every evaluated checkpoint; set config.serve='selected' "
                         "to serve one")
    steps = ensemble_steps(workdir)
    built, states = None, []
    for step in steps:
        built, state, _ = experiment.restore(config, workdir, step, built=built)
        states.append(state)
    info = preprocess_info(config, built, steps[-1], ood_threshold(config, workdir))
    # The newest checkpoint's verdict: the agreement check's is kept from
    # the first clustering on, and the mean posterior carries what it decided.
    info["adaptation"] = served_adaptation(config, built, states[-1], steps[-1])
    info["posterior"]["checkpoints"] = len(steps)
    info["source"]["checkpoint_steps"] = steps
    return built, ensemble_inference_function(config, built, states), info


def in_process(config, workdir: str, checkpoint: int | None = None) -> serving.Predictor:
    """A Predictor on a workdir's checkpoint (by default the newest
    readable one, as ``--mode=predict`` always took; with
    ``config.serve='checkpoint_ensemble'`` the evaluated ensemble) that
    runs the model in this process (``--mode=predict``): what an export of
    it predicts, without writing one."""
    _, infer, info = served_model(config, workdir, checkpoint)
    infer = jax.jit(infer)
    return serving.Predictor(info, lambda frames, mask: infer(frames, mask))


def export(config, workdir: str, export_dir: str, checkpoint: int | None = None) -> dict:
    """Writes the export folder; returns what was written (paths, step,
    platforms).  Files are written whole or not at all."""
    built, infer, info = served_model(config, workdir, checkpoint,
                                      prefer=selected_step(workdir))
    step = info["source"]["checkpoint_step"]
    num_values = built.target.num_values
    batch, frames = jax.export.symbolic_shape("batch, frames")
    exported, platforms, failure = None, [], None
    for count in range(len(PLATFORMS), 0, -1):   # as many platforms as lower
        try:
            exported = jax.export.export(jax.jit(infer), platforms=PLATFORMS[:count])(
                jax.ShapeDtypeStruct((batch, frames, num_values), jnp.float32),
                jax.ShapeDtypeStruct((batch, frames), jnp.bool_))
            platforms = list(PLATFORMS[:count])
            break
        except Exception as error:   # a platform this JAX cannot lower for
            failure = error
            continue
    if exported is None:
        raise ValueError("jax.export could not lower the model for cpu") from failure
    info["platforms"] = platforms
    window = info["window"]["frames"]
    onnx_model = _to_onnx(infer, window, num_values)
    os.makedirs(export_dir, exist_ok=True)
    with files.atomic_write(os.path.join(export_dir, serving.MODEL_JAX), "wb") as f:
        f.write(exported.serialize())
    with files.atomic_write(os.path.join(export_dir, serving.MODEL_ONNX), "wb") as f:
        f.write(onnx_model.SerializeToString())
    with files.atomic_write(os.path.join(export_dir, serving.PREPROCESS)) as f:
        json.dump(info, f, indent=2)
    return {"export_dir": export_dir, "step": step, "platforms": platforms,
            "steps": info["source"].get("checkpoint_steps", [step]),
            "adaptation": info["adaptation"]}


def describe_adaptation(adaptation: dict | None) -> str | None:
    """One line on what the export did not adapt, or None if it adapted
    every class (or has no target)."""
    if adaptation is None:
        return None
    if not adaptation["adapted"]:
        return f"not adapted to the target corpus: {adaptation['why']}"
    if not adaptation["unadapted"]:
        return None
    pairs = "; ".join(" and ".join(group) for group in adaptation["not_told_apart"])
    return (f"left unadapted: {', '.join(adaptation['unadapted'])} ({adaptation['why']}); "
            f"predictions of {pairs} are flagged 'not adapted'")


def _to_onnx(infer, window: int, num_values: int):
    """The ONNX graph of ``infer`` for windows of ``window`` frames, any batch."""
    # jax2onnx imports every plugin it has and logs a traceback for those
    # that need other libraries (dm_pix ...); none of them is ours.
    logging.getLogger("jax2onnx").setLevel(logging.ERROR)
    try:
        import jax2onnx  # the [onnx] extra
    except ImportError:
        raise ValueError("--mode=export writes model.onnx with jax2onnx, which is not "
                         "installed: pip install -e '.[onnx]'") from None

    def with_float_mask(frames, mask):
        return infer(frames, mask > 0.5)
    return jax2onnx.to_onnx(with_float_mask, [("B", window, num_values), ("B", window)],
                            input_names=["frames", "mask"], output_names=["logits", "e"])
