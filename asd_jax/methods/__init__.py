"""One module per method family, all behind the same small protocol (see :mod:`asd_jax.methods.base`)."""
