"""The write-up's comparison, honest and test-tuned side by side, from finished run directories.

For each run: mean per-id AUC/pAUC (DCASE), the pooled AUC (what the write-up appears to report), and the
precision/recall/F1 of the anomalous class at the run's own threshold (chosen without test labels) and at the
test-tuned threshold that maximises F1 on the test labels (the write-up's way, labelled TEST-TUNED).

  python experiments/writeup_table.py runs/lstm_slider runs/gru_ae_slider runs/dense_ae_slider runs/logmel_ocsvm_slider
"""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np

from asd_jax.evaluate.metrics import classification_metrics
from asd_jax.evaluate.thresholds import oracle_f1_threshold

WRITEUP = {"lstm": "AUC .9406, F1 .92 (test-tuned, pooled)", "gru_ae": "AUC .892, F1 .87 (test-tuned, pooled)",
           "dense_ae": "DCASE baseline on real slider: mean AUC .8499, pAUC .6693"}


def row(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "results.json")) as handle:
        results = json.load(handle)
    with open(os.path.join(run_dir, "scores.csv")) as handle:
        table = list(csv.DictReader(handle))
    labels = np.array([int(r["label"]) for r in table])
    scores = np.array([float(r["score"]) for r in table])
    tuned = classification_metrics(labels, scores, oracle_f1_threshold(labels, scores))
    honest = results["threshold"]
    return {"run": run_dir, "method": results["method"], "seeds": results["num_seeds"],
            "auc": results["mean"]["auc"], "pauc": results["mean"]["pauc"],
            "auc_std": results.get("std", {}).get("auc", 0.0), "pooled_auc": results["pooled"]["auc"],
            "f1_anomaly": honest["f1_anomaly"], "policy": honest["policy"],
            "f1_anomaly_tuned": tuned["f1_anomaly"], "writeup": WRITEUP.get(results["method"], "")}


def main(run_dirs: list[str]) -> None:
    rows = [row(d) for d in run_dirs]
    print("| method | seeds | mean AUC (per id) | mean pAUC | pooled AUC | anomaly F1, honest threshold | "
          "anomaly F1, TEST-TUNED threshold | write-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spread = f" ± {r['auc_std']:.4f}" if r["seeds"] > 1 else ""
        print(f"| {r['method']} | {r['seeds']} | {r['auc']:.4f}{spread} | {r['pauc']:.4f} | {r['pooled_auc']:.4f} | "
              f"{r['f1_anomaly']:.2f} ({r['policy']}) | {r['f1_anomaly_tuned']:.2f} | {r['writeup']} |")


if __name__ == "__main__":
    main(sys.argv[1:] or sys.exit(__doc__))
