"""The kNN backend against a brute-force computation of every distance."""

import numpy as np
import pytest

from asd_jax.methods.knn import ANY_UNIT, KNNBackend, brute_force_scores


@pytest.mark.parametrize("k", [1, 3])
def test_knn_scores_equal_brute_force_per_unit(k):
    rng = np.random.default_rng(0)
    train = rng.standard_normal((40, 8))
    train_units = np.where(np.arange(40) < 25, "00", "02")
    test = rng.standard_normal((12, 8))
    test_units = ["00"] * 5 + ["02"] * 5 + ["06", ANY_UNIT]  # 06 was never trained on: every clip counts
    backend = KNNBackend(k).fit(train, train_units)
    np.testing.assert_allclose(backend.score(test, test_units),
                               brute_force_scores(train, train_units, test, test_units, k), rtol=1e-9, atol=1e-12)


def test_knn_own_unit_matters_and_a_training_clip_is_at_distance_zero():
    train = np.asarray([[1.0, 0.0], [0.0, 1.0]])
    backend = KNNBackend(1).fit(train, ["a", "b"])
    # the first training vector scored as unit "b" is 90 degrees from b's only clip: cosine distance 1
    np.testing.assert_allclose(backend.score(train, ["a", "b"]), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(backend.score(train[:1], ["b"]), [1.0], atol=1e-12)


def test_knn_k_larger_than_a_unit_uses_all_its_clips_and_save_load_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    train, units = rng.standard_normal((6, 4)), ["x"] * 2 + ["y"] * 4
    backend = KNNBackend(3).fit(train, units)
    test = rng.standard_normal((3, 4))
    expected = brute_force_scores(train, units, test, ["x", "y", "y"], 3)
    expected[0] = brute_force_scores(train, units, test[:1], ["x"], 2)[0]  # unit x has 2 clips only
    np.testing.assert_allclose(backend.score(test, ["x", "y", "y"]), expected, rtol=1e-9)
    backend.save(str(tmp_path / "knn.npz"))
    loaded = KNNBackend.load(str(tmp_path / "knn.npz"))
    np.testing.assert_allclose(loaded.score(test, ["x", "y", "y"]), expected, rtol=1e-9)


def test_knn_refuses_k_below_one_and_empty_training():
    with pytest.raises(ValueError, match="k >= 1"):
        KNNBackend(0)
    with pytest.raises(ValueError, match="at least one training clip"):
        KNNBackend(1).fit(np.zeros((0, 3)), [])
