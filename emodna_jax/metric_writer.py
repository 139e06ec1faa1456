"""Where training metrics go: stdout, ``metrics.jsonl`` and TensorBoard.

TensorBoard event files are written with tensorboardX, so no TensorFlow is
needed.  Only process 0 writes.
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_prep import files
from emodna_jax import distributed


def reconcile(workdir: str, step: int, *, finished: bool):
    """Drops the ``metrics.jsonl`` lines a resumed run will write again.

    Lines past ``step`` (the restored checkpoint) belong to steps that are
    lost and will be rerun; when the run had already ``finished``, its final
    evaluation at ``step`` is written again too.  Rewritten atomically: a
    crash here leaves the old file whole.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not distributed.is_primary() or not os.path.exists(path):
        return
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    keep = [r for r in records if r["step"] < step or (
        r["step"] == step and not (finished and r.get("split") == "eval"))]
    if len(keep) == len(records):
        return
    with files.atomic_write(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)


# The training values a [train] line shows; every value goes to
# metrics.jsonl and TensorBoard (more than twenty a step).
HEADLINE = ("loss", "loss_cls", "source_accuracy", "confident_fraction",
            "steps_per_second")


def echoed(scalars: dict) -> str:
    """The part of a log line shown on stdout: the HEADLINE values a
    record has, else (an evaluation's few figures) all of them."""
    keys = [k for k in HEADLINE if k in scalars] or sorted(scalars)
    return "  ".join(f"{k}={scalars[k]:.4g}" for k in keys)


class MetricWriter:

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = distributed.is_primary()
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        if tensorboard:
            from tensorboardX import SummaryWriter  # heavy import, only when used
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict, *, prefix: str = "train",
              echo: bool = True):
        if not self.enabled:
            return
        scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, "split": prefix, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"{prefix}/{key}", value, step)
            self._tb.flush()
        if echo:
            print(f"[{prefix}] step {step}: {echoed(scalars)}", flush=True)

    def note(self, step: int, split: str, record: dict):
        """A non-scalar record (e.g. the config changes of a resumed run)."""
        if self.enabled:
            self._jsonl.write(json.dumps({"step": step, "split": split, **record}) + "\n")
            self._jsonl.flush()

    def close(self):
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
