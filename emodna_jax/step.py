"""The fused, data-parallel train step and the eval step.

One per-device function computes the forward pass, every Emo-DNA loss, the
gradients, the optimizer update and the threshold/prototype updates.  It is
compiled either with ``jax.jit(jax.shard_map(...))`` over a 1-D mesh (the
default) or with ``jax.pmap``: the very same function, with the batch axis
named ``'batch'`` in both.

Device-count invariance: each device runs the model on its shard, then
gathers the outputs of all shards (``all_gather(..., to='invarying')``, whose
transpose hands each device back the cotangents of its own rows) and evaluates
the objective of the *global* batch.  Each device's gradient is thus its
shard's share of the global gradient, and the shares are summed: by
shard_map's autodiff itself (parameters are replicated, so their cotangents
are summed over the axis), and by an explicit ``psum`` under pmap.  BatchNorm
statistics are summed over the axis too.  So 8 devices compute what 1 device
computes on the same global batch.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from emodna_jax import augment as augment_lib
from emodna_jax import distributed
from emodna_jax import objective as objective_lib

AXIS = "batch"
# What a row's key is for: folded into the step's key before the row's index,
# so that each purpose and each side of the batch has its own stream.
AUGMENT_STREAM = 0x5bec
STRONG_STREAM = 0x57e0  # the target's strong view (consistency loss)
DROPOUT_STREAM = 0xd207
SOURCE_ROWS, TARGET_ROWS = 0, 1
BIG_BATCH = 1 << 24   # row numbers of the target side's dropout keys start here


def row_keys(step_key: jax.Array, purpose: int, side: int, rows: jax.Array) -> jax.Array:
    """[B] keys of the global batch rows ``rows`` (their positions in the
    global batch), for ``purpose`` on ``side``: the same for a row wherever
    it is computed, so every layout of devices and processes draws alike."""
    base = jax.random.fold_in(jax.random.fold_in(step_key, purpose), side)
    return jax.vmap(lambda row: jax.random.fold_in(base, row))(rows)


OUTPUT_KEYS = ("logits", "corpus_logits", "e", "z_e", "z_c")


def _train_outputs(cfg) -> tuple:
    heads = tuple(f"attr_{name}" for name, _, _ in cfg.attributes)
    aligned = tuple(f"attr_{name}_features"
                    for name, control, _ in cfg.attributes if control == "align")
    domain = ("domain_logits",) if cfg.w_dann > 0 else ()
    return OUTPUT_KEYS + heads + aligned + domain


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    adapt: objective_lib.AdaptState
    rng: jax.Array


def _global_rows(batch: dict, n_local: int, axis_name):
    """The positions in the global batch of this device's source and target
    rows: the input pipeline's ``src_row``/``tgt_row``; a batch made
    elsewhere is taken to be in device order."""
    if "src_row" in batch:
        return batch["src_row"], batch.get("tgt_row", batch["src_row"])
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * n_local
    rows = first + jnp.arange(n_local, dtype=jnp.int32)
    return rows, rows


def _gather(x, axis_name):
    if axis_name is None:
        return x
    return jax.lax.all_gather(x, axis_name, tiled=True, to="invarying")


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def make_train_step(model, tx: optax.GradientTransformation,
                    cfg: objective_lib.ObjectiveConfig, *,
                    axis_name: str | None, sum_gradients: bool,
                    augment: augment_lib.SpecAugment | None = None,
                    strong_augment: augment_lib.SpecAugment | None = None) -> Callable:
    """The per-device step ``(state, batch) -> (state, metrics)``.

    Args:
      model: the flax module; its BatchNorm must reduce over ``axis_name``.
      tx: the optimizer.
      cfg: the objective's static settings.
      axis_name: the device axis, or None on a single device without a mesh.
      sum_gradients: psum the gradients explicitly (pmap); shard_map's
        autodiff already sums them, and summing again would scale them by the
        device count.
      augment: SpecAugment masks for the labelled (source) rows, or None.
        Target rows are left whole: they feed pseudo-labels and the corpus
        statistics, which masking would perturb.
      strong_augment: with ``cfg.w_consistency``, the masks and warp of a
        second, strong view of the target rows, run in the same forward
        pass; only the consistency loss reads its logits.

    A step whose loss or gradients are not finite leaves the state unchanged
    (apart from the step counter) and reports ``finite = 0`` in the metrics,
    so the train loop can stop with the last good state intact.
    """

    if cfg.w_consistency > 0 and (strong_augment is None or not strong_augment.enabled):
        raise ValueError(f"w_consistency={cfg.w_consistency} needs a strong view: "
                         "strong_augment with masks or a warp")

    def step_fn(state: TrainState, batch: dict):
        n_local = batch["src_frames"].shape[0]
        # Every draw is keyed by (seed, step, purpose, global row), never by
        # the device or process a row is on.
        step_key = jax.random.fold_in(state.rng, state.step)
        src_rows, tgt_rows = _global_rows(batch, n_local, axis_name)
        src_frames = batch["src_frames"]
        if augment is not None and augment.enabled:
            src_frames = augment_lib.spec_augment(
                augment, row_keys(step_key, AUGMENT_STREAM, SOURCE_ROWS, src_rows),
                src_frames, batch["src_mask"])
        # Dropout: one key per row of the forward pass, the target's rows (and
        # their strong view's) numbered after the source's.
        ids = [src_rows]
        if cfg.uses_target:
            parts = [src_frames, batch["tgt_frames"]]
            masks = [batch["src_mask"], batch["tgt_mask"]]
            ids.append(tgt_rows + BIG_BATCH)
            if cfg.w_consistency > 0:
                parts.append(augment_lib.spec_augment(
                    strong_augment,
                    row_keys(step_key, STRONG_STREAM, TARGET_ROWS, tgt_rows),
                    batch["tgt_frames"], batch["tgt_mask"]))
                masks.append(batch["tgt_mask"])
                ids.append(tgt_rows + 2 * BIG_BATCH)
            frames, mask = jnp.concatenate(parts), jnp.concatenate(masks)
        else:  # source-only: target batches are never run through the model
            frames, mask = src_frames, batch["src_mask"]
        dropout_keys = row_keys(step_key, DROPOUT_STREAM, SOURCE_ROWS, jnp.concatenate(ids))

        def global_view(x):
            """[source rows of all devices; target rows of all devices]."""
            if not cfg.uses_target:
                return _gather(x, axis_name)
            return jnp.concatenate([_gather(x[:n_local], axis_name),
                                    _gather(x[n_local:2 * n_local], axis_name)])

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, frames,
                mask, train=True, mutable=["batch_stats"], row_keys=dropout_keys,
                grl_coefficient=objective_lib.grl_coefficient(cfg, state.step),
                domain_coefficient=objective_lib.domain_coefficient(cfg, state.step))
            gathered = {k: global_view(outputs[k]) for k in _train_outputs(cfg)}
            if cfg.w_consistency > 0:  # of the strong view, only its logits are read
                gathered["strong_logits"] = _gather(outputs["logits"][2 * n_local:],
                                                    axis_name)
            outputs = gathered
            labels = _gather(batch["src_label"], axis_name)
            attribute_labels = {name: _gather(batch[f"src_{name}"], axis_name)
                                for name in cfg.source_attributes}
            target_cluster = (_gather(batch["tgt_cluster"], axis_name)
                              if cfg.cluster_labels else None)
            loss, (adapt, metrics) = objective_lib.objective(
                cfg, outputs, labels, state.adapt, state.step, attribute_labels,
                target_cluster)
            return loss, (adapt, metrics, updates["batch_stats"])

        grads, (adapt, metrics, batch_stats) = jax.grad(
            loss_fn, has_aux=True)(state.params)
        if sum_gradients:
            grads = jax.lax.psum(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state.replace(
            step=state.step + 1, params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats, opt_state=opt_state, adapt=adapt)
        # One scalar test (a non-finite gradient makes the norm non-finite)
        # and a cond: a per-leaf select would triple the compiled program.
        grad_norm = optax.tree.norm(grads)
        finite = _all_finite((metrics, grad_norm))
        new = jax.lax.cond(finite, lambda: new,
                           lambda: state.replace(step=state.step + 1))
        metrics = dict(metrics, grad_norm=grad_norm,
                       finite=finite.astype(jnp.float32))
        if cfg.cluster_labels:   # which utterances metrics["bank_logits"] are of
            metrics["bank_index"] = _gather(batch["tgt_index"], axis_name)
        return new, metrics

    return step_fn


def make_eval_step(model) -> Callable:
    """The per-device eval step ``(variables, batch) -> outputs per example``."""

    def eval_fn(variables, batch):
        outputs = model.apply(variables, batch["frames"], batch["mask"],
                              train=False)
        return {k: outputs[k] for k in OUTPUT_KEYS + ("h",)}

    return eval_fn


def data_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh, axis ``'batch'``, over the first ``num_devices`` (0: all)."""
    available = jax.device_count()
    if num_devices < 0 or num_devices > available:
        raise ValueError(f"config.num_devices={num_devices}: {available} "
                         "devices are available (0 uses all)")
    if num_devices in (0, available):
        return jax.make_mesh((available,), (AXIS,))
    return jax.make_mesh((num_devices,), (AXIS,),
                         devices=jax.devices()[:num_devices])


