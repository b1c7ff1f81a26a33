"""The Flax models: every registered window method's errors, gradients and one optimiser step (from its registry
entry alone), then each model's shapes, parameter counts and the recurrences against flax.linen's cells."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import traverse_util

from asd_jax.config import get_config
from asd_jax.methods import registry
from asd_jax.models import dense_ae, gru_autoencoder, lstm_predictor
from asd_jax.models.recurrent import GRULayer, LSTMLayer

pytestmark = pytest.mark.usefixtures("jax_compile_cache")

BATCH, MELS, HIDDEN = 16, 16, 8  # BatchNorm needs more than a handful of windows per batch; the id
# classifier's 7x7 stem (body=asdkit) needs more than a handful of mel bins


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _windows(length: int, seed: int = 0, mels: int = MELS) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (BATCH, length, mels))


def _config(method: registry.Method):
    """The default config with a registered method at its test size (``Method.test_settings``)."""
    config = get_config()
    config[method.section].update(method.test_settings)
    return config


def _window_model(method: registry.Method):
    """The trainer's view of a registered method at its test size."""
    return method.window_model(_config(method))


def _batch(method: registry.Method, length: int, seed: int) -> dict:
    """A batch as the trainer draws it: windows, the step's key and each window's clip data (for a method that
    learns classes, labels; for one that reads per-clip inputs, those: ``Method.clip_inputs``)."""
    batch = {"windows": _windows(length, seed), "key": jax.random.PRNGKey(seed + 100)}
    clip_data = method.stand_in_clip_data(_config(method), BATCH, seed)
    if isinstance(clip_data, dict):
        batch.update(clip_data)
    if method.labels:
        batch["labels"] = jnp.arange(BATCH, dtype=jnp.int32) % 2
    return batch


@functools.cache
def _compiled(name: str):
    """(init, step, loss, window length) of a registered method, jitted once per session: ``step(variables, batch)
    -> (loss, grads, params after one Adam(1e-3) step)`` and ``loss(variables, batch)``, both in train mode (the
    trainer's loss)."""
    model = _window_model(registry.get(name))
    optimizer = optax.adam(1e-3)

    def loss(variables, batch):
        return jnp.mean(model.errors(variables, batch, True)[0])

    @jax.jit
    def step(variables, batch):
        value, grads = jax.value_and_grad(lambda p: loss({**variables, "params": p}, batch))(variables["params"])
        updates, _ = optimizer.update(grads, optimizer.init(variables["params"]), variables["params"])
        return value, grads, optax.apply_updates(variables["params"], updates)

    return jax.jit(model.init, static_argnums=1), step, jax.jit(loss), model.window_length


def check_errors_shape(name: str) -> None:
    """One finite error per window, in training and in scoring mode."""
    init, _, _, length = _compiled(name)
    method = registry.get(name)
    model = _window_model(method)
    variables = init(jax.random.PRNGKey(0), MELS)
    batch = _batch(method, length, seed=0)
    for train in (True, False):
        errors, batch_stats = model.errors(variables, batch, train)
        assert errors.shape == (BATCH,) and bool(jnp.all(jnp.isfinite(errors))), (name, train)
        assert (batch_stats is None) or ("batch_stats" in variables), name


def check_gradients(name: str) -> None:
    """Every parameter gets a finite gradient, and a non-zero one (a bias right before a train-mode BatchNorm is
    cancelled by the batch mean, as in the Keras baseline: zero there is allowed)."""
    init, step, _, length = _compiled(name)
    variables = init(jax.random.PRNGKey(2), MELS)
    batch = _batch(registry.get(name), length, seed=1)
    # non-zero biases, so no gradient vanishes because of a symmetric start
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(3), p.shape), variables["params"])
    _, grads, _ = step({**variables, "params": params}, batch)
    flat = traverse_util.flatten_dict(grads, sep="/")
    assert set(flat) == set(traverse_util.flatten_dict(params, sep="/"))
    for path, grad in flat.items():
        assert np.all(np.isfinite(grad)), path
        if "batch_stats" in variables and path.endswith("/bias") and np.allclose(grad, 0.0, atol=1e-5):
            continue
        assert np.any(np.abs(grad) > 0), f"{name} {path}: zero gradient"


