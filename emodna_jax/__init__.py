"""emodna_jax: cross-corpus speech emotion recognition in JAX."""

from emodna_jax import host_memory

# Before JAX starts its threads; EMODNA_JAX_KEEP_HOST_MEMORY=0 opts out
# (host_memory's docstring says why it is the default).
MALLOC_KEEPS_FREED_MEMORY = host_memory.keep_freed_memory()
