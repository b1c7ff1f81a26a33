"""Data layer: find clips, decode audio, log-mel features and their cache, training windows, synthetic data.

Nothing here imports a model or JAX: data moves forward only.
"""
