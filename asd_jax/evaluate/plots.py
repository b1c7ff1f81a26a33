"""Plots of a run (ROC curves and score histograms per unit, the training curve) and of a sweep."""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from asd_jax.evaluate.metrics import ANOMALY, DEFAULT_MAX_FPR, NORMAL, UNKNOWN, undefined_reason
from asd_jax.evaluate.tables import format_value
from asd_jax.rundir import RunDir


def save(figure: Figure, path: str) -> None:
    """Render ``figure`` to a PNG at ``path`` (Agg: no display needed)."""
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)


def plot_roc(path: str, machine_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray, unit: str = "id") -> None:
    figure = Figure(figsize=(6, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.axvspan(0.0, DEFAULT_MAX_FPR, color="0.9", label=f"pAUC region (FPR ≤ {DEFAULT_MAX_FPR})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="0.5", label="chance")
    for machine_id in sorted(set(machine_ids.tolist())):
        in_id = (machine_ids == machine_id) & (labels != UNKNOWN)
        reason = undefined_reason(labels[machine_ids == machine_id])
        if reason is not None:
            axes.plot([], [], " ", label=f"{unit} {machine_id}: no ROC ({reason})")
            continue
        fpr, tpr, _ = roc_curve(labels[in_id], scores[in_id])
        axes.plot(fpr, tpr, label=f"{unit} {machine_id} (AUC {auc(fpr, tpr):.3f})")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
             title=f"ROC per {'machine id' if unit == 'id' else unit} (ensemble mean score)")
    axes.legend(loc="lower right", fontsize="small")
    save(figure, path)


def plot_histograms(path: str, machine_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                     threshold: dict, unit: str = "id") -> None:
    """Score histograms per unit with the threshold(s) its clips are judged by (per domain where it has one)."""
    ids = sorted(set(machine_ids.tolist()))
    columns = min(len(ids), 3)
    rows = math.ceil(len(ids) / columns)
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    for index, machine_id in enumerate(ids):
        axes = figure.add_subplot(rows, columns, index + 1)
        in_id = machine_ids == machine_id
        low, high = float(scores[in_id].min()), float(scores[in_id].max())
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, min(30, max(5, int(in_id.sum()) // 2)) + 1)
        classes = ((NORMAL, "normal", "tab:blue"), (ANOMALY, "anomaly", "tab:red"), (UNKNOWN, "unknown", "tab:gray"))
        for label, name, color in classes:
            selected = scores[in_id & (labels == label)]
            if selected.size:
                axes.hist(selected, bins=edges, alpha=0.5, color=color, label=f"{name} ({selected.size})")
        for value, name, style in _unit_lines(threshold, machine_id):
            if value is not None and math.isfinite(value):
                axes.axvline(value, color="black", linestyle=style, label=name)
        axes.set(title=f"{unit} {machine_id}", xlabel="anomaly score", ylabel="clips")
        axes.legend(fontsize="small")
    save(figure, path)


def _unit_lines(threshold: dict, unit: str) -> list[tuple[float | None, str, str]]:
    """(value, legend, line style) of the thresholds that judge ``unit``'s clips."""
    entry = threshold.get("units", {}).get(unit) if threshold.get("per_unit") else None
    if entry is None:
        return [(threshold["value"], "threshold", "--")]
    domains = entry.get("domains") or {}
    lines = [(v["value"], f"threshold ({d})", style) for (d, v), style in zip(domains.items(), ("-.", ":"))]
    if len(domains) < 2:
        lines.append((entry["value"], "threshold" + (" (global)" if entry.get("from") == "global" else ""), "--"))
    return lines


def plot_training_curve(run_dir: str) -> str | None:
    """``train_curve.png`` from ``train_curve.jsonl``: training loss per epoch, one line per member, and beside it
    the held-out normal error where the curve has it; None if there is no curve."""
    records = RunDir(run_dir).read_curve()
    if not records:
        return None
    names = records[-1]["members"]
    validated = [r for r in records if "validation_error" in r]
    panels = [("loss", records, "training loss (mean window error)")]
    if validated:
        panels.append(("validation_error", validated, "held-out normal error"))
    figure = Figure(figsize=(6 * len(panels), 4), layout="constrained")
    for index, (key, rows, label) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        values = np.array([r[key] for r in rows], dtype=float)  # [epochs, members]
        for member, name in enumerate(names):
            axes.plot([r["epoch"] for r in rows], values[:, member], marker="o", markersize=3, label=name)
        axes.set(xlabel="epoch", ylabel=label, title=label, yscale="log" if np.all(values[np.isfinite(values)] > 0)
                 else "linear")
        if len(names) <= 10:
            axes.legend(fontsize="small")
    path = os.path.join(run_dir, RunDir.CURVE_PLOT)
    save(figure, path)
    return path


def plot_sweep(path: str, summary: dict, axes_paths: list[str]) -> None:
    """Mean AUC ± std over seeds of every setting against each swept axis; one colour per setting throughout."""
    if not axes_paths:
        return
    settings = summary["settings"]
    colours = {s["name"]: f"C{index % 10}" for index, s in enumerate(settings)}
    figure = Figure(figsize=(4.5 * len(axes_paths) + 2.5, 3.8), layout="constrained")
    for index, path_name in enumerate(axes_paths):
        axes = figure.add_subplot(1, len(axes_paths), index + 1)
        raw = list(dict.fromkeys(s["setting"].get(path_name, "default") for s in settings))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            raw.sort()
        values = [format_value(v) for v in raw]
        placed = [0] * len(values)
        counts = [sum(format_value(s["setting"].get(path_name, "default")) == v for s in settings)
                  for v in values]
        for s in settings:
            x = values.index(format_value(s["setting"].get(path_name, "default")))
            offset = (placed[x] - (counts[x] - 1) / 2) * 0.08  # settings that share this value, side by side
            placed[x] += 1
            if s["auc_mean"] is not None:
                axes.errorbar(x + offset, s["auc_mean"], yerr=s["auc_std"] or 0.0, fmt="o", capsize=3,
                              color=colours[s["name"]], label=s["name"] if index == 0 else None)
        axes.set_xticks(range(len(values)), values)
        axes.set_xlim(-0.5, len(values) - 0.5)
        axes.set(xlabel=path_name, ylabel="mean AUC over ids (± std over seeds)", title=path_name)
        axes.grid(alpha=0.3)
    if len(settings) <= 20:
        figure.legend(loc="outside right center", fontsize="small", title="setting")
    save(figure, path)
