"""What a config builds before its first step: ``build(config)``, ``restore(...)``.

Training, evaluation, prediction, the attribute probe and the step benchmark
all start from the same pieces: the opened source and target corpora, the
device layout, the model (with its MSAC heads), the optimizer, the
objective's static settings and the shape of the train state.  They are
built here, once, so the entry points cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax
import jax.numpy as jnp
import optax

from emodna_jax import augment as augment_lib
from emodna_jax import checkpointing
from emodna_jax import config_validation
from emodna_jax import distributed
from emodna_jax import input_pipeline
from emodna_jax import models
from emodna_jax import msac
from emodna_jax import objective as objective_lib
from emodna_jax import step as step_lib


@dataclasses.dataclass
class Experiment:
    """The built pieces of one config (nothing compiled or restored yet)."""
    config: object
    source: input_pipeline.TaskCorpus
    target: input_pipeline.TaskCorpus
    parallel: step_lib.Parallel
    attribute_specs: tuple
    model: models.EmoDNAModel
    optimizer: optax.GradientTransformation
    objective: objective_lib.ObjectiveConfig
    augment: augment_lib.SpecAugment
    strong_augment: augment_lib.SpecAugment

    @property
    def classes(self) -> list[str]:
        return list(self.config.data.classes)

    @property
    def num_bins(self) -> int:
        return self.source.num_values

    def init_state(self) -> step_lib.TrainState:
        """A fresh state on the host (the caller places it on devices)."""
        config = self.config
        init_rng, dropout_rng, state_rng = jax.random.split(jax.random.key(config.seed), 3)
        frames = jnp.zeros((2, config.data.num_frames, self.num_bins), jnp.float32)
        mask = jnp.ones((2, config.data.num_frames), bool)
        variables = self.model.init({"params": init_rng, "dropout": dropout_rng},
                                    frames, mask, train=False)
        params = variables["params"]
        return step_lib.TrainState(
            step=jnp.zeros((), jnp.int32), params=params,
            batch_stats=variables.get("batch_stats", {}),  # none without BatchNorm
            opt_state=self.optimizer.init(params),
            adapt=objective_lib.AdaptState.create(
                len(self.classes), config.model.projection_dim,
                agreement=config.loss.cluster_labels and config.loss.cluster_agreement),
            rng=jax.random.key_data(state_rng))

    def abstract_state(self):
        """Shapes, dtypes and (replicated) placement of the train state: what
        a checkpoint restores into, on any number of devices."""
        return checkpointing.with_sharding(
            jax.eval_shape(self.init_state),
            jax.sharding.NamedSharding(self.parallel.mesh, jax.sharding.PartitionSpec()))


def learning_rate_schedule(config) -> optax.Schedule:
    """Linear warm-up (at most half of training), then cosine decay to 0."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.optim.learning_rate,
        warmup_steps=min(config.optim.warmup_steps, config.steps // 2),
        decay_steps=max(config.steps, 1))


def create_optimizer(config) -> optax.GradientTransformation:
    """AdamW on ``learning_rate_schedule``, after global-norm clipping."""
    schedule = learning_rate_schedule(config)
    # Flattened: clipping and AdamW run on one vector instead of once per
    # parameter array (about a hundred), which cuts the compiled program and
    # its compile time; per element the arithmetic is the same.
    tx = optax.flatten(optax.chain(
        optax.clip_by_global_norm(config.optim.grad_clip),
        optax.adamw(schedule, weight_decay=config.optim.weight_decay)))
    return msac.scale_head_updates(tx, config.msac.head_lr_multiplier)


def objective_config(config, num_classes: int,
                     attribute_specs=()) -> objective_lib.ObjectiveConfig:
    """The objective's static settings: every ``config.loss`` entry that names
    a field, plus what the task and model decide."""
    fields = {f.name for f in dataclasses.fields(objective_lib.ObjectiveConfig)}
    loss = {key: tuple(value) if isinstance(value, (list, tuple)) else value
            for key, value in config.loss.items() if key in fields}
    return objective_lib.ObjectiveConfig(
        num_classes=num_classes, total_steps=config.steps,
        classifier=config.model.classifier,
        attributes=msac.objective_entries(attribute_specs),
        grl_max=config.msac.grl_max, **loss)


