"""The output contract of every method: one results dict, and the files written into a run directory.

:func:`evaluate_run` turns test scores into the results dict; :func:`write_run_outputs` writes
``results.json``, ``scores.csv``, ``report.md``, ``roc.png`` and ``score_hist.png``; :func:`format_table`
renders the results for the terminal; :func:`load_results` reads ``results.json`` back.

With E ensemble members (one per seed) the headline ``per_id``/``mean`` figures are the mean over members
of each member's metrics, ``std`` is their spread, and ``ensemble`` scores the mean of the members' scores,
which is also what the threshold table is computed on (that is the score a deployed detector would use).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from asd_jax.evaluate.metrics import (
    ANOMALY,
    DEFAULT_MAX_FPR,
    NORMAL,
    UNKNOWN,
    classification_metrics,
    per_id_metrics,
    pooled_auc,
    undefined_reason,
)
from asd_jax.evaluate.thresholds import Threshold
from asd_jax.rundir import RunDir

RESULTS_FILE, SCORES_FILE, REPORT_FILE = RunDir.RESULTS, RunDir.SCORES, RunDir.REPORT
ROC_FILE, HIST_FILE = RunDir.ROC_PLOT, RunDir.HIST_PLOT
CONTRACT_KEYS = (
    "method", "machine_type", "data_dir", "num_seeds", "per_id", "mean", "std", "ensemble", "pooled",
    "members", "members_diverged", "threshold", "test_tuned", "skipped_files", "notes",
)
_CLASSIFICATION_KEYS = (
    "accuracy", "precision_normal", "recall_normal", "f1_normal",
    "precision_anomaly", "recall_anomaly", "f1_anomaly",
)


def _member_matrix(member_scores: np.ndarray | Sequence, num_clips: int) -> np.ndarray:
    matrix = np.asarray(member_scores, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] != num_clips:
        raise ValueError(f"member_scores must have shape [E >= 1, {num_clips}]; got {np.shape(member_scores)}")
    return matrix


def _names(member_names: Sequence[str] | None, num_members: int) -> list[str]:
    names = [f"seed{i}" for i in range(num_members)] if member_names is None else [str(n) for n in member_names]
    if len(names) != num_members:
        raise ValueError(f"got {len(names)} member names for {num_members} ensemble members")
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be distinct; got {names}")
    return names


def _check_clips(files: Sequence[str], machine_ids: Sequence[str], labels: np.ndarray | Sequence[int]) -> int:
    num_clips = len(files)
    if num_clips == 0:
        raise ValueError("no test clips to evaluate")
    if len(machine_ids) != num_clips or len(labels) != num_clips:
        raise ValueError(
            f"files, machine_ids and labels differ in length: {num_clips}, {len(machine_ids)}, {len(labels)}"
        )
    return num_clips


def _skipped(skipped_files: Sequence[dict] | Sequence[str]) -> list[dict]:
    return [dict(entry) if isinstance(entry, dict) else {"file": str(entry)} for entry in skipped_files]


def evaluate_run(
    *,
    method: str,
    machine_type: str,
    data_dir: str,
    files: list[str],
    machine_ids: list[str],
    labels: np.ndarray,
    member_scores: np.ndarray,
    threshold: Threshold,
    skipped_files: list[dict] | list[str] = (),
    extra: dict | None = None,
    member_names: list[str] | None = None,
    excluded: Sequence[str] = (),
) -> dict:
    """Score one run: per-id AUC/pAUC per member and their mean/std, the ensemble, and the threshold table.

    Members named in ``excluded`` (diverged) keep their own entry in ``members`` (marked ``"diverged": true``) but
    are left out of the headline ``per_id``/``mean``/``std``, the ensemble score and the pooled AUC.

    ``member_scores`` is ``[E, N]`` (one row per ensemble member; a 1-D array counts as E = 1). Unknown
    labels (-1) are left out of every metric. ``pooled`` (one AUC over all ids' clips) is, like ``mean``, the
    mean over members; ``members`` holds each member's own ``per_id`` and ``mean``. ``extra`` keys are added
    at top level and may not reuse a contract key. NaN stays NaN here; :func:`write_run_outputs` writes it as JSON null.
    """
    num_clips = _check_clips(files, machine_ids, labels)
    labels = np.asarray(labels).astype(int)
    matrix = _member_matrix(member_scores, num_clips)
    names = _names(member_names, matrix.shape[0])
    for name, row in zip(names, matrix):
        if name not in excluded and not np.all(np.isfinite(row)):
            raise ValueError(f"member '{name}' has {int(np.sum(~np.isfinite(row)))} NaN or infinite scores")
    extra = dict(extra or {})
    clashes = sorted(set(extra) & set(CONTRACT_KEYS))
    if clashes:
        raise ValueError(f"extra keys clash with the results contract: {clashes}")

    unknown = sorted(set(excluded) - set(names))
    if unknown:
        raise ValueError(f"excluded members {unknown} are not among {names}")
    all_members = [
        {"name": name, **(per_id_metrics(machine_ids, labels, row, DEFAULT_MAX_FPR) if np.all(np.isfinite(row))
                          else {"per_id": None, "mean": None, "note": "non-finite scores"}),
         **({"diverged": True} if name in excluded else {})} for name, row in zip(names, matrix)
    ]
    kept = [index for index, name in enumerate(names) if name not in excluded]
    if not kept:
        raise ValueError("every member diverged: there is no healthy member to evaluate")
    members = [all_members[index] for index in kept]
    matrix = matrix[kept]
    ids = list(members[0]["per_id"])
    per_id = {
        machine_id: {
            "auc": float(np.mean([m["per_id"][machine_id]["auc"] for m in members])),
            "pauc": float(np.mean([m["per_id"][machine_id]["pauc"] for m in members])),
            "num_normal": members[0]["per_id"][machine_id]["num_normal"],
            "num_anomaly": members[0]["per_id"][machine_id]["num_anomaly"],
        }
        for machine_id in ids
    }
    member_means = {key: np.array([m["mean"][key] for m in members]) for key in ("auc", "pauc")}
    ensemble_score = matrix.mean(axis=0)
    pooled = math.nan
    if undefined_reason(labels) is None:
        pooled = float(np.mean([pooled_auc(labels, row) for row in matrix]))
    table = classification_metrics(labels, ensemble_score, threshold.value)

    id_array = np.asarray([str(i) for i in machine_ids])
    notes = []
    for machine_id in ids:
        reason = undefined_reason(labels[id_array == machine_id])
        if reason is not None:
            notes.append(f"id {machine_id}: AUC/pAUC undefined ({reason})")
    num_unknown = int(np.sum(labels == UNKNOWN))
    if num_unknown:
        notes.append(f"{num_unknown} clips with unknown label (-1) are left out of every metric")

    results = {
        "method": method,
        "machine_type": machine_type,
        "data_dir": data_dir,
        "num_seeds": int(matrix.shape[0]),
        "members_diverged": list(excluded),
        "per_id": per_id,
        "mean": {key: float(np.mean(values)) for key, values in member_means.items()},
        "std": {key: float(np.std(values)) for key, values in member_means.items()},
        "ensemble": per_id_metrics(machine_ids, labels, ensemble_score, DEFAULT_MAX_FPR),
        "pooled": {"auc": pooled},
        "members": all_members,
        "threshold": {
            "policy": threshold.policy,
            "value": float(threshold.value),
            "test_tuned": bool(threshold.test_tuned),
            "quantile": threshold.quantile,
            **{key: table[key] for key in _CLASSIFICATION_KEYS},
            "confusion": {key: table[key] for key in ("tp", "fp", "tn", "fn")},
        },
        "test_tuned": bool(threshold.test_tuned),
        "skipped_files": _skipped(skipped_files),
        "notes": notes,
    }
    results.update(extra)
    return results


def _jsonable(value):
    """Plain JSON types, with NaN and infinities as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def load_results(run_dir: str) -> dict:
    """Read ``results.json`` back (undefined metrics come back as None)."""
    with open(os.path.join(run_dir, RESULTS_FILE)) as handle:
        return json.load(handle)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _num_seeds(results: dict) -> int:
    return int(results.get("num_seeds", 1))


def describe_members(results: dict) -> str:
    """'3 seeds', or '2 settings x 1 seed' when the members differ in more than their seed."""
    members = results.get("members", [])
    settings = len(results.get("settings") or [None])
    seeds = len({m.get("seed", m["name"]) for m in members}) if members else _num_seeds(results)
    text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    return f"{settings} settings x {text}" if settings > 1 else text


def _with_std(results: dict, value, std) -> str:
    if _num_seeds(results) > 1 and value is not None and std is not None and not math.isnan(value):
        return f"{_fmt(value)} ± {_fmt(std)}"
    return _fmt(value)


def _id_std(results: dict, machine_id: str, key: str) -> float | None:
    values = [m["per_id"][machine_id][key] for m in results.get("members", []) if not m.get("diverged")]
    if not values or any(v is None for v in values):
        return None
    return float(np.std(values))


def _summary_rows(results: dict) -> list[list[str]]:
    """Rows of the AUC table: one per id, the mean over ids, then the ensemble-mean score and pooled rows."""
    rows = []
    for machine_id, metric in results["per_id"].items():
        rows.append([
            machine_id,
            _with_std(results, metric["auc"], _id_std(results, machine_id, "auc")),
            _with_std(results, metric["pauc"], _id_std(results, machine_id, "pauc")),
            str(metric["num_normal"]),
            str(metric["num_anomaly"]),
        ])
    num_normal = sum(m["num_normal"] for m in results["per_id"].values())
    num_anomaly = sum(m["num_anomaly"] for m in results["per_id"].values())
    std = results.get("std", {})
    rows.append([
        "mean over ids",
        _with_std(results, results["mean"]["auc"], std.get("auc")),
        _with_std(results, results["mean"]["pauc"], std.get("pauc")),
        str(num_normal),
        str(num_anomaly),
    ])
    return rows


def _mean_pm(mean, std) -> str:
    return _fmt(mean) + (f" ± {_fmt(std)}" if std is not None else "")


def _setting_rows(settings: list[dict]) -> list[list[str]]:
    return [[s["name"], _mean_pm(s["auc_mean"], s["auc_std"]), _mean_pm(s["pauc_mean"], s["pauc_std"]),
             _fmt(s["validation_error_mean"], 6)] for s in settings]


def _class_rows(threshold: dict) -> list[list[str]]:
    return [
        ["Normal", *(_fmt(threshold[f"{m}_normal"], 2) for m in ("precision", "recall", "f1"))],
        ["Anomalous", *(_fmt(threshold[f"{m}_anomaly"], 2) for m in ("precision", "recall", "f1"))],
    ]


def _threshold_line(threshold: dict) -> str:
    policy = threshold["policy"]
    if threshold.get("quantile") is not None:
        policy += f" (q={threshold['quantile']:g})"
    line = f"threshold: {policy} = {_fmt(threshold['value'], 6)}"
    if threshold.get("test_tuned"):
        line += "  ** TEST-TUNED: chosen on the test labels, not a fair estimate **"
    return line


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def format_table(results: dict) -> str:
    """A plain-text summary for the terminal: AUC/pAUC per id, mean (± std over seeds), and the class table."""
    seeds = _num_seeds(results)
    lines = [f"{results['method']} | {results['machine_type']} | {describe_members(results)}"]
    if results.get("members_diverged"):
        lines.append(f"DIVERGED (left out of the ensemble, threshold and figures): "
                     f"{', '.join(results['members_diverged'])}")
    rows = [["id", "AUC", "pAUC", "#normal", "#anomaly"], *_summary_rows(results)]
    if seeds > 1:
        ensemble = results["ensemble"]["mean"]
        rows.append(["ensemble mean score", _fmt(ensemble["auc"]), _fmt(ensemble["pauc"]), "", ""])
    lines.append(_aligned(rows))
    pooled_note = " (mean over members)" if seeds > 1 else ""
    lines.append(f"pooled AUC over all ids{pooled_note}: {_fmt(results['pooled']['auc'])}")
    if len(results.get("settings") or []) > 1:
        lines += ["", "per setting (mean ± std over its seeds; held-out normal error is label-free):"]
        lines.append(_aligned([["setting", "AUC", "pAUC", "held-out error"], *_setting_rows(results["settings"])]))
    lines.append("")
    lines.append("| Class | Precision | Recall | F1-score |")
    lines.extend(f"| {' | '.join(row)} |" for row in _class_rows(results["threshold"]))
    lines.append(f"accuracy: {_fmt(results['threshold']['accuracy'], 2)}")
    lines.append(_threshold_line(results["threshold"]))
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        f"| {' | '.join(header)} |",
        f"|{'|'.join('---' for _ in header)}|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]


def _report_markdown(results: dict) -> str:
    seeds = _num_seeds(results)
    threshold = results["threshold"]
    lines = [f"# {results['method']} on {results['machine_type']}", ""]
    if threshold.get("test_tuned"):
        lines += ["> **TEST-TUNED THRESHOLD**: the threshold was chosen on the test labels, so the classification "
                  "figures below are optimistic and not a fair estimate.", ""]
    lines += [f"- data: `{results['data_dir']}`", f"- ensemble members: {describe_members(results)}"]
    if results.get("members"):
        lines[-1] += f" ({', '.join(m['name'] for m in results['members'])})"
    if results.get("members_diverged"):
        lines.append(f"- **diverged, left out of the ensemble score, the threshold and the figures above the member "
                     f"table**: {', '.join(results['members_diverged'])} (their own scores stay in scores.csv)")
    extras = {k: v for k, v in results.items() if k not in CONTRACT_KEYS}
    for key, value in extras.items():
        shown = value if isinstance(value, (str, int, float, bool)) or value is None else "see results.json"
        lines.append(f"- {key}: {shown}")

    auc_note = " (mean ± std over seeds)" if seeds > 1 else ""
    lines += ["", f"## AUC / pAUC per machine id{auc_note}", ""]
    rows = _summary_rows(results)
    ensemble = results["ensemble"]["mean"]
    rows.append(["ensemble mean score", _fmt(ensemble["auc"]), _fmt(ensemble["pauc"]), "", ""])
    pooled_label = "pooled over ids (mean over seeds)" if seeds > 1 else "pooled over ids"
    rows.append([pooled_label, _fmt(results["pooled"]["auc"]), "", "", ""])
    lines += _markdown_table(["Machine ID", "AUC", "pAUC", "#normal", "#anomaly"], rows)
    lines += ["", f"pAUC: McClish-standardised, FPR in [0, {DEFAULT_MAX_FPR}]. The mean is over ids (as DCASE); "
              "the pooled AUC ranks all ids' clips together."]
    if len(results.get("settings") or []) > 1:
        lines += ["", "## Per setting (mean ± std over its seeds)", ""]
        lines += _markdown_table(["Setting", "AUC", "pAUC", "Held-out normal error"], _setting_rows(results["settings"]))

    lines += ["", "## Classification at the threshold (ensemble mean score)", ""]
    lines += _markdown_table(["Class", "Precision", "Recall", "F1-score"], _class_rows(threshold))
    confusion = threshold.get("confusion", {})
    lines += ["", f"- accuracy: {_fmt(threshold['accuracy'], 2)}", f"- {_threshold_line(threshold)}"]
    if confusion:
        lines.append("- confusion (anomaly positive): " + ", ".join(f"{k}={v}" for k, v in confusion.items()))

    skipped = results.get("skipped_files", [])
    lines += ["", f"## Skipped files ({len(skipped)})", ""]
    shown_limit = 50
    for entry in skipped[:shown_limit]:
        reason = entry.get("reason") or entry.get("error")
        lines.append(f"- `{entry.get('file', entry)}`" + (f": {reason}" if reason else ""))
    if len(skipped) > shown_limit:
        lines.append(f"- ... and {len(skipped) - shown_limit} more (see results.json)")
    if not skipped:
        lines.append("none")
    if results.get("notes"):
        lines += ["", "## Notes", "", *(f"- {note}" for note in results["notes"])]
    lines += ["", "## Plots", "", f"![ROC per machine id]({ROC_FILE})", "", f"![Score histograms]({HIST_FILE})", ""]
    return "\n".join(lines)


def _save(figure: Figure, path: str) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)


