r"""An eager PyTorch twin of the Emo-DNA train step, for speed comparisons.

Same compute as ``emodna_jax`` (TIM-Net backbone with masked BatchNorm, gated
causal dilated blocks, both directions with within-length reversal and
multi-scale fusion; emotion/corpus projectors and classifiers; the four
Emo-DNA losses; AdamW after global-norm clipping, warm-up + cosine), so that
``benchmarks/train_step.py`` can put a number on what JAX buys.  Given the
JAX model's variables (``load_jax_variables``) it computes the same outputs
and losses on a batch (tests/test_torch_twin.py checks them to 1e-4), so the
comparison times the same arithmetic.  It covers the Emo-DNA configs the
benchmark times (configs/default.py): ``unsupported`` names any setting it
does not implement (MSAC heads, DANN, the real-speech safeguards).
Initialisations are not matched.  Plain eager ``nn.Module``;
``torch.compile`` is optional (``--compile``).

Standalone (random batches of the default shapes; prints one JSON line):

  python benchmarks/torch_twin.py --steps 20 [--compile]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_NEG = -1e9
_EPS = 1e-12


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / ||x||, zero vectors stay zero (as ``losses.l2_normalize``)."""
    sq = torch.sum(x * x, dim=dim, keepdim=True)
    return x * torch.rsqrt(torch.clamp(sq, min=_EPS))


# ----------------------------------------------------------------------------
# Model.  Activations are channels-first [B, C, T] (what conv1d wants); the
# float mask ``w`` is [B, 1, T].


class MaskedBatchNorm(nn.Module):
    """BatchNorm over valid frames only (emodna_jax.models.layers.BatchNorm)."""

    def __init__(self, channels: int, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.momentum, self.eps = momentum, eps

    def forward(self, x, w, count):
        if self.training:
            mean = torch.sum(x * w, dim=(0, 2)) / count
            var = torch.sum(torch.square(x - mean[None, :, None]) * w,
                            dim=(0, 2)) / count
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(m).add_((1 - m) * mean)
                self.running_var.mul_(m).add_((1 - m) * var)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps) * self.weight
        return ((x - mean[None, :, None]) * scale[None, :, None]
                + self.bias[None, :, None])


class TemporalAwareBlock(nn.Module):
    """Two causal dilated convs (BN, ReLU, channel dropout) gating the input."""

    def __init__(self, channels: int, dilation: int, kernel_size: int,
                 dropout: float):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.convs = nn.ModuleList([
            nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                      bias=False) for _ in range(2)])
        self.bns = nn.ModuleList([MaskedBatchNorm(channels) for _ in range(2)])
        self.dropout = nn.Dropout1d(dropout)  # whole channels, as SpatialDropout1D

    def forward(self, x, w, count):
        y = x
        for conv, bn in zip(self.convs, self.bns):
            y = conv(F.pad(y, (self.pad, 0)))  # left padding only: causal
            y = self.dropout(F.relu(bn(y, w, count)))
        return x * torch.sigmoid(y) * w