def build(config, *, parallel: step_lib.Parallel | None = None,
          validated: bool = False) -> Experiment:
    """Validates ``config`` (unless the caller just did: ``validated``), opens
    its corpora and builds every piece.

    ``parallel``: the device layout (default: ``config.parallelism`` over
    ``config.num_devices``).  Bad values and unprepared corpora raise before
    anything is compiled or written.
    """
    if not validated:
        config_validation.validate_config(config)
    source, target = input_pipeline.open_task(config)
    parallel = parallel or step_lib.Parallel(config.parallelism,
                                             step_lib.data_mesh(config.num_devices))
    config_validation.validate_batch(config, parallel.num_devices, jax.process_count())
    specs = msac.attribute_specs(config, source)
    num_tracks = source.num_tracks
    model = models.create_model(
        config.model, num_classes=len(config.data.classes), num_corpora=2,
        bn_axis_name=step_lib.AXIS, attribute_heads=msac.model_heads(specs),
        domain_discriminator=config.loss.w_dann > 0,
        num_tracks=num_tracks)
    return Experiment(config=config, source=source, target=target, parallel=parallel,
                      attribute_specs=specs, model=model,
                      optimizer=create_optimizer(config),
                      objective=objective_config(config, len(config.data.classes), specs),
                      augment=augment_lib.from_config(
                          config, source.corpus.feature_config, num_tracks),
                      strong_augment=augment_lib.from_config(
                          config, target.corpus.feature_config, num_tracks,
                          block="strong_augment"))


def single_device() -> step_lib.Parallel:
    """The layout of prediction and probing: one device of this process
    (with several processes, global device 0 belongs to process 0 alone)."""
    return step_lib.Parallel("shard_map", jax.make_mesh(
        (1,), (step_lib.AXIS,), devices=jax.local_devices()[:1]))


def restore(config, workdir: str, step: int | None = None, *,
            built: Experiment | None = None, prefer: int | None = None):
    """``(experiment, state, step)``: a checkpoint of ``workdir`` restored
    into ``built`` (default: ``config`` built on one device).

    ``step`` None: ``prefer`` if given and on disk, else the newest
    checkpoint that reads back (``prefer`` first, then newest first); an unreadable one
    (a truncated file) is passed over with one warning line on stderr
    (stdout may be ``--json``), and left where it is: this only reads the
    workdir.  A named ``step`` that does not read back is an error.  A
    config whose state shape differs from the checkpoint's is refused by
    name before anything is read (train.refuse_state_change)."""
    from emodna_jax import train  # train imports this module
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    where = checkpointing.checkpoint_dir(workdir)
    try:
        have = checkpointer.all_steps()
        if not have:
            raise FileNotFoundError(f"no checkpoints in {where}: train first (--mode=train)")
        if step is not None and step not in have:
            raise FileNotFoundError(f"no checkpoint {step} in {where} (it has {have})")
        built = built or build(config, parallel=single_device())
        abstract, current = built.abstract_state(), json.loads(config.to_json())
        unreadable = {}
        order = sorted(have, reverse=True)
        if prefer in have:
            order = [prefer] + [s for s in order if s != prefer]
        for chosen in [step] if step is not None else order:
            saved = checkpointer.saved_config(chosen)
            if saved is not None:
                train.refuse_state_change(
                    saved, current, step=chosen, workdir=workdir,
                    remedy="use the config it was trained with")
            try:
                state = checkpointer.restore_state(chosen, abstract)
            except Exception as error:  # orbax/TensorStore raise many kinds
                unreadable[chosen] = checkpointing.describe_failure(error)
                continue
            if unreadable and distributed.is_primary():
                print(f"warning: {_unreadable(unreadable)}; using checkpoint {chosen}, "
                      "the newest readable one", file=sys.stderr, flush=True)
            return built, state, chosen
        if step is not None:
            raise ValueError(f"{where}: {_unreadable(unreadable)}; pick another with "
                             f"--checkpoint (it has {have})")
        raise ValueError(f"{where}: no readable checkpoint ({_unreadable(unreadable)})")
    finally:
        checkpointer.close()


def _unreadable(failures: dict) -> str:
    """'checkpoint 60 is unreadable (why)' for one or more steps."""
    return "; ".join(f"checkpoint {step} is unreadable ({why})"
                     for step, why in failures.items())
