"""Detection metrics computed the way DCASE 2020 Task 2 computes them.

Scores: higher means more anomalous. Labels: 0 normal, 1 anomaly, -1 unknown (an unlabelled evaluation
clip); unknown clips are left out of every metric here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

NORMAL, ANOMALY, UNKNOWN = 0, 1, -1
DEFAULT_MAX_FPR = 0.1


class UndefinedMetricWarning(RuntimeWarning):
    """A metric came out NaN because the clips it was asked about cannot define it (e.g. one class only)."""


def _as_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).astype(int).ravel()
    bad = set(np.unique(labels).tolist()) - {NORMAL, ANOMALY, UNKNOWN}
    if bad:
        raise ValueError(f"labels must be 0 (normal), 1 (anomaly) or -1 (unknown); got {sorted(bad)}")
    return labels


def _as_scores(scores: Sequence[float] | np.ndarray, num_clips: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.shape[0] != num_clips:
        raise ValueError(f"got {scores.shape[0]} scores for {num_clips} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{int(np.sum(~np.isfinite(scores)))} scores are NaN or infinite")
    return scores


def undefined_reason(labels: Sequence[int] | np.ndarray) -> str | None:
    """Why AUC cannot be computed for these labels (None when it can): it needs both classes labelled."""
    labels = _as_labels(labels)
    num_normal = int(np.sum(labels == NORMAL))
    num_anomaly = int(np.sum(labels == ANOMALY))
    if num_normal == 0 and num_anomaly == 0:
        return "no labelled clips"
    if num_anomaly == 0:
        return f"no anomalous clips (only {num_normal} normal)"
    if num_normal == 0:
        return f"no normal clips (only {num_anomaly} anomalous)"
    return None


def auc_pauc(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, max_fpr: float = DEFAULT_MAX_FPR
) -> tuple[float, float]:
    """AUC and pAUC exactly as the DCASE 2020 scripts: ``roc_auc_score(y, s)`` and ``roc_auc_score(y, s, max_fpr)``.

    The pAUC is sklearn's McClish-standardised partial AUC over FPR in [0, max_fpr]. Unknown (-1) clips are
    dropped. When a class is missing both values are NaN and an :class:`UndefinedMetricWarning` says why.
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores, labels.shape[0])
    reason = undefined_reason(labels)
    if reason is not None:
        warnings.warn(f"AUC/pAUC undefined: {reason}", UndefinedMetricWarning, stacklevel=2)
        return math.nan, math.nan
    known = labels != UNKNOWN
    labels, scores = labels[known], scores[known]
    return float(roc_auc_score(labels, scores)), float(roc_auc_score(labels, scores, max_fpr=max_fpr))


def _mean_defined(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def per_id_metrics(
    machine_ids: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    max_fpr: float = DEFAULT_MAX_FPR,
) -> dict:
    """AUC/pAUC per machine id and their arithmetic mean over ids (the DCASE figure; not a pooled AUC).

    Returns ``{"per_id": {id: {"auc", "pauc", "num_normal", "num_anomaly"}}, "mean": {"auc", "pauc"}}`` with
    ids sorted. An id whose AUC is undefined (NaN) is left out of the mean; the mean is NaN if every id is.
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores, labels.shape[0])
    machine_ids = np.asarray([str(i) for i in machine_ids])
    if machine_ids.shape[0] != labels.shape[0]:
        raise ValueError(f"got {machine_ids.shape[0]} machine ids for {labels.shape[0]} labels")
    per_id = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for machine_id in sorted(set(machine_ids.tolist())):
            in_id = machine_ids == machine_id
            auc, pauc = auc_pauc(labels[in_id], scores[in_id], max_fpr)
            per_id[machine_id] = {
                "auc": auc,
                "pauc": pauc,
                "num_normal": int(np.sum(labels[in_id] == NORMAL)),
                "num_anomaly": int(np.sum(labels[in_id] == ANOMALY)),
            }
    mean = {
        "auc": _mean_defined([m["auc"] for m in per_id.values()]),
        "pauc": _mean_defined([m["pauc"] for m in per_id.values()]),
    }
    return {"per_id": per_id, "mean": mean}


def pooled_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """One AUC over all labelled clips of all ids together (an extra figure, labelled "pooled" wherever shown).

    It differs from the DCASE mean over ids whenever score scales differ between ids.
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores, labels.shape[0])
    reason = undefined_reason(labels)
    if reason is not None:
        warnings.warn(f"pooled AUC undefined: {reason}", UndefinedMetricWarning, stacklevel=2)
        return math.nan
    known = labels != UNKNOWN
    return float(roc_auc_score(labels[known], scores[known]))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def classification_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float
) -> dict:
    """Accuracy and per-class precision/recall/F1 when a clip is called anomalous iff ``score > threshold``.

    Keys: ``accuracy``, ``precision_normal``, ``recall_normal``, ``f1_normal``, ``precision_anomaly``,
    ``recall_anomaly``, ``f1_anomaly`` and the confusion counts ``tp``, ``fp``, ``tn``, ``fn`` (anomaly is the
    positive class). A zero division gives 0.0 (sklearn's ``zero_division=0``); with no labelled clip at all
    every rate is NaN, since there is nothing to measure.
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores, labels.shape[0])
    known = labels != UNKNOWN
    is_anomaly = labels[known] == ANOMALY
    called_anomaly = scores[known] > threshold
    tp = int(np.sum(is_anomaly & called_anomaly))
    fp = int(np.sum(~is_anomaly & called_anomaly))
    tn = int(np.sum(~is_anomaly & ~called_anomaly))
    fn = int(np.sum(is_anomaly & ~called_anomaly))
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    rate_keys = ("accuracy", "precision_normal", "recall_normal", "f1_normal",
                 "precision_anomaly", "recall_anomaly", "f1_anomaly")
    if tp + fp + tn + fn == 0:
        return {**dict.fromkeys(rate_keys, math.nan), **counts}
    precision_anomaly, recall_anomaly = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    precision_normal, recall_normal = _ratio(tn, tn + fn), _ratio(tn, tn + fp)
    return {
        "accuracy": (tp + tn) / (tp + fp + tn + fn),
        "precision_normal": precision_normal,
        "recall_normal": recall_normal,
        "f1_normal": _f1(precision_normal, recall_normal),
        "precision_anomaly": precision_anomaly,
        "recall_anomaly": recall_anomaly,
        "f1_anomaly": _f1(precision_anomaly, recall_anomaly),
        **counts,
    }