def reverse_within_length(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverses each row of ``x`` [B, C, T] inside its valid prefix."""
    lengths = mask.sum(dim=1, keepdim=True)                       # [B, 1]
    steps = torch.arange(x.shape[-1], device=x.device)[None, :]   # [1, T]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return torch.gather(x, 2, index[:, None, :].expand_as(x))


class TIMNet(nn.Module):
    """Bidirectional TIM-Net, fused over the scales of its blocks -> [B, C]."""

    def __init__(self, in_features: int, channels: int, num_blocks: int,
                 kernel_size: int = 2, dropout: float = 0.1):
        super().__init__()
        self.inputs = nn.ModuleList([nn.Conv1d(in_features, channels, 1)
                                     for _ in range(2)])
        self.blocks = nn.ModuleList([
            nn.ModuleList([TemporalAwareBlock(channels, 2 ** k, kernel_size,
                                              dropout) for k in range(num_blocks)])
            for _ in range(2)])
        self.fusion_logits = nn.Parameter(torch.zeros(num_blocks))

    def forward(self, frames, mask):
        w = mask[:, None, :].to(frames.dtype)                 # [B, 1, T]
        count = w.sum()
        frame_counts = w.sum(dim=2)                           # [B, 1]
        x = frames.transpose(1, 2) * w                        # [B, F, T]
        streams = [x, reverse_within_length(x, mask)]
        streams = [conv(s) * w for conv, s in zip(self.inputs, streams)]
        scales = []
        for k in range(len(self.blocks[0])):
            streams = [self.blocks[d][k](streams[d], w, count) for d in range(2)]
            scales.append(torch.sum((streams[0] + streams[1]) * w, dim=2)
                          / frame_counts)
        scales = torch.stack(scales, dim=1)                   # [B, n, C]
        weights = torch.softmax(self.fusion_logits, dim=0)
        return torch.einsum("bnc,n->bc", scales, weights)


class Projection(nn.Sequential):
    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


class CosineClassifier(nn.Module):
    def __init__(self, d_in: int, num_classes: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(d_in, num_classes) / math.sqrt(d_in))

    def forward(self, x):
        return l2_normalize(x) @ l2_normalize(self.kernel, dim=0)


class EmoDNATwin(nn.Module):
    """Backbone + emotion and corpus branches (emodna_jax.models.EmoDNAModel)."""

    def __init__(self, *, num_bins: int, num_classes: int, num_corpora: int,
                 channels: int, num_blocks: int, kernel_size: int,
                 projection_dim: int, hidden_dim: int, classifier: str,
                 dropout: float):
        super().__init__()
        self.backbone = TIMNet(num_bins, channels, num_blocks, kernel_size,
                               dropout)
        self.dropout = nn.Dropout(dropout)
        self.emotion_projector = Projection(channels, hidden_dim, projection_dim)
        self.corpus_projector = Projection(channels, hidden_dim, projection_dim)
        self.classifier = (CosineClassifier(projection_dim, num_classes)
                           if classifier == "am"
                           else nn.Linear(projection_dim, num_classes))
        self.corpus_classifier = nn.Linear(projection_dim, num_corpora)

    def forward(self, frames, mask):
        h = self.backbone(frames, mask)
        dropped = self.dropout(h)
        e = self.emotion_projector(dropped)
        z_c = l2_normalize(self.corpus_projector(dropped))
        return {"h": h, "e": e, "z_e": l2_normalize(e), "z_c": z_c,
                "logits": self.classifier(e),
                "corpus_logits": self.corpus_classifier(z_c)}


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unsupported(config) -> list[str]:
    """The settings of ``config`` the twin does not implement (empty: it
    computes what emodna_jax computes)."""
    loss, defaults = config.loss, {"adapt_start": 0.0, "threshold_floor": 0.0,
                                   "pseudo_agreement": False, "w_dann": 0.0,
                                   "w_pseudo": 1.0}
    names = [f"loss.{k}" for k, v in defaults.items() if loss[k] != v]
    names += [f"msac.{a}" for a in ("speaker", "gender", "corpus")
              if config.msac[a] != "off"]
    if config.model.backbone != "tim":
        names.append("model.backbone")
    return names


@torch.no_grad()
def load_jax_variables(model: EmoDNATwin, variables) -> None:
    """Copies the JAX model's ``params`` and ``batch_stats`` into ``model``
    (flax kernels are [..., in, out]; torch's conv weights [out, in, k] and
    linear weights [out, in])."""
    params, stats = variables["params"], variables.get("batch_stats", {})

    def put(tensor, value, transpose=None):
        value = np.array(value, np.float32)   # a writable copy
        value = value.transpose(transpose) if transpose else value
        if tuple(tensor.shape) != value.shape:
            raise ValueError(f"twin {tuple(tensor.shape)} != jax {value.shape}")
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    def linear(layer, p):
        put(layer.weight, p["kernel"], (1, 0))
        put(layer.bias, p["bias"])

    def projection(seq, p):
        linear(seq[0], p["hidden"])
        linear(seq[2], p["out"])

    # The JAX backbone stacks its weights [direction, ...] and [block,
    # direction, ...] (emodna_jax/models/tim.py); the twin keeps one module
    # per direction and block.
    backbone = params["backbone"]
    for d in range(2):
        put(model.backbone.inputs[d].weight, backbone["input"]["kernel"][d], (2, 1, 0))
        put(model.backbone.inputs[d].bias, backbone["input"]["bias"][d])
        for k, block in enumerate(model.backbone.blocks[d]):
            for i in range(2):
                put(block.convs[i].weight,
                    backbone[f"blocks_conv{i}"]["kernel"][k, d], (2, 1, 0))
                put(block.bns[i].weight, backbone[f"blocks_bn{i}"]["scale"][k, d])
                put(block.bns[i].bias, backbone[f"blocks_bn{i}"]["bias"][k, d])
                bn_stats = stats["backbone"][f"blocks_bn{i}"]
                put(block.bns[i].running_mean, bn_stats["mean"][k, d])
                put(block.bns[i].running_var, bn_stats["var"][k, d])
    put(model.backbone.fusion_logits, backbone["fusion_logits"])
    projection(model.emotion_projector, params["emotion_projector"])
    projection(model.corpus_projector, params["corpus_projector"])
    if isinstance(model.classifier, CosineClassifier):
        put(model.classifier.kernel, params["classifier"]["kernel"])
    else:
        linear(model.classifier, params["classifier"])
    linear(model.corpus_classifier, params["corpus_classifier"])


# ----------------------------------------------------------------------------
# Losses (emodna_jax/losses.py).


def masked_mean(values, mask=None):
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    count = weights.sum()
    return torch.where(weights > 0, values, 0.0).sum() / torch.clamp(count, min=1.0)


def cross_entropy(logits, labels, *, label_smoothing=0.0, mask=None):
    per_row = F.cross_entropy(logits, labels, reduction="none",
                              label_smoothing=label_smoothing)
    return masked_mean(per_row, mask)


def supervised_contrastive(features, groups, valid, *, temperature):
    n = features.shape[0]
    sims = features @ features.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    others = valid[None, :] & ~eye
    positives = others & (groups[:, None] == groups[None, :])
    row_max = torch.where(others, sims, _NEG).amax(dim=1, keepdim=True).detach()
    shifted = torch.where(others, sims - row_max, _NEG)
    denom = torch.exp(shifted).sum(dim=1)
    log_denom = torch.log(torch.where(denom > 0, denom, 1.0))
    log_prob = shifted - log_denom[:, None]
    num_pos = positives.sum(dim=1)
    pos_sum = torch.where(positives, log_prob, 0.0).sum(dim=1)
    per_anchor = -pos_sum / torch.clamp(num_pos, min=1)
    return masked_mean(per_anchor, valid & (num_pos > 0))


def mmd2(x, y, multipliers):
    """Multi-kernel Gaussian MMD^2, median bandwidth of the pooled sample."""
    n, m = x.shape[0], y.shape[0]
    pooled = torch.cat([x, y])
    pooled = pooled - pooled.mean(dim=0).detach()   # against cancellation
    sq_norms = pooled.square().sum(dim=1)
    sq = torch.clamp(sq_norms[:, None] + sq_norms[None, :]
                     - 2.0 * pooled @ pooled.T, min=0.0)
    sq = sq * (1.0 - torch.eye(n + m, device=x.device))
    rows, cols = torch.triu_indices(n + m, n + m, offset=1, device=x.device)
    # The mean of the two middle values for an even count, as np.median
    # (torch.median would take the lower one).
    gamma = torch.clamp(torch.quantile(sq[rows, cols].detach(), 0.5), min=1e-6)
    widths = torch.tensor(multipliers, device=x.device) * gamma
    kernel = torch.exp(-sq[None] / widths[:, None, None]).mean(dim=0)
    s = torch.cat([torch.full((n,), 1.0 / n, device=x.device),
                   torch.full((m,), -1.0 / m, device=x.device)])
    return (kernel * s[:, None] * s[None, :]).sum()


def ramp(progress: float) -> float:
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class Objective:
    """The Emo-DNA objective with its thresholds and prototypes (objective.py).

    ``__call__`` returns the total and its terms under the names of the JAX
    objective's metrics (``loss_cls``, ``loss_cd`` ...)."""

    def __init__(self, cfg: dict, feature_dim: int, device):
        self.cfg = cfg
        c = cfg["num_classes"]
        self.tau_g = torch.tensor(1.0 / c, device=device)
        self.p_tilde = torch.full((c,), 1.0 / c, device=device)
        self.prototypes = torch.zeros(c, feature_dim, device=device)

    def _train_logits(self, logits, labels):
        cfg = self.cfg
        if cfg["classifier"] != "am":
            return logits
        onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        return cfg["am_scale"] * (logits - cfg["am_margin"] * onehot)

    def __call__(self, out: dict, labels: torch.Tensor, step: int):
        cfg = self.cfg
        n = labels.shape[0]
        terms = {"loss_cls": cross_entropy(self._train_logits(out["logits"][:n], labels),
                                           labels, label_smoothing=cfg["label_smoothing"])}
        total = terms["loss_cls"]
        corpus = torch.cat([torch.zeros(n, dtype=torch.long, device=labels.device),
                            torch.ones(n, dtype=torch.long, device=labels.device)])
        if cfg["w_cor"] > 0:
            terms["loss_cor"] = cross_entropy(out["corpus_logits"], corpus)
            total = total + cfg["w_cor"] * terms["loss_cor"]
        r = ramp(step / max(cfg["total_steps"], 1)) if cfg["use_ramp"] else 1.0
        adaptation = 0.0
        if cfg["w_cd"] > 0 or cfg["w_ca"] > 0:
            with torch.no_grad():
                target_logits = out["logits"][n:]
                if cfg["classifier"] == "am":
                    target_logits = cfg["am_scale"] * target_logits
                probs = torch.softmax(target_logits, dim=-1)
                mom = cfg["threshold_momentum"]
                self.tau_g = mom * self.tau_g + (1 - mom) * probs.amax(-1).mean()
                self.p_tilde = mom * self.p_tilde + (1 - mom) * probs.mean(0)
                thresholds = self.tau_g * self.p_tilde / torch.clamp(
                    self.p_tilde.max(), min=_EPS)
                max_prob, pseudo = probs.max(dim=-1)
                confident = max_prob >= thresholds[pseudo]
        if cfg["w_cd"] > 0:
            features = torch.cat([out["z_e"], out["z_c"]])
            groups = torch.cat([labels, pseudo, cfg["num_classes"] + corpus])
            valid = torch.cat([torch.ones(n, dtype=torch.bool, device=labels.device),
                               confident,
                               torch.ones(2 * n, dtype=torch.bool,
                                          device=labels.device)])
            terms["loss_cd"] = supervised_contrastive(
                features, groups, valid, temperature=cfg["temperature_cd"])
            adaptation = adaptation + cfg["w_cd"] * terms["loss_cd"]
        if cfg["w_ca"] > 0:
            with torch.no_grad():
                c = cfg["num_classes"]
                onehot = F.one_hot(labels, c).to(out["z_e"].dtype)
                sums = onehot.T @ out["z_e"][:n]
                counts = onehot.sum(0)
                mean = sums / torch.clamp(counts, min=1.0)[:, None]
                seen = (self.prototypes != 0).any(dim=1, keepdim=True)
                m = cfg["prototype_momentum"]
                ema = torch.where(seen, m * self.prototypes + (1 - m) * mean, mean)
                self.prototypes = l2_normalize(
                    torch.where((counts > 0)[:, None], ema, self.prototypes))
            cosines = l2_normalize(out["z_e"][n:]) @ self.prototypes.T
            terms["loss_proto"] = cross_entropy(cosines / cfg["temperature_ca"],
                                                pseudo, mask=confident)
            terms["loss_pseudo"] = cross_entropy(
                self._train_logits(out["logits"][n:], pseudo), pseudo, mask=confident)
            terms["loss_ca"] = terms["loss_proto"] + terms["loss_pseudo"]
            adaptation = adaptation + cfg["w_ca"] * terms["loss_ca"]
        if cfg["w_mmd"] > 0:
            terms["loss_mmd"] = mmd2(out["e"][:n], out["e"][n:], cfg["mmd_multipliers"])
            adaptation = adaptation + cfg["w_mmd"] * terms["loss_mmd"]
        terms["loss"] = total + r * adaptation
        return terms["loss"], terms


# ----------------------------------------------------------------------------
# The step.


def warmup_cosine(peak: float, warmup: int, decay_steps: int):
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, decay_steps)."""
    def lr(step):
        if step < warmup:
            return peak * step / max(warmup, 1)
        frac = min((step - warmup) / max(decay_steps - warmup, 1), 1.0)
        return peak * 0.5 * (1.0 + math.cos(math.pi * frac))
    return lr


class TwinTrainer:
    """Model + objective + AdamW; ``step(batch)`` is one Emo-DNA train step.

    A step whose loss or gradient norm is not finite skips the update, like
    the JAX step's guard (one host sync per step; the JAX loop syncs too).
    """

    def __init__(self, config, *, num_classes: int, num_bins: int,
                 device: str = "cpu", compile_model: bool = False):
        missing = unsupported(config)
        if missing:
            raise ValueError(f"the PyTorch twin does not implement {', '.join(missing)} "
                             "(set them to configs/default.py's values)")
        m, loss, optim = config.model, config.loss, config.optim
        self.device = torch.device(device)
        self.model = EmoDNATwin(
            num_bins=num_bins, num_classes=num_classes, num_corpora=2,
            channels=m.channels, num_blocks=m.num_blocks, kernel_size=2,
            projection_dim=m.projection_dim,
            hidden_dim=m.get("hidden_dim", 2 * m.projection_dim),
            classifier=m.classifier, dropout=m.dropout_rate).to(self.device)
        self.model.train()
        self.forward = (torch.compile(self.model) if compile_model
                        else self.model)
        self.objective = Objective(dict(
            num_classes=num_classes, total_steps=config.steps,
            classifier=m.classifier, label_smoothing=loss.label_smoothing,
            am_scale=loss.am_scale, am_margin=loss.am_margin, w_cor=loss.w_cor,
            w_cd=loss.w_cd, w_ca=loss.w_ca, w_mmd=loss.w_mmd,
            temperature_cd=loss.temperature_cd,
            temperature_ca=loss.temperature_ca,
            threshold_momentum=loss.threshold_momentum,
            prototype_momentum=loss.prototype_momentum,
            mmd_multipliers=tuple(loss.mmd_multipliers),
            use_ramp=loss.use_ramp), m.projection_dim, self.device)
        self.total_steps = config.steps
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=optim.learning_rate,
            weight_decay=optim.weight_decay, eps=1e-8)
        self.schedule = warmup_cosine(optim.learning_rate,
                                      min(optim.warmup_steps, config.steps // 2),
                                      max(config.steps, 1))
        self.grad_clip = optim.grad_clip
        self.step_count = 0

    def to_device(self, batch: dict) -> dict:
        """numpy batch of the JAX pipeline -> tensors on the twin's device."""
        def convert(v):
            t = torch.as_tensor(np.asarray(v))
            return (t.long() if t.dtype == torch.int32 else t).to(self.device)
        return {k: convert(v) for k, v in batch.items()}

    def step(self, batch: dict) -> float:
        frames = torch.cat([batch["src_frames"], batch["tgt_frames"]])
        mask = torch.cat([batch["src_mask"], batch["tgt_mask"]])
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.step_count)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.forward(frames, mask)
        loss, _ = self.objective(out, batch["src_label"], self.step_count)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.grad_clip)
        finite = bool(torch.isfinite(loss) & torch.isfinite(norm))
        if finite:
            self.optimizer.step()
        self.step_count += 1
        return float(loss.detach()) if finite else float("nan")

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def random_batch(batch_size: int, num_frames: int, num_bins: int,
                 num_classes: int, seed: int = 0) -> dict:
    """A batch of the pipeline's shapes with varied lengths (numpy)."""
    rng = np.random.default_rng(seed)
    batch = {}
    for side in ("src", "tgt"):
        lengths = rng.integers(num_frames // 2, num_frames + 1, size=batch_size)
        batch[f"{side}_frames"] = rng.standard_normal(
            (batch_size, num_frames, num_bins)).astype(np.float32)
        batch[f"{side}_mask"] = np.arange(num_frames)[None] < lengths[:, None]
    batch["src_label"] = rng.integers(0, num_classes, batch_size).astype(np.int32)
    return batch


def main(argv=None):
    """Times the twin alone (e.g. under torch.compile, in a subprocess)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import default

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available()
                        else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    config = default.get_config()
    batch_size = args.batch_size or config.batch_size
    num_classes = len(config.data.classes)
    trainer = TwinTrainer(config, num_classes=num_classes,
                          num_bins=config.data.n_mels, device=args.device,
                          compile_model=args.compile)
    batch = trainer.to_device(random_batch(batch_size, config.data.num_frames,
                                           config.data.n_mels, num_classes))
    start = time.perf_counter()
    trainer.step(batch)  # under --compile this is the compilation
    trainer.sync()
    first_step_s = time.perf_counter() - start
    for _ in range(args.warmup):
        trainer.step(batch)
    trainer.sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.step(batch)
    trainer.sync()
    step_s = (time.perf_counter() - start) / args.steps
    print(json.dumps({"compiled": args.compile, "first_step_s": first_step_s,
                      "step_s": step_s, "batch_size": batch_size,
                      "threads": torch.get_num_threads(),
                      "params": num_params(trainer.model),
                      "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
