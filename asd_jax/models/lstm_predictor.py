"""Write-up Method II: a stacked LSTM reads ``context`` log-mel frames and predicts the next one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from asd_jax.models.recurrent import LSTMLayer


class LSTMPredictor(nn.Module):
    """[B, context, mels] -> predicted next frame [B, mels]."""

    hidden_size: int = 128
    num_layers: int = 2
    unroll: int | bool = True

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        sequence = jnp.swapaxes(frames, 0, 1)  # time-major
        for layer in range(self.num_layers):
            sequence, (last_hidden, _) = LSTMLayer(self.hidden_size, self.unroll, name=f"lstm_{layer}")(sequence)
        return nn.Dense(frames.shape[-1], name="head")(last_hidden)


def prediction_errors(model: LSTMPredictor, variables, windows: jax.Array) -> jax.Array:
    """Per-window MSE of predicting frame ``context`` from frames ``0..context-1``: windows [B, context+1, mels]."""
    prediction = model.apply(variables, windows[:, :-1])
    return jnp.mean(jnp.square(prediction - windows[:, -1]), axis=-1)


def flops_per_window(section, mels: int) -> float:
    """Forward + backward (3x forward) matmul FLOPs of one training window: every layer's gates over ``frames``
    steps, then the output projection."""
    hidden, inputs = section.hidden_size, [mels] + [section.hidden_size] * (section.num_layers - 1)
    forward = sum(section.frames * 2 * (i + hidden) * 4 * hidden for i in inputs) + 2 * hidden * mels
    return 3.0 * forward
