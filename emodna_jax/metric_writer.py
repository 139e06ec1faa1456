"""Where training metrics go: stdout, ``metrics.jsonl`` and TensorBoard.

TensorBoard event files are written with tensorboardX, so no TensorFlow is
needed.  Only process 0 writes.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricWriter:

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
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
            shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
            print(f"[{prefix}] step {step}: {shown}", flush=True)

    def close(self):
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