def check_adam_step(name: str) -> None:
    """One Adam step lowers the training loss on a fixed batch."""
    init, step, loss, length = _compiled(name)
    variables = init(jax.random.PRNGKey(8), MELS)
    batch = _batch(registry.get(name), length, seed=7)
    before, _, params = step(variables, batch)
    after = loss({**variables, "params": params}, batch)
    assert np.isfinite(before) and np.isfinite(after)
    assert after < before, name
    np.testing.assert_allclose(before, loss(variables, batch), rtol=1e-6)


MODEL_CHECKS = (check_errors_shape, check_gradients, check_adam_step)  # every window method passes them


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("name", registry.names("ensemble"))
def test_every_registered_window_method(name, check):
    check(name)


# ----------------------------------------------------------------------------------------------------------------------
# Shapes.


def test_lstm_predictor_shapes():
    model = lstm_predictor.LSTMPredictor(hidden_size=HIDDEN, num_layers=2)
    windows = _windows(4)

    @jax.jit
    def run(windows):
        variables = model.init(jax.random.PRNGKey(0), windows[:, :-1])
        prediction = model.apply(variables, windows[:, :-1])
        return prediction, lstm_predictor.prediction_errors(model, variables, windows)

    prediction, errors = run(windows)
    assert prediction.shape == (BATCH, MELS)
    assert errors.shape == (BATCH,)
    # the error is the MSE between the prediction from frames 0..2 and frame 3
    np.testing.assert_allclose(errors, jnp.mean((prediction - windows[:, -1]) ** 2, axis=-1), rtol=1e-6)


def test_gru_autoencoder_shapes():
    model = gru_autoencoder.GRUAutoencoder(hidden_size=HIDDEN, num_layers=2)
    windows = _windows(5)

    @jax.jit
    def run(windows):
        variables = model.init(jax.random.PRNGKey(0), windows)
        return model.apply(variables, windows), gru_autoencoder.reconstruction_errors(model, variables, windows)

    reconstruction, errors = run(windows)
    assert reconstruction.shape == (BATCH, 5, MELS)
    assert errors.shape == (BATCH,)
    np.testing.assert_allclose(errors, jnp.mean((reconstruction - windows) ** 2, axis=(1, 2)), rtol=1e-6)


def test_dense_autoencoder_shapes_and_batch_stats():
    model = dense_ae.DenseAutoencoder(hidden_size=16, bottleneck=4)
    windows = _windows(5)

    @jax.jit
    def run(windows):
        variables = model.init(jax.random.PRNGKey(0), windows, train=False)
        output = model.apply(variables, windows, train=False)
        eval_errors, eval_stats = dense_ae.reconstruction_errors(model, variables, windows, train=False)
        train_errors, train_stats = dense_ae.reconstruction_errors(model, variables, windows, train=True)
        return variables, output, eval_errors, eval_stats, train_errors, train_stats

    variables, output, eval_errors, eval_stats, train_errors, train_stats = run(windows)
    assert output.shape == (BATCH, 5 * MELS)
    assert eval_errors.shape == (BATCH,) and eval_stats is None
    assert train_errors.shape == (BATCH,)
    assert jax.tree.structure(train_stats) == jax.tree.structure(variables["batch_stats"])
    # train mode moves the running statistics (momentum 0.99) and normalises with the batch's own statistics
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), train_stats, variables["batch_stats"])
    assert all(jax.tree.leaves(changed))
    assert not np.allclose(train_errors, eval_errors)


# ----------------------------------------------------------------------------------------------------------------------
# Parameter counts and architecture.


