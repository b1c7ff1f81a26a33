"""asd_jax: unsupervised anomalous sound detection for industrial machines in JAX/Flax."""

__version__ = "0.1.0"
