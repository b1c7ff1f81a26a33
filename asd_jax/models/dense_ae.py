"""The DCASE 2020 Task 2 baseline autoencoder, so the official baseline runs beside the write-up's methods.

5 consecutive log-mel frames, concatenated to 640 values -> Dense 128 x4 -> 8 -> Dense 128 x4 -> 640, each hidden
Dense followed by BatchNorm and ReLU, as in the baseline's Keras model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


class DenseAutoencoder(nn.Module):
    """[B, frames, mels] -> reconstruction [B, frames * mels] of the flattened input."""

    hidden_size: int = 128
    bottleneck: int = 8
    depth: int = 4

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool) -> jax.Array:
        x = frames.reshape(frames.shape[0], -1)
        widths = [self.hidden_size] * self.depth + [self.bottleneck] + [self.hidden_size] * self.depth
        for width in widths:
            x = nn.Dense(width)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3)(x)
            x = nn.relu(x)
        return nn.Dense(frames.shape[1] * frames.shape[2])(x)


def reconstruction_errors(model: DenseAutoencoder, variables, windows: jax.Array, train: bool = False):
    """(per-window MSE [B], updated batch statistics or None)."""
    target = windows.reshape(windows.shape[0], -1)
    if train:
        output, updates = model.apply(variables, windows, train=True, mutable=["batch_stats"])
        return jnp.mean(jnp.square(output - target), axis=-1), updates["batch_stats"]
    output = model.apply(variables, windows, train=False)
    return jnp.mean(jnp.square(output - target), axis=-1), None


def flops_per_window(section, mels: int) -> float:
    """Forward + backward (3x forward) matmul FLOPs of one training window through the dense stack."""
    widths = [section.frames * mels] + [section.hidden_size] * 4 + [section.bottleneck] + \
        [section.hidden_size] * 4 + [section.frames * mels]
    return 3.0 * sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
