"""The PyTorch twin (benchmarks/torch_twin.py) computes what emodna_jax computes.

benchmarks/train_step.py times the two against each other, which is only a
comparison if they do the same arithmetic: given the JAX model's variables
the twin must give the same outputs, every loss term, the same updated
thresholds, prototypes and BatchNorm statistics, and the same gradients.
torch is a benchmark dependency, not a test one: without it this file skips.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
# One thread: the other pytest worker keeps the second core busy, and torch's
# OpenMP threads then spin-wait for each other (46 s alone, 3-4 min beside it).
torch.set_num_threads(1)

from configs import default  # noqa: E402
from emodna_jax import experiment, models  # noqa: E402
from emodna_jax import objective as objective_lib  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import torch_twin  # noqa: E402

BATCH, FRAMES, BINS, CLASSES, STEP = 8, 40, 16, 4, 60
TOL = 1e-4


def small_config(classifier):
    config = default.get_config()
    config.model.channels, config.model.num_blocks = 8, 3
    config.model.projection_dim = 16
    config.model.dropout_rate = 0.0          # dropout masks cannot be matched
    config.model.classifier = classifier
    config.steps = 100
    return config


# A threshold level mid-training for each classifier's posteriors (a cosine
# classifier's, times its scale, are far sharper).
TAU_G = {"linear": 0.27, "am": 0.9}


def jax_side(config, batch):
    """Outputs, objective metrics, new state and BN statistics of one step."""
    model = models.create_model(config.model, num_classes=CLASSES)
    frames = jnp.concatenate([batch["src_frames"], batch["tgt_frames"]])
    mask = jnp.concatenate([batch["src_mask"], batch["tgt_mask"]])
    variables = model.init(jax.random.key(0), frames, mask, train=False)
    rng = np.random.default_rng(1)
    # A state mid-training: some target rows pass the thresholds, some not.
    prototypes = rng.normal(size=(CLASSES, config.model.projection_dim))
    adapt = objective_lib.AdaptState(
        tau_g=jnp.float32(TAU_G[config.model.classifier]), p_tilde=jnp.asarray([0.3, 0.2, 0.25, 0.25], jnp.float32),
        prototypes=jnp.asarray(prototypes / np.linalg.norm(prototypes, axis=1,
                                                           keepdims=True), jnp.float32))
    cfg = experiment.objective_config(config, CLASSES)
    labels = jnp.asarray(batch["src_label"])

    def loss_fn(params):
        out, updates = model.apply({**variables, "params": params}, frames, mask,
                                   train=True, mutable=["batch_stats"])
        loss, (new_adapt, metrics) = objective_lib.objective(cfg, out, labels, adapt, STEP)
        return loss, (out, updates, new_adapt, metrics)

    grads, (out, updates, new_adapt, metrics) = jax.grad(loss_fn, has_aux=True)(
        variables["params"])
    return variables, adapt, out, updates, new_adapt, metrics, grads


@pytest.mark.parametrize("classifier", ["linear", "am"])
def test_twin_matches_outputs_losses_state_and_gradients(classifier):
    config = small_config(classifier)
    batch = torch_twin.random_batch(BATCH, FRAMES, BINS, CLASSES, seed=0)
    variables, adapt, out, updates, new_adapt, metrics, grads = jax_side(config, batch)
    assert 0 < float(metrics["confident_fraction"]) < 1  # both branches of the mask

    trainer = torch_twin.TwinTrainer(config, num_classes=CLASSES, num_bins=BINS)
    twin, objective = trainer.model, trainer.objective
    torch_twin.load_jax_variables(twin, variables)
    objective.tau_g = torch.tensor(np.asarray(adapt.tau_g))
    objective.p_tilde = torch.tensor(np.asarray(adapt.p_tilde))
    objective.prototypes = torch.tensor(np.asarray(adapt.prototypes))
    tb = trainer.to_device(batch)
    t_out = twin(torch.cat([tb["src_frames"], tb["tgt_frames"]]),
                 torch.cat([tb["src_mask"], tb["tgt_mask"]]))
    t_loss, terms = objective(t_out, tb["src_label"], STEP)
    t_loss.backward()

    close = lambda t, a, what: np.testing.assert_allclose(  # noqa: E731
        t.detach().numpy(), np.asarray(a), rtol=TOL, atol=TOL, err_msg=what)
    for key in ("h", "e", "z_e", "z_c", "logits", "corpus_logits"):
        close(t_out[key], out[key], key)
    # Every loss term the JAX objective reports, and no other.
    jax_losses = {k for k in metrics if k.startswith("loss")}
    assert set(terms) == jax_losses
    for key in sorted(jax_losses):
        close(terms[key], metrics[key], key)
    close(objective.tau_g, new_adapt.tau_g, "tau_g")
    close(objective.p_tilde, new_adapt.p_tilde, "p_tilde")
    close(objective.prototypes, new_adapt.prototypes, "prototypes")
    stats = updates["batch_stats"]["backbone"]["blocks_bn1"]   # [block, direction, C]
    bn = twin.backbone.blocks[1][2].bns[1]
    close(bn.running_mean, stats["mean"][2, 1], "running mean")
    close(bn.running_var, stats["var"][2, 1], "running var")
    # Gradients at both ends of the network.
    close(twin.classifier.kernel.grad if classifier == "am" else twin.classifier.weight.grad,
          grads["classifier"]["kernel"] if classifier == "am"
          else grads["classifier"]["kernel"].T, "classifier gradient")
    close(twin.backbone.inputs[0].weight.grad,
          np.transpose(grads["backbone"]["input"]["kernel"][0], (2, 1, 0)),
          "input convolution gradient")


def test_twin_refuses_what_it_does_not_implement():
    config = small_config("linear")
    config.msac.speaker = "suppress"
    config.loss.threshold_floor = 0.8
    with pytest.raises(ValueError, match=r"does not implement loss\.threshold_floor, "
                                         r"msac\.speaker"):
        torch_twin.TwinTrainer(config, num_classes=CLASSES, num_bins=BINS)
