"""Dropout masks keyed by example, drawn once per forward pass.

A mask drawn for a device's slice of the batch depends on which device and
process a row lands on, so the same run on another layout trains another
model.  Here every row gets its own key (from the step and its index in the
global batch, emodna_jax/step.py) and one call draws all of that row's
uniform noise for every dropout site of the model; each site then reads its
next columns.  One draw per forward pass instead of one per site also
shrank the fused step's compiled program by a quarter (docs/speed.md).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


class RowNoise:
    """Uniform noise [B, units], handed out to dropout sites in call order."""

    def __init__(self, row_keys: jax.Array, units: int):
        self.units = units
        self.used = 0
        self.uniform = jax.vmap(lambda key: jax.random.uniform(key, (units,)))(row_keys)

    def dropout(self, x: jax.Array, rate: float, broadcast_dims=()) -> jax.Array:
        """``x`` [B, ...] with whole units zeroed at ``rate`` (one unit spans
        ``broadcast_dims``) and the rest scaled by 1 / (1 - rate)."""
        if rate <= 0:
            return x
        shape = [1 if d in broadcast_dims else n for d, n in enumerate(x.shape)]
        shape[0] = x.shape[0]
        return drop(x, self.take(math.prod(shape[1:])).reshape(shape), rate)

    def take(self, count: int) -> jax.Array:
        """The next ``count`` noise columns [B, count], for a site (or several
        sites computed together) that lays them out itself."""
        if self.used + count > self.units:
            raise ValueError(f"dropout needs more than the {self.units} noise units "
                             "the model declared (dropout_units)")
        columns = self.uniform[:, self.used:self.used + count]
        self.used += count
        return columns

    def check_used(self):
        if self.used != self.units:
            raise ValueError(f"the model declared {self.units} dropout noise units "
                             f"and used {self.used} (dropout_units is out of date)")


def drop(x: jax.Array, uniform: jax.Array, rate: float) -> jax.Array:
    """Dropout of ``x`` with ``uniform`` noise broadcastable to it: a value is
    zeroed where its noise is under ``rate`` and scaled by 1 / (1 - rate)."""
    keep = uniform >= rate
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


def channel_units(rate: float, channels: int) -> int:
    """Units of a channel dropout site (none when it is off)."""
    return channels if rate > 0 else 0