def _plot_roc(path: str, machine_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
    figure = Figure(figsize=(6, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.axvspan(0.0, DEFAULT_MAX_FPR, color="0.9", label=f"pAUC region (FPR ≤ {DEFAULT_MAX_FPR})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="0.5", label="chance")
    for machine_id in sorted(set(machine_ids.tolist())):
        in_id = (machine_ids == machine_id) & (labels != UNKNOWN)
        reason = undefined_reason(labels[machine_ids == machine_id])
        if reason is not None:
            axes.plot([], [], " ", label=f"id {machine_id}: no ROC ({reason})")
            continue
        fpr, tpr, _ = roc_curve(labels[in_id], scores[in_id])
        axes.plot(fpr, tpr, label=f"id {machine_id} (AUC {auc(fpr, tpr):.3f})")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
             title="ROC per machine id (ensemble mean score)")
    axes.legend(loc="lower right", fontsize="small")
    _save(figure, path)


def _plot_histograms(path: str, machine_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold) -> None:
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
        if threshold is not None and math.isfinite(threshold):
            axes.axvline(threshold, color="black", linestyle="--", label="threshold")
        axes.set(title=f"id {machine_id}", xlabel="anomaly score", ylabel="clips")
        axes.legend(fontsize="small")
    _save(figure, path)


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
    _save(figure, path)
    return path


def write_run_outputs(
    run: RunDir | str,
    results: dict,
    *,
    files: list[str],
    machine_ids: list[str],
    labels: np.ndarray,
    member_scores: np.ndarray,
    member_names: list[str] | None = None,
    validation: tuple[list[str], list[str], np.ndarray] | None = None,
) -> None:
    """Write a run's results, once: results.json, threshold.json, scores.csv, validation_scores.csv (when
    ``validation`` = (files, machine ids, member scores [E, n]) of the held-out normals is given), report.md and the
    plots (roc.png, score_hist.png, train_curve.png when there is a curve).

    ``scores.csv`` has ``file,machine_id,label,score`` (score = ensemble mean) and, when E > 1, one
    ``score_<name>`` column per member; names default to those in ``results["members"]``.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    num_clips = _check_clips(files, machine_ids, labels)
    labels = np.asarray(labels).astype(int)
    matrix = _member_matrix(member_scores, num_clips)
    if member_names is None and len(results.get("members", [])) == matrix.shape[0]:
        member_names = [m["name"] for m in results["members"]]
    names = _names(member_names, matrix.shape[0])
    diverged = {m["name"] for m in results.get("members", []) if m.get("diverged")}
    healthy = np.array([name not in diverged for name in names])
    ensemble_score = matrix[healthy].mean(axis=0)
    run.create()

    run.write_json(RunDir.RESULTS, _jsonable(results))
    threshold = results["threshold"]
    run.write_json(RunDir.THRESHOLD, {key: threshold[key] for key in ("policy", "value", "test_tuned", "quantile")})
    _write_scores(run.file(RunDir.SCORES), files, machine_ids, labels, matrix, names, healthy)
    if validation is not None:
        validation_files, validation_ids, validation_scores = validation
        validation_matrix = np.asarray(validation_scores, np.float64).reshape(len(names), len(validation_files))
        _write_scores(run.file(RunDir.VALIDATION_SCORES), validation_files, validation_ids,
                      np.zeros(len(validation_files), int), validation_matrix, names, healthy)
    with open(run.file(RunDir.REPORT), "w") as handle:
        handle.write(_report_markdown(_jsonable(results)))

    id_array = np.asarray([str(i) for i in machine_ids])
    _plot_roc(run.file(RunDir.ROC_PLOT), id_array, labels, ensemble_score)
    _plot_histograms(run.file(RunDir.HIST_PLOT), id_array, labels, ensemble_score, threshold["value"])
    plot_training_curve(run.path)


def _write_scores(path: str, files, machine_ids, labels, matrix: np.ndarray, names: list[str],
                  healthy: np.ndarray) -> None:
    """``score`` is the mean over the healthy members; every member keeps its own column (diverged ones too)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        member_columns = [f"score_{name}" for name in names] if matrix.shape[0] > 1 else []
        writer.writerow(["file", "machine_id", "label", "score", *member_columns])
        ensemble_score = matrix[healthy].mean(axis=0)
        for index in range(len(files)):
            member_values = [repr(float(v)) for v in matrix[:, index]] if member_columns else []
            writer.writerow([files[index], str(machine_ids[index]), int(labels[index]),
                             repr(float(ensemble_score[index])), *member_values])