PARALLELISM_MODES = ("shard_map", "pmap")


class Parallel:
    """Compiles per-device functions and places data for one parallelism mode.

    'shard_map': ``jax.jit(jax.shard_map(...))`` over the mesh; batches are
    global ``jax.Array`` s sharded along ``'batch'`` and the state is
    replicated.  'pmap': ``jax.pmap``; batches carry a leading local-device
    axis and the state is replicated per device.
    """

    def __init__(self, mode: str, mesh: jax.sharding.Mesh | None = None):
        if mode not in PARALLELISM_MODES:
            raise ValueError(f"parallelism must be one of {PARALLELISM_MODES}, got {mode!r}")
        self.mode = mode
        self.mesh = mesh if mesh is not None else data_mesh()
        self.num_devices = self.mesh.size

    @property
    def sum_gradients(self) -> bool:
        return self.mode == "pmap"

    @property
    def local_devices(self) -> list:
        return [d for d in self.mesh.devices.flat
                if d.process_index == jax.process_index()]

    def compile_train(self, step_fn: Callable) -> Callable:
        if self.mode == "pmap":
            return jax.pmap(step_fn, axis_name=AXIS, donate_argnums=0,
                            devices=self.mesh.devices.flat)
        return jax.jit(jax.shard_map(step_fn, mesh=self.mesh,
                                     in_specs=(P(), P(AXIS)),
                                     out_specs=(P(), P())),
                       donate_argnums=0)

    def compile_eval(self, eval_fn: Callable) -> Callable:
        if self.mode == "pmap":
            return jax.pmap(eval_fn, axis_name=AXIS, devices=self.mesh.devices.flat)
        return jax.jit(jax.shard_map(eval_fn, mesh=self.mesh,
                                     in_specs=(P(), P(AXIS)),
                                     out_specs=P(AXIS)))

    def put_replicated(self, tree):
        """Places a host pytree (state, variables) for the compiled functions."""
        if self.mode == "pmap":  # a leading axis with one copy per local device
            devices = self.local_devices
            sharding = NamedSharding(jax.sharding.Mesh(np.array(devices), ("d",)),
                                     P("d"))
            return jax.tree.map(lambda x: jax.device_put(
                np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)),
                sharding), tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def get_replicated(self, tree):
        """The host copy of a replicated pytree."""
        if self.mode == "pmap":
            tree = jax.tree.map(lambda x: x[0], tree)
        return jax.device_get(tree)

    def put_batch(self, local_batch: dict):
        """Places this process's share of a global batch."""
        if self.mode == "pmap":
            n = len(self.local_devices)
            return jax.tree.map(
                lambda x: np.reshape(x, (n, x.shape[0] // n) + x.shape[1:]),
                local_batch)
        sharding = NamedSharding(self.mesh, P(AXIS))
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, x),
            local_batch)

    def get_outputs(self, outputs):
        """Per-example outputs of the eval step as host arrays [B, ...]."""
        outputs = distributed.gather_rows(outputs)
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), outputs)
        return outputs

    def get_metrics(self, metrics):
        if self.mode == "pmap":
            metrics = jax.tree.map(lambda x: x[0], metrics)
        return jax.device_get(metrics)
