"""The hand-written LSTM backward pass (unroll=True) gives the gradients JAX derives for the scanned recurrence."""

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models.lstm_predictor import LSTMPredictor, prediction_errors


def test_hand_written_backward_matches_autodiff_of_the_scan():
    windows = jax.random.normal(jax.random.PRNGKey(1), (16, 11, 32))
    fast, reference = LSTMPredictor(24, 2, unroll=True), LSTMPredictor(24, 2, unroll=1)
    params = fast.init(jax.random.PRNGKey(0), windows[:, :-1])
    fast_grads = jax.grad(lambda p: prediction_errors(fast, p, windows).mean())(params)
    reference_grads = jax.grad(lambda p: prediction_errors(reference, p, windows).mean())(params)
    for fast_leaf, reference_leaf in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(reference_grads)):
        assert float(jnp.max(jnp.abs(reference_leaf))) > 0
        np.testing.assert_allclose(fast_leaf, reference_leaf, rtol=1e-4, atol=1e-6)
