"""Metrics against cases worked out by hand."""

import math

import numpy as np
import pytest

from asd_jax.evaluate.metrics import (
    UndefinedMetricWarning,
    auc_pauc,
    classification_metrics,
    per_id_metrics,
    pooled_auc,
    undefined_reason,
)


def _mcclish(raw_partial_area: float, max_fpr: float = 0.1) -> float:
    min_area, max_area = max_fpr**2 / 2, max_fpr
    return 0.5 * (1 + (raw_partial_area - min_area) / (max_area - min_area))


def test_auc_and_pauc_step_roc():
    # 10 normals -> FPR steps of 0.1. ROC: (0,0) -> (0,0.5) [anomaly 0.95] -> (0.1,0.5) [normal 0.9] -> (0.1,1).
    # AUC: anomaly 0.95 beats 10 normals, anomaly 0.5 beats 9 -> 19/20.
    # Raw area over FPR [0, 0.1] = 0.1 * 0.5 = 0.05 -> McClish 0.5 * (1 + 0.045 / 0.095) = 14/19.
    normals = [0.9, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01]
    anomalies = [0.95, 0.5]
    labels = [0] * 10 + [1] * 2
    auc, pauc = auc_pauc(labels, normals + anomalies)
    assert auc == pytest.approx(19 / 20)
    assert pauc == pytest.approx(14 / 19)
    assert pauc == pytest.approx(_mcclish(0.05))


def test_pauc_interpolates_inside_the_fpr_window():
    # 5 normals -> FPR steps of 0.2. A tie at 0.9 makes the ROC a diagonal (0,0) -> (0.2,0.5), so TPR(0.1) = 0.25
    # and the raw area over [0, 0.1] is 0.5 * 0.1 * 0.25 = 0.0125 -> McClish 41/76.
    # AUC: anomaly 0.9 ties one normal and beats 4 (4.5), anomaly 0.1 beats one (1) -> 5.5/10.
    normals = [0.9, 0.5, 0.4, 0.3, 0.05]
    anomalies = [0.9, 0.1]
    auc, pauc = auc_pauc([0] * 5 + [1] * 2, normals + anomalies)
    assert auc == pytest.approx(0.55)
    assert pauc == pytest.approx(41 / 76)
    assert pauc == pytest.approx(_mcclish(0.0125))


def test_unknown_labels_are_ignored():
    labels = [0, 0, 1, 1, -1, -1]
    scores = [0.1, 0.2, 0.8, 0.9, 100.0, -100.0]
    assert auc_pauc(labels, scores) == (1.0, 1.0)


def test_missing_class_gives_nan_with_reason():
    with pytest.warns(UndefinedMetricWarning, match="no anomalous clips"):
        auc, pauc = auc_pauc([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(auc) and math.isnan(pauc)
    assert undefined_reason([1, 1]) == "no normal clips (only 2 anomalous)"
    assert undefined_reason([-1, -1]) == "no labelled clips"
    assert undefined_reason([0, 1]) is None


def test_per_id_mean_is_not_pooled():
    # Each id separates perfectly, but id 02's scores are all higher than id 00's.
    # Pooled: anomalies 2 and 3 beat only 2 of 4 normals, 12 and 13 beat all 4 -> 12/16.
    machine_ids = ["00"] * 4 + ["02"] * 4
    labels = [0, 0, 1, 1] * 2
    scores = [0, 1, 2, 3, 10, 11, 12, 13]
    metrics = per_id_metrics(machine_ids, labels, scores)
    assert metrics["per_id"]["00"] == {"auc": 1.0, "pauc": 1.0, "num_normal": 2, "num_anomaly": 2}
    assert metrics["per_id"]["02"]["auc"] == 1.0
    assert metrics["mean"] == {"auc": 1.0, "pauc": 1.0}
    assert pooled_auc(labels, scores) == pytest.approx(0.75)


def test_per_id_mean_is_arithmetic_mean_of_ids():
    # id 00: AUC 1; id 02: anomaly 1 beats one of two normals (0.5) and anomaly 3 beats both (1) -> 0.75.
    metrics = per_id_metrics(["00"] * 4 + ["02"] * 4, [0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 2, 3, 0, 2, 1, 3])
    assert metrics["per_id"]["02"]["auc"] == pytest.approx(0.75)
    assert metrics["mean"]["auc"] == pytest.approx((1.0 + 0.75) / 2)
    assert list(metrics["per_id"]) == ["00", "02"]


def test_per_id_with_a_missing_class_does_not_crash():
    metrics = per_id_metrics(["00"] * 4 + ["02"] * 2, [0, 0, 1, 1, 0, 0], [0, 1, 2, 3, 5, 6])
    assert math.isnan(metrics["per_id"]["02"]["auc"]) and math.isnan(metrics["per_id"]["02"]["pauc"])
    assert metrics["per_id"]["02"]["num_anomaly"] == 0
    assert metrics["mean"]["auc"] == 1.0  # an undefined id is left out of the mean
    all_unknown = per_id_metrics(["00", "00"], [-1, -1], [0.1, 0.2])
    assert math.isnan(all_unknown["mean"]["auc"])


def test_classification_metrics_by_hand():
    # Threshold 0.65 calls 0.7 and 0.8 anomalous: TP 2, FP 0, FN 1 (0.4), TN 4.
    labels = [0, 0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.4]
    metrics = classification_metrics(labels, scores, 0.65)
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (2, 0, 4, 1)
    assert metrics["accuracy"] == pytest.approx(6 / 7)
    assert metrics["precision_anomaly"] == pytest.approx(1.0)
    assert metrics["recall_anomaly"] == pytest.approx(2 / 3)
    assert metrics["f1_anomaly"] == pytest.approx(0.8)
    assert metrics["precision_normal"] == pytest.approx(4 / 5)
    assert metrics["recall_normal"] == pytest.approx(1.0)
    assert metrics["f1_normal"] == pytest.approx(8 / 9)


def test_score_equal_to_threshold_is_normal():
    metrics = classification_metrics([0, 1], [0.5, 0.5], 0.5)
    assert (metrics["tp"], metrics["tn"], metrics["fn"]) == (0, 1, 1)


def test_classification_zero_division_gives_zero():
    # Nothing called anomalous: anomaly precision is 0/0 -> 0.0, and so is its F1.
    metrics = classification_metrics([0, 0, 1], [0.1, 0.2, 0.3], 10.0)
    assert metrics["precision_anomaly"] == 0.0 and metrics["recall_anomaly"] == 0.0 and metrics["f1_anomaly"] == 0.0
    assert metrics["precision_normal"] == pytest.approx(2 / 3) and metrics["recall_normal"] == 1.0


def test_classification_without_labelled_clips_is_nan():
    metrics = classification_metrics([-1, -1], [0.1, 0.9], 0.5)
    assert math.isnan(metrics["accuracy"]) and math.isnan(metrics["f1_anomaly"])
    assert metrics["tp"] + metrics["fp"] + metrics["tn"] + metrics["fn"] == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels must be"):
        auc_pauc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN or infinite"):
        auc_pauc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        auc_pauc([0, 1], [0.1, 0.2, 0.3])
