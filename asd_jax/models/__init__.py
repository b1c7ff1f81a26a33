"""Pure Flax modules: no I/O, no data loading, no training loop."""
