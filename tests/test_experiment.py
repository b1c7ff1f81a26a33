"""Declaring points: the quasi-random (Halton) axes."""

import numpy as np
import pytest

from asd_jax import experiment


def test_quasi_random_points_lie_in_their_ranges_on_their_scales():
    axes = {"lstm.train.learning_rate": (1e-4, 1e-2, "log"), "lstm.train.weight_decay": (0.0, 0.1, "linear")}
    points = experiment.quasi_random(64, seed=0, axes=axes)
    assert len(points) == 64 and all(set(p) == set(axes) for p in points)
    rates = np.array([p["lstm.train.learning_rate"] for p in points])
    decays = np.array([p["lstm.train.weight_decay"] for p in points])
    assert rates.min() >= 1e-4 and rates.max() <= 1e-2 and decays.min() >= 0.0 and decays.max() <= 0.1
    # even in log space: each decade holds about half of the points
    assert 24 <= np.sum(rates < 1e-3) <= 40


def test_quasi_random_covers_the_box_more_evenly_than_random_points():
    """The Halton points of one axis fill every one of n equal bins once per n points (base-2 van der Corput)."""
    points = experiment.quasi_random(16, seed=3, axes={"a": (0.0, 1.0, "linear"), "b": (0.0, 1.0, "linear")})
    first = np.array([p["a"] for p in points])
    assert sorted(np.floor(first * 16).astype(int).tolist()) == list(range(16))
    second = np.array([p["b"] for p in points])
    assert len(set(np.floor(second * 3).astype(int).tolist())) == 3


def test_quasi_random_is_deterministic_per_seed():
    axes = {"x": (1.0, 2.0, "linear")}
    assert experiment.quasi_random(5, 7, axes) == experiment.quasi_random(5, 7, axes)
    assert experiment.quasi_random(5, 7, axes) != experiment.quasi_random(5, 8, axes)


@pytest.mark.parametrize("axes, message", [({"x": (0.0, 1.0, "log")}, "low > 0"), ({"x": (2.0, 1.0, "linear")},
                                           "low < high"), ({"x": (0.0, 1.0, "cubic")}, "'log' | 'linear'"),
                                          ({}, "1 to")])
def test_quasi_random_refuses_bad_axes(axes, message):
    with pytest.raises(ValueError, match=message):
        experiment.quasi_random(4, 0, axes)
