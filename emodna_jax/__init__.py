"""emodna_jax: cross-corpus speech emotion recognition in JAX."""

from emodna_jax import host_memory

# Opt-in, and before JAX starts its threads: see host_memory's docstring.
MALLOC_KEEPS_FREED_MEMORY = host_memory.keep_freed_memory()