def test_default_lstm_parameter_count():
    model = lstm_predictor.LSTMPredictor()  # 2 layers, hidden 128
    assert (model.hidden_size, model.num_layers) == (128, 2)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 10, 128)))["params"]
    layer = 4 * (128 * 128 + 128 * 128 + 128)  # 4 gates: input kernel, recurrent kernel, one bias
    head = 128 * 128 + 128
    assert layer == 131_584  # what Keras/PyTorch report for LSTM(128) on 128 inputs (PyTorch: +512 second bias)
    assert _count(shapes) == 2 * layer + head == 279_680
    assert shapes["lstm_0"]["w_input"].shape == (128, 512) and shapes["lstm_1"]["w_input"].shape == (128, 512)
    assert shapes["head"]["kernel"].shape == (128, 128)


def test_default_gru_autoencoder_parameter_count():
    model = gru_autoencoder.GRUAutoencoder()  # 2 + 2 layers, hidden 256
    assert (model.hidden_size, model.num_layers) == (256, 2)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 128)))["params"]

    def gru(inputs, hidden):  # 3 gates; input and recurrent biases kept apart (b_hn sits inside r * (...))
        return 3 * (inputs * hidden + hidden * hidden + 2 * hidden)

    expected = {"encoder_0": gru(128, 256), "encoder_1": gru(256, 256), "decoder_0": gru(256, 256),
                "decoder_1": gru(256, 256), "head": 256 * 128 + 128}
    assert {name: _count(tree) for name, tree in shapes.items()} == expected
    assert _count(shapes) == 296_448 + 3 * 394_752 + 32_896 == 1_513_600


def test_dense_autoencoder_follows_the_dcase_baseline():
    model = dense_ae.DenseAutoencoder()
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 128)), train=False))
    params, stats = variables["params"], variables["batch_stats"]
    widths = [128] * 4 + [8] + [128] * 4
    dense = [params[f"Dense_{i}"]["kernel"].shape for i in range(10)]
    assert dense == list(zip([640] + widths, widths + [640]))
    assert len([k for k in params if k.startswith("Dense")]) == 10
    assert [params[f"BatchNorm_{i}"]["scale"].shape[0] for i in range(9)] == widths
    assert len([k for k in params if k.startswith("BatchNorm")]) == 9
    assert [stats[f"BatchNorm_{i}"]["mean"].shape[0] for i in range(9)] == widths
    # the Keras baseline's summary: 269,992 parameters, 267,928 trainable (BatchNorm moving mean/var are not)
    assert _count(params) == 267_928
    assert _count(params) + _count(stats) == 269_992


