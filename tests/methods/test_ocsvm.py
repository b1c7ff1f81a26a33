"""OC-SVM detector: fit on training normals only, score direction, label-free and oracle grid selection."""

import json

import numpy as np
import pytest

from asd_jax.methods import ocsvm

GAMMAS = ["scale", 0.001, 0.01, 10.0]
NUS = [0.05, 0.2]


@pytest.fixture
def data():
    """Normal clips near the origin in 16-d; test anomalies shifted and spread out, two machine ids."""
    rng = np.random.default_rng(0)
    train = rng.standard_normal((120, 16)) + 5.0
    test = np.r_[rng.standard_normal((40, 16)) + 5.0, 2.0 * rng.standard_normal((40, 16)) + 6.5]
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    ids = np.tile(["id_00", "id_02"], 40)
    return train, test, labels, ids


def test_pipeline_is_scaler_then_rbf_ocsvm():
    pipeline = ocsvm.make_pipeline("scale", 0.1)
    assert [name for name, _ in pipeline.steps] == ["scaler", "ocsvm"]
    svm = pipeline.named_steps["ocsvm"]
    assert (svm.kernel, svm.gamma, svm.nu) == ("rbf", "scale", 0.1)


def test_scaler_sees_training_clips_only(data):
    train, test, _, _ = data
    pipeline = ocsvm.fit(train, 0.01, 0.1)
    ocsvm.anomaly_scores(pipeline, test)
    scaler = pipeline.named_steps["scaler"]
    assert scaler.n_samples_seen_ == len(train)
    np.testing.assert_allclose(scaler.mean_, train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_, train.std(axis=0))


def test_outlier_scores_higher(data):
    train, _, _, _ = data
    pipeline = ocsvm.fit(train, "scale", 0.1)
    scores = ocsvm.anomaly_scores(pipeline, np.r_[train[:5], np.full((1, 16), 50.0)])
    assert scores[-1] > 0 and scores[-1] > scores[:-1].max()


def test_label_free_selection_avoids_overfitting(data):
    train, test, labels, ids = data
    results = {}
    best, table = ocsvm.select(train, GAMMAS, NUS, seed=0, results=results)
    assert len(table) == len(GAMMAS) * len(NUS) and sum(row["selected"] for row in table) == 1
    assert best["mode"] == "label_free" and best["test_tuned"] is False
    assert best["gamma"] != 10.0  # a bump around every training clip rejects all held-out normals
    overfit = [row for row in table if row["gamma"] == 10.0]
    assert all(row["holdout_false_alarm_rate"] > 0.9 and row["holdout_gap_auc"] > 0.9 for row in overfit)
    for row in table:
        assert {"gamma", "nu", "holdout_false_alarm_rate", "holdout_gap_auc", "margin", "calibration_error"} <= set(row)
        assert "test_auc" not in row
    assert results["ocsvm"]["best"] == best and results["ocsvm"]["grid"] == table
    assert results["ocsvm"]["num_holdout"] == 24 and results["ocsvm"]["num_fit"] == 96
    json.dumps(results)  # ready for results.json
    assert ocsvm.select(train, GAMMAS, NUS, seed=0)[0] == best  # deterministic for a seed


def test_oracle_selection_is_flagged_and_never_fits_test(data, monkeypatch):
    train, test, labels, ids = data
    fitted = []
    make = ocsvm.make_pipeline

    def recording(gamma, nu):
        pipeline = make(gamma, nu)
        fitted.append(pipeline)
        return pipeline

    monkeypatch.setattr(ocsvm, "make_pipeline", recording)
    results = {}
    best, table = ocsvm.select(train, GAMMAS, NUS, mode="oracle", test_vectors=test, test_labels=labels,
                               test_machine_ids=ids, results=results)
    assert best["test_tuned"] is True and results["ocsvm"]["test_tuned"] is True
    aucs = [row["test_auc"] for row in table]
    assert best == {**best, "gamma": table[int(np.argmax(aucs))]["gamma"], "nu": table[int(np.argmax(aucs))]["nu"]}
    assert max(aucs) > 0.9
    seen = {pipeline.named_steps["scaler"].n_samples_seen_ for pipeline in fitted}
    assert seen <= {96, len(train)}  # the hold-out fit part or all training normals, never a test clip
    with pytest.raises(ValueError, match="oracle"):
        ocsvm.select(train, GAMMAS, NUS, mode="oracle")


def test_mean_auc_over_ids_skips_unknown_and_one_class_ids():
    labels = np.array([0, 1, 0, 1, 0, 0, -1])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.3, 0.4, 5.0])
    ids = ["a", "a", "b", "b", "c", "c", "a"]
    assert ocsvm.mean_auc_over_ids(labels, scores, ids) == pytest.approx(0.5)  # a: 1.0, b: 0.0, c: undefined


def test_logmel_stats():
    logmel = np.random.default_rng(0).standard_normal((3, 50, 8)).astype(np.float32)
    stats = ocsvm.logmel_stats(logmel, chunk=2)
    assert stats.shape == (3, 16) and stats.dtype == np.float32
    np.testing.assert_allclose(stats[:, :8], logmel.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(stats[:, 8:], logmel.std(axis=1), atol=1e-6)


def test_grid_parsing():
    assert ocsvm.parse_grid("scale, 0.001,0.1", "0.05,0.2") == (["scale", 0.001, 0.1], [0.05, 0.2])
    with pytest.raises(ValueError, match="nu"):
        ocsvm.parse_grid("scale", "0.0")
    with pytest.raises(ValueError, match="holdout_fraction"):
        ocsvm.select(np.zeros((10, 2)), ["scale"], [0.1], holdout_fraction=1.0)
