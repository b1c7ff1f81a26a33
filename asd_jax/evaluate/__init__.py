"""Evaluation shared by every method: DCASE metrics, decision thresholds, the results dict, tables, plots and the
run-directory files.

Pure numpy/scipy/sklearn/matplotlib (no JAX), so results can be recomputed from ``scores.csv`` anywhere.
"""

from asd_jax.evaluate.metrics import (
    UndefinedMetricWarning,
    auc_pauc,
    classification_metrics,
    per_id_metrics,
    pooled_auc,
    undefined_reason,
)
from asd_jax.evaluate.report import write_run_outputs
from asd_jax.evaluate.results import evaluate_run, load_results
from asd_jax.evaluate.tables import format_table
from asd_jax.evaluate.thresholds import POLICIES, Threshold, choose_threshold

__all__ = [
    "POLICIES",
    "Threshold",
    "UndefinedMetricWarning",
    "auc_pauc",
    "choose_threshold",
    "classification_metrics",
    "evaluate_run",
    "format_table",
    "load_results",
    "per_id_metrics",
    "pooled_auc",
    "undefined_reason",
    "write_run_outputs",
]
