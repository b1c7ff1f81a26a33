"""The hand-written GRU backward pass (unroll=True) gives the gradients JAX derives for a plain scanned GRU: for every
argument (the inputs or a repeated code, the weights, the biases, the initial state the decoder starts from), in the
layer and in the autoencoder, and under the trainer's vmap over members."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.models.gru_autoencoder import GRUAutoencoder, reconstruction_errors
from asd_jax.models.recurrent import GRULayer, gru_sequence

BATCH, FEATURES, HIDDEN, STEPS = 6, 5, 7, 9


def _scanned_gru(inputs, w_input, w_hidden, bias_input, bias_hidden, carry):
    """flax.linen.GRUCell's recurrence as a lax.scan over [T, B, in], written independently of asd_jax."""
    split = lambda a: jnp.split(a, 3, axis=-1)

    def step(h, x):
        (x_r, x_z, x_n), (h_r, h_z, h_n) = split(x @ w_input + bias_input), split(h @ w_hidden + bias_hidden)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        h = (1 - z) * jnp.tanh(x_n + r * h_n) + z * h
        return h, h

    h, outputs = jax.lax.scan(step, carry, inputs)
    return outputs, h


def _arguments(seed, repeated, with_carry):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    shape = (BATCH, FEATURES) if repeated else (STEPS, BATCH, FEATURES)
    carry = 0.5 * jax.random.normal(keys[5], (BATCH, HIDDEN)) if with_carry else None
    return (jax.random.normal(keys[0], shape), 0.6 * jax.random.normal(keys[1], (FEATURES, 3 * HIDDEN)),
            0.6 * jax.random.normal(keys[2], (HIDDEN, 3 * HIDDEN)), 0.3 * jax.random.normal(keys[3], (3 * HIDDEN,)),
            0.3 * jax.random.normal(keys[4], (3 * HIDDEN,)), carry)


def _loss(outputs, h):
    """Weights every output and the final state differently, so all cotangents are non-trivial."""
    weights = jnp.cos(jnp.arange(outputs.size, dtype=outputs.dtype)).reshape(outputs.shape)
    return jnp.sum(weights * outputs) + jnp.sum(jnp.sin(h))


@pytest.mark.parametrize("repeated", [False, True], ids=["sequence", "repeated_code"])
@pytest.mark.parametrize("with_carry", [False, True], ids=["zero_state", "initial_state"])
def test_gru_sequence_gradients_match_autodiff_of_the_scan(repeated, with_carry):
    arguments = _arguments(0, repeated, with_carry)
    argnums = tuple(range(6 if with_carry else 5))

    def fast(inputs, *rest):
        return _loss(*gru_sequence(inputs, *rest, steps=STEPS))

    def reference(inputs, w_input, w_hidden, bias_input, bias_hidden, carry):
        sequence = jnp.broadcast_to(inputs, (STEPS, *inputs.shape)) if repeated else inputs
        start = jnp.zeros((BATCH, HIDDEN)) if carry is None else carry
        return _loss(*_scanned_gru(sequence, w_input, w_hidden, bias_input, bias_hidden, start))

    np.testing.assert_allclose(fast(*arguments), reference(*arguments), rtol=1e-5, atol=1e-5)
    fast_grads = jax.grad(fast, argnums)(*arguments)
    reference_grads = jax.grad(reference, argnums)(*arguments)
    assert len(fast_grads) == len(argnums)
    for fast_grad, reference_grad in zip(fast_grads, reference_grads):
        assert fast_grad.shape == reference_grad.shape
        assert float(jnp.max(jnp.abs(reference_grad))) > 0
        np.testing.assert_allclose(fast_grad, reference_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("unroll", [True, 1])
def test_gru_layer_repeated_input_equals_the_broadcast_sequence(unroll):
    code, *_, carry = _arguments(1, repeated=True, with_carry=True)
    layer = GRULayer(HIDDEN, unroll=unroll)
    params = layer.init(jax.random.PRNGKey(2), code, carry, STEPS)
    outputs, h = layer.apply(params, code, carry, STEPS)
    outputs_ref, h_ref = layer.apply(params, jnp.broadcast_to(code, (STEPS, *code.shape)), carry)
    assert outputs.shape == (STEPS, BATCH, HIDDEN)
    np.testing.assert_allclose(outputs, outputs_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pass steps"):
        layer.apply(params, code, carry)


def _perturbed(params, seed):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [leaf + 0.2 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def test_autoencoder_gradients_match_autodiff_of_the_scan():
    """Encoder (zero state), decoder from the encoder's states fed the repeated code, head: every parameter."""
    windows = jax.random.normal(jax.random.PRNGKey(3), (BATCH, STEPS, FEATURES))
    fast, reference = GRUAutoencoder(HIDDEN, 2, unroll=True), GRUAutoencoder(HIDDEN, 2, unroll=1)
    params = _perturbed(fast.init(jax.random.PRNGKey(4), windows), seed=5)  # non-zero biases
    loss = lambda model: (lambda p: reconstruction_errors(model, p, windows).mean())
    np.testing.assert_allclose(loss(fast)(params), loss(reference)(params), rtol=1e-5)
    fast_grads, reference_grads = jax.grad(loss(fast))(params), jax.grad(loss(reference))(params)
    assert jax.tree.structure(fast_grads) == jax.tree.structure(reference_grads)
    for fast_leaf, reference_leaf in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(reference_grads)):
        assert float(jnp.max(jnp.abs(reference_leaf))) > 0
        np.testing.assert_allclose(fast_leaf, reference_leaf, rtol=1e-4, atol=1e-6)


def test_autoencoder_gradients_under_the_trainers_vmap_over_members():
    windows = jax.random.normal(jax.random.PRNGKey(6), (BATCH, STEPS, FEATURES))
    model = GRUAutoencoder(HIDDEN, 2)
    members = [_perturbed(model.init(jax.random.PRNGKey(7), windows), seed) for seed in (8, 9)]
    grad = jax.grad(lambda p: reconstruction_errors(model, p, windows).mean())
    stacked = jax.vmap(grad)(jax.tree.map(lambda *leaves: jnp.stack(leaves), *members))
    for index, member in enumerate(members):
        for batched, single in zip(jax.tree.leaves(stacked), jax.tree.leaves(grad(member))):
            np.testing.assert_allclose(batched[index], single, rtol=1e-5, atol=1e-6)