def test_dense_autoencoder_layer_order_is_dense_batchnorm_relu():
    model = dense_ae.DenseAutoencoder(hidden_size=16, bottleneck=4)
    windows = _windows(5, seed=4)
    variables = model.init(jax.random.PRNGKey(0), windows, train=False)
    _, state = model.apply(variables, windows, train=False, capture_intermediates=True)
    seen = state["intermediates"]
    params = variables["params"]
    for i in range(9):
        dense_out = seen[f"Dense_{i}"]["__call__"][0]
        bn = variables["batch_stats"][f"BatchNorm_{i}"]
        normalised = (dense_out - bn["mean"]) / jnp.sqrt(bn["var"] + 1e-3)
        bn_out = normalised * params[f"BatchNorm_{i}"]["scale"] + params[f"BatchNorm_{i}"]["bias"]
        np.testing.assert_allclose(seen[f"BatchNorm_{i}"]["__call__"][0], bn_out, rtol=1e-5, atol=1e-5)
        following = params[f"Dense_{i + 1}"]
        np.testing.assert_allclose(seen[f"Dense_{i + 1}"]["__call__"][0],
                                   jax.nn.relu(bn_out) @ following["kernel"] + following["bias"], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# The fused recurrences equal flax.linen's cells with the same weights.


def _random_params(params, seed):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def _run_cell(cell, cell_params, carry, inputs):
    outputs = []
    for t in range(inputs.shape[0]):
        carry, out = cell.apply({"params": cell_params}, carry, inputs[t])
        outputs.append(out)
    return carry, jnp.stack(outputs)


@pytest.mark.parametrize("cell_class", [nn.LSTMCell, nn.OptimizedLSTMCell])
@pytest.mark.parametrize("with_carry", [False, True])
@pytest.mark.parametrize("unroll", [True, 1])
def test_lstm_layer_equals_flax_lstm_cell(cell_class, with_carry, unroll):
    steps, features = 5, 3
    inputs = jax.random.normal(jax.random.PRNGKey(0), (steps, BATCH, features))
    layer = LSTMLayer(HIDDEN, unroll=unroll)
    params = _random_params(layer.init(jax.random.PRNGKey(1), inputs)["params"], seed=2)
    h0 = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (BATCH, HIDDEN))
    c0 = 0.3 * jax.random.normal(jax.random.PRNGKey(4), (BATCH, HIDDEN))
    carry = (h0, c0) if with_carry else None
    outputs, (h, c) = layer.apply({"params": params}, inputs, carry)

    split = lambda a: jnp.split(a, 4, axis=-1)  # gate order i, f, g, o
    cell_params = {}
    for gate, w_in, w_hid, bias in zip("ifgo", split(params["w_input"]), split(params["w_hidden"]),
                                       split(params["bias"])):
        cell_params[f"i{gate}"] = {"kernel": w_in}
        cell_params[f"h{gate}"] = {"kernel": w_hid, "bias": bias}
    cell = cell_class(HIDDEN)
    reference = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), (c0, h0), inputs[0]))["params"]
    assert jax.tree.map(lambda a: a.shape, reference) == jax.tree.map(lambda a: a.shape, cell_params)
    start = (c0, h0) if with_carry else (jnp.zeros_like(c0), jnp.zeros_like(h0))  # flax's carry is (c, h)
    (c_ref, h_ref), outputs_ref = _run_cell(cell, cell_params, start, inputs)
    np.testing.assert_allclose(outputs, outputs_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_carry", [False, True])
@pytest.mark.parametrize("unroll", [1, 4, True])
def test_gru_layer_equals_flax_gru_cell(with_carry, unroll):
    steps, features = 5, 3
    inputs = jax.random.normal(jax.random.PRNGKey(0), (steps, BATCH, features))
    layer = GRULayer(HIDDEN, unroll=unroll)
    params = _random_params(layer.init(jax.random.PRNGKey(1), inputs)["params"], seed=2)
    h0 = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (BATCH, HIDDEN))
    outputs, h = layer.apply({"params": params}, inputs, h0 if with_carry else None)

    split = lambda a: jnp.split(a, 3, axis=-1)  # gate order r, z, n
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = split(params["w_input"]), split(params["w_hidden"])
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = split(params["bias_input"]), split(params["bias_hidden"])
    cell_params = {"ir": {"kernel": w_ir, "bias": b_ir + b_hr}, "iz": {"kernel": w_iz, "bias": b_iz + b_hz},
                   "in": {"kernel": w_in, "bias": b_in}, "hr": {"kernel": w_hr}, "hz": {"kernel": w_hz},
                   "hn": {"kernel": w_hn, "bias": b_hn}}
    cell = nn.GRUCell(HIDDEN)
    reference = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), h0, inputs[0]))["params"]
    assert jax.tree.map(lambda a: a.shape, reference) == jax.tree.map(lambda a: a.shape, cell_params)
    h_ref, outputs_ref = _run_cell(cell, cell_params, h0 if with_carry else jnp.zeros_like(h0), inputs)
    np.testing.assert_allclose(outputs, outputs_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


def test_lstm_predictor_reads_the_top_layer_last_state():
    """The prediction is head(h_T) of the top layer, the layers chained as flax cells would be."""
    model = lstm_predictor.LSTMPredictor(hidden_size=HIDDEN, num_layers=2)
    frames = _windows(4, seed=5)
    variables = model.init(jax.random.PRNGKey(0), frames)
    params = _random_params(variables["params"], seed=6)
    sequence = jnp.swapaxes(frames, 0, 1)
    for name in ("lstm_0", "lstm_1"):
        sequence, _ = LSTMLayer(HIDDEN).apply({"params": params[name]}, sequence)
    expected = sequence[-1] @ params["head"]["kernel"] + params["head"]["bias"]
    np.testing.assert_allclose(model.apply({"params": params}, frames), expected, rtol=1e-5, atol=1e-6)
