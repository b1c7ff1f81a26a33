"""Stacked LSTM and GRU layers written for speed on small batches of short sequences.

Each layer projects its whole input sequence with one matmul ([B*T, in] x [in, gates]) and runs only the recurrent
matmul step by step, so most FLOPs go to large GEMMs. Gate layouts follow ``flax.linen`` (LSTM: i, f, g, o; GRU:
r, z, n) so the maths is the textbook one; parameters are stored fused per layer.

With ``unroll=True`` (the models' setting) the LSTM is :func:`lstm_sequence` and the GRU :func:`gru_sequence`:
unrolled recurrences with hand-written backward passes, shaped for XLA on CPU:

* the weight and input gradients are large matmuls over chunks of ``_GRADIENT_CHUNK`` steps, each issued as soon as
  its chunk of the backward recurrence is done, so it overlaps with the remaining steps;
* each step's gate gradients are elementwise kernels, and the state gradient carried to the previous step (LSTM: the
  cell state; GRU: h, whose direct share dh * z chains from step to step) is computed in a kernel of its own (see
  :func:`_separate_kernel`): left to itself XLA re-derives that chain in every consumer, which makes the backward
  pass quadratic in the sequence length (15-25% of the LSTM step; for the GRU autoencoder 3x the step and
  about 2 minutes of compiling);
* with no initial state the first step's recurrent products (with zeros) are skipped;
* a GRU input that is the same at every step (the autoencoder's repeated code) is projected once.

Otherwise the recurrence is a ``lax.scan`` differentiated by JAX (``unroll`` steps fused per iteration); the tests
check the hand-written gradients against it."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array

_GRADIENT_CHUNK = 5  # backward steps per weight-gradient matmul


def _scan(step, carry, xs, unroll):
    return jax.lax.scan(step, carry, xs, unroll=unroll)


def _gate_is_g(hidden: int) -> Array:
    """[4H] mask of the cell-input gate g (tanh) among the i, f, g, o gates (sigmoid)."""
    return (jnp.arange(4 * hidden) // hidden) == 2


def _activate(gates: Array) -> Array:
    """i, f, g, o pre-activations [B, 4H] -> sigmoid(i), sigmoid(f), tanh(g), sigmoid(o) in one tanh pass
    (sigmoid(x) = (1 + tanh(x / 2)) / 2)."""
    is_g = _gate_is_g(gates.shape[-1] // 4)
    squashed = jnp.tanh(jnp.where(is_g, gates, 0.5 * gates))
    return jnp.where(is_g, squashed, 0.5 * squashed + 0.5)


def _separate_kernel(value: Array, like: Array) -> Array:
    """``value`` divided by an exact one that XLA cannot see is one (``0 * like + 1``): XLA does not copy a division
    into each of its consumers, so ``value`` gets a kernel of its own instead of being recomputed in all of them."""
    return value / (0 * like + 1)


def _lstm_forward(inputs: Array, w_input: Array, w_hidden: Array, bias: Array, carry):
    """Per-step lists of h, c, activated gates and tanh(c); ``carry`` (h0, c0) or None for zeros."""
    steps, batch, features = inputs.shape
    hidden = w_hidden.shape[0]
    projected = (inputs.reshape(steps * batch, features) @ w_input + bias).reshape(steps, batch, 4 * hidden)
    h, c = carry if carry is not None else (None, None)
    hs, cs, gates, tanh_cs = [], [], [], []
    for t in range(steps):
        act = _activate(projected[t] if h is None else projected[t] + h @ w_hidden)
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c = i * g if c is None else f * c + i * g
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        hs.append(h)
        cs.append(c)
        gates.append(act)
        tanh_cs.append(tanh_c)
    return hs, cs, gates, tanh_cs


def _gate_gradients(dh: Array, dc_next: Array, act: Array, tanh_c: Array, c_prev: Array) -> tuple[Array, Array]:
    """One backward LSTM step: (gradient of the gate pre-activations [B, 4H], cell-state gradient for step t-1)."""
    hidden = dh.shape[-1]
    i, f, g, o = jnp.split(act, 4, axis=-1)
    dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
    block = lambda value, k: jnp.pad(value, ((0, 0), (k * hidden, (3 - k) * hidden)))  # fuses, unlike a concatenate
    upstream = block(dc * g, 0) + block(dc * c_prev, 1) + block(dc * i, 2) + block(dh * tanh_c, 3)
    d_gates = upstream * jnp.where(_gate_is_g(hidden), 1 - act * act, act * (1 - act))
    return d_gates, _separate_kernel(dc * f, f)


@jax.custom_vjp
def lstm_sequence(inputs: Array, w_input: Array, w_hidden: Array, bias: Array, carry=None):
    """LSTM over a time-major sequence [T, B, in] from ``carry`` (h0, c0) or zeros -> (outputs [T, B, H], (h, c)).

    Differentiable in every argument; the backward pass is written by hand (see the module docstring)."""
    hs, cs, _, _ = _lstm_forward(inputs, w_input, w_hidden, bias, carry)
    return jnp.stack(hs), (hs[-1], cs[-1])


def _lstm_sequence_fwd(inputs, w_input, w_hidden, bias, carry):
    hs, cs, gates, tanh_cs = _lstm_forward(inputs, w_input, w_hidden, bias, carry)
    return (jnp.stack(hs), (hs[-1], cs[-1])), (inputs, w_input, w_hidden, carry, hs, cs, gates, tanh_cs)


def _lstm_sequence_bwd(residuals, cotangents):
    inputs, w_input, w_hidden, carry, hs, cs, gates, tanh_cs = residuals
    d_outputs, (dh_recurrent, dc) = cotangents
    steps, batch, features = inputs.shape
    hidden = w_hidden.shape[0]
    h0, c0 = carry if carry is not None else (None, jnp.zeros((batch, hidden), inputs.dtype))
    d_w_input = jnp.zeros_like(w_input)
    d_w_hidden = jnp.zeros_like(w_hidden)
    d_bias = jnp.zeros((4 * hidden,), inputs.dtype)
    d_inputs = [None] * steps
    chunk: list[tuple[int, Array]] = []
    for t in reversed(range(steps)):
        d_gates, dc = _gate_gradients(dh_recurrent + d_outputs[t], dc, gates[t], tanh_cs[t],
                                      cs[t - 1] if t else c0)
        if t or carry is not None:
            dh_recurrent = d_gates @ w_hidden.T
        chunk.insert(0, (t, d_gates))
        if len(chunk) < _GRADIENT_CHUNK and t:
            continue
        first = chunk[0][0]
        stacked = jnp.concatenate([d for _, d in chunk])  # [n*B, 4H], rows in step order
        d_w_input += inputs[first:first + len(chunk)].reshape(-1, features).T @ stacked
        d_bias += stacked.sum(0)
        previous = [(hs[s - 1] if s else h0, d) for s, d in chunk if s or h0 is not None]
        if previous:
            d_w_hidden += jnp.concatenate([h for h, _ in previous]).T @ jnp.concatenate([d for _, d in previous])
        d_chunk = (stacked @ w_input.T).reshape(len(chunk), batch, features)
        for k, (s, _) in enumerate(chunk):
            d_inputs[s] = d_chunk[k]
        chunk = []
    d_carry = None if carry is None else (dh_recurrent, dc)
    return jnp.stack(d_inputs), d_w_input, d_w_hidden, d_bias, d_carry


lstm_sequence.defvjp(_lstm_sequence_fwd, _lstm_sequence_bwd)


class LSTMLayer(nn.Module):
    """One LSTM layer over a time-major sequence [T, B, in] -> (outputs [T, B, H], (h, c)).

    ``unroll=True`` runs :func:`lstm_sequence`; an integer runs a ``lax.scan`` with that many steps per iteration.
    """

    hidden_size: int
    unroll: int | bool = True

    @nn.compact
    def __call__(self, inputs: Array, carry: tuple[Array, Array] | None = None):
        steps, batch, features = inputs.shape
        hidden = self.hidden_size
        w_input = self.param("w_input", nn.initializers.lecun_normal(), (features, 4 * hidden))
        w_hidden = self.param("w_hidden", nn.initializers.lecun_normal(), (hidden, 4 * hidden))
        bias = self.param("bias", nn.initializers.zeros, (4 * hidden,))
        if self.unroll is True:
            return lstm_sequence(inputs, w_input, w_hidden, bias, carry)
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


def _project(inputs: Array, w_input: Array, bias_input: Array) -> Array:
    """inputs @ w_input + bias_input for every step in one matmul: [T, B, in] -> [T, B, G] (or [B, in] -> [B, G])."""
    flat = inputs.reshape(-1, inputs.shape[-1]) @ w_input + bias_input
    return flat.reshape(*inputs.shape[:-1], w_input.shape[-1])


def _gru_forward(projected: Array, w_hidden: Array, bias_hidden: Array, carry, steps: int):
    """Per-step lists of h, activated gates [r, z, n] and W_hn h + b_hn; ``projected`` is W_i x + b_i, [T, B, 3H]
    or [B, 3H] when the input is the same at every step; ``carry`` h0 or None for zeros."""
    h = carry
    hs, gates, hns = [], [], []
    for t in range(steps):
        x_r, x_z, x_n = jnp.split(projected if projected.ndim == 2 else projected[t], 3, axis=-1)
        h_r, h_z, h_n = jnp.split(bias_hidden if h is None else h @ w_hidden + bias_hidden, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        h = (1 - z) * n if h is None else (1 - z) * n + z * h
        hs.append(h)
        gates.append(jnp.concatenate([r, z, n], axis=-1))
        hns.append(jnp.broadcast_to(h_n, h.shape))
    return hs, gates, hns


def _gru_gate_gradients(dh: Array, act: Array, h_n: Array, h_prev: Array | None) -> tuple[Array, Array, Array]:
    """One backward GRU step: gradients of the input pre-activations W_i x + b_i [B, 3H], of the recurrent ones
    W_h h + b_h [B, 3H] (they differ in the n block only: r * d(n pre-activation)), and h_{t-1}'s direct share dh * z.
    """
    hidden = dh.shape[-1]
    r, z, n = jnp.split(act, 3, axis=-1)
    block = lambda value, k: jnp.pad(value, ((0, 0), (k * hidden, (2 - k) * hidden)))  # fuses, unlike a concatenate
    d_n = dh * (1 - z) * (1 - n * n)
    d_z = dh * (-n if h_prev is None else h_prev - n) * z * (1 - z)
    d_r = d_n * h_n * r * (1 - r)
    d_input = block(d_r, 0) + block(d_z, 1) + block(d_n, 2)
    d_hidden = block(d_r, 0) + block(d_z, 1) + block(d_n * r, 2)
    return d_input, d_hidden, dh * z


def gru_sequence(inputs: Array, w_input: Array, w_hidden: Array, bias_input: Array, bias_hidden: Array,
                 carry: Array | None = None, steps: int | None = None):
    """GRU over a time-major sequence [T, B, in], or over ``steps`` repetitions of one input [B, in], from ``carry``
    h0 or zeros -> (outputs [T, B, H], h). Gates as ``flax.linen.GRUCell``; see :class:`GRULayer`.

    Differentiable in every argument; the backward pass is written by hand (see the module docstring). A repeated
    input is projected once, and its gradients are taken from the gate gradients summed over the steps (T times
    fewer FLOPs than broadcasting it to [T, B, in] first)."""
    if inputs.ndim == 3:
        steps = inputs.shape[0]
    elif steps is None:
        raise ValueError("a [B, in] input is repeated at every step: pass steps")
    return _gru_sequence(inputs, w_input, w_hidden, bias_input, bias_hidden, carry, steps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _gru_sequence(inputs, w_input, w_hidden, bias_input, bias_hidden, carry, steps):
    hs, _, _ = _gru_forward(_project(inputs, w_input, bias_input), w_hidden, bias_hidden, carry, steps)
    return jnp.stack(hs), hs[-1]


def _gru_sequence_fwd(inputs, w_input, w_hidden, bias_input, bias_hidden, carry, steps):
    hs, gates, hns = _gru_forward(_project(inputs, w_input, bias_input), w_hidden, bias_hidden, carry, steps)
    return (jnp.stack(hs), hs[-1]), (inputs, w_input, w_hidden, carry, hs, gates, hns)


def _gru_sequence_bwd(steps, residuals, cotangents):
    inputs, w_input, w_hidden, carry, hs, gates, hns = residuals
    d_outputs, dh_recurrent = cotangents
    repeated = inputs.ndim == 2  # one input at every step: its gradients come from the gate gradients' sum
    d_w_input = jnp.zeros_like(w_input)
    d_w_hidden = jnp.zeros_like(w_hidden)
    d_bias_input = jnp.zeros_like(w_input[0])
    d_bias_hidden = jnp.zeros_like(w_hidden[0])
    d_input_total = 0
    d_inputs = [None] * steps
    chunk: list[tuple[int, Array, Array]] = []
    for t in reversed(range(steps)):
        h_prev = hs[t - 1] if t else carry
        d_input, d_hidden, dh_direct = _gru_gate_gradients(dh_recurrent + d_outputs[t], gates[t], hns[t], h_prev)
        if h_prev is not None:
            dh_recurrent = _separate_kernel(dh_direct + d_hidden @ w_hidden.T, dh_direct)
        chunk.insert(0, (t, d_input, d_hidden))
        if len(chunk) < _GRADIENT_CHUNK and t:
            continue
        first = chunk[0][0]
        d_bias_hidden += sum(d for _, _, d in chunk).sum(0)
        previous = [(hs[s - 1] if s else carry, d) for s, _, d in chunk if s or carry is not None]
        if previous:
            d_w_hidden += jnp.concatenate([h for h, _ in previous]).T @ jnp.concatenate([d for _, d in previous])
        if repeated:
            d_input_total += sum(d for _, d, _ in chunk)
        else:
            stacked = jnp.concatenate([d for _, d, _ in chunk])  # [n*B, 3H], rows in step order
            d_bias_input += stacked.sum(0)
            d_w_input += inputs[first:first + len(chunk)].reshape(-1, inputs.shape[-1]).T @ stacked
            d_chunk = (stacked @ w_input.T).reshape(len(chunk), *inputs.shape[1:])
            for k, (s, _, _) in enumerate(chunk):
                d_inputs[s] = d_chunk[k]
        chunk = []
    if repeated:
        d_bias_input = d_input_total.sum(0)
        d_w_input = inputs.T @ d_input_total
        d_inputs = d_input_total @ w_input.T
    else:
        d_inputs = jnp.stack(d_inputs)
    d_carry = None if carry is None else dh_recurrent
    return d_inputs, d_w_input, d_w_hidden, d_bias_input, d_bias_hidden, d_carry


_gru_sequence.defvjp(_gru_sequence_fwd, _gru_sequence_bwd)


class GRULayer(nn.Module):
    """One GRU layer over a time-major sequence [T, B, in] -> (outputs [T, B, H], h).

    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), as in ``flax.linen.GRUCell`` and cuDNN. ``inputs`` may be one
    [B, in] input fed at each of ``steps`` steps (a repeated code), which is projected once. ``unroll=True`` runs
    :func:`gru_sequence`; an integer runs a ``lax.scan`` with that many steps per iteration.
    """

    hidden_size: int
    unroll: int | bool = True

    @nn.compact
    def __call__(self, inputs: Array, carry: Array | None = None, steps: int | None = None):
        features = inputs.shape[-1]
        hidden = self.hidden_size
        w_input = self.param("w_input", nn.initializers.lecun_normal(), (features, 3 * hidden))
        w_hidden = self.param("w_hidden", nn.initializers.lecun_normal(), (hidden, 3 * hidden))
        bias_input = self.param("bias_input", nn.initializers.zeros, (3 * hidden,))
        bias_hidden = self.param("bias_hidden", nn.initializers.zeros, (3 * hidden,))
        if self.unroll is True:
            return gru_sequence(inputs, w_input, w_hidden, bias_input, bias_hidden, carry, steps)
        if inputs.ndim == 2:
            if steps is None:
                raise ValueError("a [B, in] input is repeated at every step: pass steps")
            inputs = jnp.broadcast_to(inputs, (steps, *inputs.shape))
        projected = _project(inputs, w_input, bias_input)
        if carry is None:
            carry = jnp.zeros((inputs.shape[1], hidden), inputs.dtype)

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
