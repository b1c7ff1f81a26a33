"""Write-up Method III: a stacked GRU encoder compresses L frames, a stacked GRU decoder reconstructs them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from asd_jax.models.recurrent import GRULayer


class GRUAutoencoder(nn.Module):
    """[B, L, mels] -> reconstruction [B, L, mels].

    The encoder's last top-layer state is the code; the decoder receives it at every step (a repeated context
    vector, so it cannot copy its input) and starts from the encoder's final states. The first decoder layer takes
    the code as a [B, H] input repeated over the steps, so it is projected once rather than once per step.
    """

    hidden_size: int = 256
    num_layers: int = 2
    unroll: int | bool = True

    @nn.compact
    def __call__(self, frames: jax.Array) -> jax.Array:
        steps = frames.shape[1]
        sequence = jnp.swapaxes(frames, 0, 1)
        final_states = []
        for layer in range(self.num_layers):
            sequence, state = GRULayer(self.hidden_size, self.unroll, name=f"encoder_{layer}")(sequence)
            final_states.append(state)
        sequence = final_states[-1]  # the code [B, H], fed to the first decoder layer at each of the steps
        for layer in range(self.num_layers):
            sequence, _ = GRULayer(self.hidden_size, self.unroll, name=f"decoder_{layer}")(
                sequence, final_states[layer], steps)
        return jnp.swapaxes(nn.Dense(frames.shape[-1], name="head")(sequence), 0, 1)


def reconstruction_errors(model: GRUAutoencoder, variables, windows: jax.Array) -> jax.Array:
    """Per-window reconstruction MSE: windows [B, L, mels] -> [B]."""
    return jnp.mean(jnp.square(model.apply(variables, windows) - windows), axis=(1, 2))


def flops_per_window(section, mels: int) -> float:
    """Forward + backward (3x forward) matmul FLOPs of one training window: the encoder's and the decoder's gates
    over ``frames`` steps, then the output projection."""
    hidden, steps = section.hidden_size, section.frames
    encoder = [mels] + [hidden] * (section.num_layers - 1)
    decoder = [hidden] * section.num_layers
    forward = sum(steps * 2 * (i + hidden) * 3 * hidden for i in encoder + decoder) + steps * 2 * hidden * mels
    return 3.0 * forward
