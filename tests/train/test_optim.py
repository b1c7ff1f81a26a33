"""The optimiser carried by the state: equal to optax's own optimisers, per-member values, schedules, and settings
that would not be read are refused."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from asd_jax.methods.registry import train_section
from asd_jax.train import optim

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(4.0)}


def _grads(step: int):
    key = jax.random.PRNGKey(step)
    return jax.tree.map(lambda p: 3.0 * jax.random.normal(key, p.shape), PARAMS)


def _run(transform: optax.GradientTransformation, steps: int = 5):
    params, state = PARAMS, transform.init(PARAMS)
    for step in range(steps):
        updates, state = transform.update(_grads(step), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _values(**values):
    merged = {name: 0.0 for name in optim.HYPERPARAMETERS}
    merged.update(learning_rate=1e-2, **values)
    return {name: jnp.float32(value) for name, value in merged.items()}


@pytest.mark.parametrize("kind, values, reference", [
    ("adam", {}, optax.adam(1e-2)),
    ("adam", {"grad_clip_norm": 0.5}, optax.chain(optax.clip_by_global_norm(0.5), optax.adam(1e-2))),
    ("adamw", {"weight_decay": 0.1}, optax.adamw(1e-2, weight_decay=0.1)),
    ("sgd", {"momentum": 0.9}, optax.sgd(1e-2, momentum=0.9)),
    ("sgd", {"momentum": 0.5, "weight_decay": 0.01},
     optax.chain(optax.add_decayed_weights(0.01), optax.sgd(1e-2, momentum=0.5))),
])
def test_each_optimizer_equals_optax(kind, values, reference):
    ours = optim.Optimizer(kind).transform(_values(**values))
    for a, b in zip(jax.tree.leaves(_run(ours)), jax.tree.leaves(_run(reference))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_values_are_per_member_under_vmap():
    """One program, members with different learning rates and clip norms, each equal to its own optimiser."""
    optimizer = optim.Optimizer("adam")
    stacked = {name: jnp.asarray(v, jnp.float32) for name, v in
               {"learning_rate": [1e-2, 1e-3], "weight_decay": [0.0, 0.0], "grad_clip_norm": [0.0, 0.3],
                "momentum": [0.0, 0.0], "warmup_epochs": [0.0, 0.0]}.items()}

    def run_one(hparams):
        params, state = PARAMS, optimizer.init(PARAMS, hparams)
        for step in range(4):
            updates, state = optimizer.update(_grads(step), state, params, hparams)
            params = optax.apply_updates(params, updates)
        return params

    together = jax.jit(jax.vmap(run_one))(stacked)
    for index, reference in enumerate([optax.adam(1e-2),
                                       optax.chain(optax.clip_by_global_norm(0.3), optax.adam(1e-3))]):
        for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(_run(reference, 4))):
            np.testing.assert_allclose(a[index], b, rtol=1e-5, atol=1e-7)


def test_warmup_cosine_schedule():
    optimizer = optim.Optimizer("adam", "warmup_cosine", steps_per_epoch=10, total_steps=100)
    factor = lambda count, warmup=10.0: float(optimizer.factor(count, jnp.float32(warmup)))
    assert factor(0) == pytest.approx(0.1) and factor(4) == pytest.approx(0.5)  # linear warm-up over 10 steps
    assert factor(10) == pytest.approx(1.0)  # the peak, where the cosine starts
    assert factor(55) == pytest.approx(0.5, abs=1e-6)  # half-way down
    assert factor(100) == pytest.approx(0.0, abs=1e-7) and factor(150) == pytest.approx(0.0, abs=1e-7)
    assert factor(0, warmup=0.0) == pytest.approx(1.0)  # no warm-up: starts at the peak
    assert optim.Optimizer("adam").factor(37, 0.0) == 1.0


def _train(**changes):
    train = train_section(epochs=1, batch_size=4, learning_rate=1e-3, windows_per_clip=1)
    for key, value in changes.items():
        train[key] = value
    return train


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "rmsprop"}, "choose one of adam, adamw, sgd"),
    ({"schedule": "step"}, "choose one of constant, warmup_cosine"),
    ({"weight_decay": 1e-4}, "not read by optimizer=adam"),
    ({"momentum": 0.9}, "read by optimizer=sgd only"),
    ({"warmup_epochs": 1.0}, "not read by schedule=constant"),
    ({"learning_rate": 0.0}, "must be > 0"),
])
def test_settings_that_would_not_be_read_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        optim.check(_train(**changes))


def test_accepted_combinations_and_their_member_values():
    optim.check(_train(optimizer="adamw", weight_decay=1e-4, schedule="warmup_cosine", warmup_epochs=1.0))
    sgd = _train(optimizer="sgd")
    optim.check(sgd)
    assert optim.hyperparameters(sgd)["momentum"] == optim.SGD_DEFAULT_MOMENTUM
    assert optim.hyperparameters(_train())["momentum"] == 0.0
    assert isinstance(_train(), ml_collections.ConfigDict)
