"""Stacked LSTM and GRU layers written for speed on small batches of short sequences.

Each layer projects its whole input sequence with one matmul ([B*T, in] x [in, gates]) and runs only the recurrent
matmul step by step, so most FLOPs go to large GEMMs. The recurrence is a ``lax.scan`` (``unroll`` steps fused per
iteration; ``unroll=True`` unrolls it fully, best for the 10-step LSTM). Gate layouts follow ``flax.linen``
(LSTM: i, f, g, o; GRU: r, z, n) so the maths is the textbook one; parameters are stored fused per layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array


def _scan(step, carry, xs, unroll):
    return jax.lax.scan(step, carry, xs, unroll=unroll)


class LSTMLayer(nn.Module):
    """One LSTM layer over a time-major sequence [T, B, in] -> (outputs [T, B, H], (h, c))."""

    hidden_size: int
    unroll: int | bool = True

    @nn.compact
    def __call__(self, inputs: Array, carry: tuple[Array, Array] | None = None):
        steps, batch, features = inputs.shape
        hidden = self.hidden_size
        w_input = self.param("w_input", nn.initializers.lecun_normal(), (features, 4 * hidden))
        w_hidden = self.param("w_hidden", nn.initializers.lecun_normal(), (hidden, 4 * hidden))
        bias = self.param("bias", nn.initializers.zeros, (4 * hidden,))
        projected = (inputs.reshape(steps * batch, features) @ w_input + bias).reshape(steps, batch, 4 * hidden)
        if carry is None:
            carry = (jnp.zeros((batch, hidden), inputs.dtype), jnp.zeros((batch, hidden), inputs.dtype))

        def step(state, gates_x):
            h, c = state
            gates = gates_x + h @ w_hidden
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        carry, outputs = _scan(step, carry, projected, self.unroll)
        return outputs, carry


class GRULayer(nn.Module):
    """One GRU layer over a time-major sequence [T, B, in] -> (outputs [T, B, H], h).

    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), as in ``flax.linen.GRUCell`` and cuDNN.
    """

    hidden_size: int
    unroll: int | bool = 1

    @nn.compact
    def __call__(self, inputs: Array, carry: Array | None = None):
        steps, batch, features = inputs.shape
        hidden = self.hidden_size
        w_input = self.param("w_input", nn.initializers.lecun_normal(), (features, 3 * hidden))
        w_hidden = self.param("w_hidden", nn.initializers.lecun_normal(), (hidden, 3 * hidden))
        bias_input = self.param("bias_input", nn.initializers.zeros, (3 * hidden,))
        bias_hidden = self.param("bias_hidden", nn.initializers.zeros, (3 * hidden,))
        projected = (inputs.reshape(steps * batch, features) @ w_input + bias_input).reshape(steps, batch, 3 * hidden)
        if carry is None:
            carry = jnp.zeros((batch, hidden), inputs.dtype)

        def step(h, gates_x):
            gates_h = h @ w_hidden + bias_hidden
            xr, xz, xn = jnp.split(gates_x, 3, axis=-1)
            hr, hz, hn = jnp.split(gates_h, 3, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
            h = (1.0 - z) * n + z * h
            return h, h

        carry, outputs = _scan(step, carry, projected, self.unroll)
        return outputs, carry
