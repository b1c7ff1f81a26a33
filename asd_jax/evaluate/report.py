"""The output contract of every method: one results dict, and the files written into a run directory.

:func:`evaluate_run` turns test scores into the results dict; :func:`write_run_outputs` writes
``results.json``, ``threshold.json``, ``scores.csv``, ``report.md``, ``roc.png`` and ``score_hist.png``;
:func:`format_table` renders the results for the terminal; :func:`load_results` reads ``results.json`` back.
:func:`summarise_types` / :func:`write_type_summary` summarise one run per machine type (``summary.*``).

With E ensemble members (one per seed) the headline ``per_id``/``mean`` figures are the mean over members
of each member's metrics, ``std`` is their spread, and ``ensemble`` scores the mean of the members' scores,
which is also what the threshold table is computed on (that is the score a deployed detector would use).

Every run is also scored by its DCASE edition's own protocol (:mod:`asd_jax.evaluate.official`) on the
ensemble-mean score: ``protocol``, ``per_section`` (2021+: source/target AUC and pAUC per section; None for 2020),
``official_score`` (2021+: the harmonic mean; None for 2020, which has none) and ``official`` (the means and notes);
each member's own figures are in its ``members`` entry under ``official``. For 2021+ the unit of ``per_id`` is the
section (all domains pooled), which is what :attr:`asd_jax.data.dcase.Clip.machine_id` holds.
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

from asd_jax.evaluate import official
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
from asd_jax.evaluate.thresholds import Threshold, ThresholdSet
from asd_jax.rundir import RunDir

RESULTS_FILE, SCORES_FILE, REPORT_FILE = RunDir.RESULTS, RunDir.SCORES, RunDir.REPORT
ROC_FILE, HIST_FILE = RunDir.ROC_PLOT, RunDir.HIST_PLOT
CONTRACT_KEYS = (
    "method", "machine_type", "data_dir", "num_seeds", "per_id", "mean", "std", "ensemble", "pooled",
    "members", "members_diverged", "threshold", "test_tuned", "skipped_files", "notes",
    "protocol", "per_section", "official_score", "official",
)
SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD = "summary.json", "summary.csv", "summary.md"
_SECTION_FIGURES = {"dcase2021": (("auc_source", "AUC source"), ("auc_target", "AUC target"),
                                  ("pauc_source", "pAUC source"), ("pauc_target", "pAUC target")),
                    "dcase2022": (("auc_source", "AUC source"), ("auc_target", "AUC target"), ("pauc", "pAUC"))}
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
    threshold: Threshold | ThresholdSet,
    skipped_files: list[dict] | list[str] = (),
    extra: dict | None = None,
    member_names: list[str] | None = None,
    excluded: Sequence[str] = (),
    domains: Sequence[str | None] | None = None,
    edition: str = "dcase2020",
) -> dict:
    """Score one run: per-id AUC/pAUC per member and their mean/std, the ensemble, the official figures of
    ``edition`` and the threshold table.

    ``machine_ids`` are the units (2021+: sections) and ``domains`` each clip's "source"/"target"/None. With a
    :class:`~asd_jax.evaluate.thresholds.ThresholdSet` of per-unit thresholds each clip of the classification
    table is judged by its unit's (and domain's) threshold; a plain :class:`Threshold` is one for all clips.

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
    thresholds = threshold if isinstance(threshold, ThresholdSet) else ThresholdSet(threshold)
    if thresholds.per_unit:  # score > its clip's threshold  <=>  score - threshold > 0
        table = classification_metrics(labels, ensemble_score - thresholds.clip_values(machine_ids, domains), 0.0)
    else:
        table = classification_metrics(labels, ensemble_score, thresholds.value)
    edition = official.normalise_edition(edition)
    domain_list = None if domains is None else list(domains)
    headline = official.official_metrics(machine_ids, labels, ensemble_score, domain_list, edition)
    for entry, row in zip(all_members, _member_matrix(member_scores, num_clips)):
        entry["official"] = _official_figures(official.official_metrics(machine_ids, labels, row, domain_list,
                                                                         edition)) \
            if np.all(np.isfinite(row)) else None

    id_array = np.asarray([str(i) for i in machine_ids])
    notes = []
    for machine_id in ids:
        reason = undefined_reason(labels[id_array == machine_id])
        if reason is not None:
            notes.append(f"id {machine_id}: AUC/pAUC undefined ({reason})")
    num_unknown = int(np.sum(labels == UNKNOWN))
    if num_unknown:
        notes.append(f"{num_unknown} clips with unknown label (-1) are left out of every metric")
    notes += [note for note in headline["notes"] if note.startswith("section ")]

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
            **thresholds.to_json(),
            **{key: table[key] for key in _CLASSIFICATION_KEYS},
            "confusion": {key: table[key] for key in ("tp", "fp", "tn", "fn")},
        },
        "test_tuned": bool(thresholds.test_tuned),
        "skipped_files": _skipped(skipped_files),
        "notes": notes,
        "protocol": edition,
        "per_section": headline.get("per_section"),
        "official_score": headline["official_score"],
        "official": {key: value for key, value in headline.items()
                     if key not in ("protocol", "per_section", "per_id", "official_score")},
    }
    results.update(extra)
    return results


def _official_figures(result: dict) -> dict:
    """A member's official figures: its score, means and, for 2021+, its per-section figures."""
    keys = ("official_score", "mean_auc", "mean_pauc", "hmean_auc_source", "hmean_auc_target", "hmean_pauc")
    return {**{key: result[key] for key in keys if key in result}, "per_section": result.get("per_section")}


def jsonable(value):
    """Plain JSON types, with NaN and infinities as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
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


def fmt(value, digits: int = 4) -> str:
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
    return members_text(seeds, settings)


def members_text(seeds: int, settings: int) -> str:
    """'3 seeds', '2 settings x 1 seed'."""
    text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    return f"{settings} settings x {text}" if settings > 1 else text


def _with_std(results: dict, value, std) -> str:
    if _num_seeds(results) > 1 and value is not None and std is not None and not math.isnan(value):
        return f"{fmt(value)} ± {fmt(std)}"
    return fmt(value)


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
    return fmt(mean) + (f" ± {fmt(std)}" if std is not None else "")


def _setting_rows(settings: list[dict]) -> list[list[str]]:
    return [[s["name"], _mean_pm(s["auc_mean"], s["auc_std"]), _mean_pm(s["pauc_mean"], s["pauc_std"]),
             fmt(s["validation_error_mean"], 6)] for s in settings]


def _class_rows(threshold: dict) -> list[list[str]]:
    return [
        ["Normal", *(fmt(threshold[f"{m}_normal"], 2) for m in ("precision", "recall", "f1"))],
        ["Anomalous", *(fmt(threshold[f"{m}_anomaly"], 2) for m in ("precision", "recall", "f1"))],
    ]


def _threshold_line(threshold: dict, unit: str = "machine id") -> str:
    policy = threshold["policy"]
    if threshold.get("quantile") is not None:
        policy += f" (q={threshold['quantile']:g})"
    if threshold.get("per_unit"):
        line = f"threshold: {policy} per {unit} (global {fmt(threshold['value'], 6)}): " + "; ".join(
            _unit_threshold_text(name, entry) for name, entry in threshold.get("units", {}).items())
    else:
        line = f"threshold: {policy} = {fmt(threshold['value'], 6)}"
    if threshold.get("test_tuned"):
        line += "  ** TEST-TUNED: chosen on the test labels, not a fair estimate **"
    return line


def _unit_threshold_text(name: str, entry: dict) -> str:
    text = f"{name} = {fmt(entry['value'], 6)}" + (" (global)" if entry.get("from") == "global" else "")
    domains = entry.get("domains") or {}
    if domains:
        text += " (" + ", ".join(f"{d} {fmt(v['value'], 6)}" for d, v in domains.items()) + ")"
    return text


def _unit_name(results: dict) -> str:
    return "machine id" if results.get("protocol", "dcase2020") == "dcase2020" else "section"


def _sectioned(results: dict) -> bool:
    """Whether the results are of a 2021+ edition (figures per section and domain)."""
    return results.get("per_section") is not None


def _section_columns(results: dict) -> tuple[tuple[str, str], ...]:
    return _SECTION_FIGURES["dcase2021" if results["protocol"] == "dcase2021" else "dcase2022"]


def _section_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-section table of a 2021+ edition, then the official score and its hmeans."""
    columns = _section_columns(results)
    header = ["section", *(title for _, title in columns), "#normal s/t", "#anomaly s/t"]
    rows = []
    for section, figures in results["per_section"].items():
        rows.append([section, *(fmt(figures.get(key)) for key, _ in columns),
                     f"{figures['num_source_normal']}/{figures['num_target_normal']}",
                     f"{figures['num_source_anomaly']}/{figures['num_target_anomaly']}"])
    figures = results.get("official", {})
    if len(columns) == 3:
        rows.append(["hmean over sections", fmt(figures.get("hmean_auc_source")),
                     fmt(figures.get("hmean_auc_target")), fmt(figures.get("hmean_pauc")), "", ""])
    rows.append(["official score", fmt(results.get("official_score")), *([""] * (len(columns) + 1))])
    return header, rows


def _official_line(results: dict) -> str:
    """What the official score is, and its mean ± std over members when there are several."""
    keys = ", ".join(title for _, title in _section_columns(results))
    line = f"official score ({results['protocol']}): harmonic mean of {keys} over sections"
    if _num_seeds(results) > 1:
        values = [m["official"]["official_score"] for m in results.get("members", [])
                  if not m.get("diverged") and m.get("official") and m["official"]["official_score"] is not None]
        line += " on the ensemble-mean score"
        if values:
            line += f"; per member {fmt(float(np.mean(values)))} ± {fmt(float(np.std(values)))}"
    return line


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def format_table(results: dict) -> str:
    """A plain-text summary for the terminal: AUC/pAUC per id, mean (± std over seeds), and the class table."""
    seeds = _num_seeds(results)
    lines = [f"{results['method']} | {results['machine_type']} | {describe_members(results)}"
             + (f" | {results['protocol']}" if results.get("protocol") else "")]
    if results.get("members_diverged"):
        lines.append(f"DIVERGED (left out of the ensemble, threshold and figures): "
                     f"{', '.join(results['members_diverged'])}")
    if _sectioned(results):
        header, rows = _section_rows(results)
        lines.append(_aligned([header, *rows]))
        lines.append(_official_line(results))
    else:
        rows = [["id", "AUC", "pAUC", "#normal", "#anomaly"], *_summary_rows(results)]
        if seeds > 1:
            ensemble = results["ensemble"]["mean"]
            rows.append(["ensemble mean score", fmt(ensemble["auc"]), fmt(ensemble["pauc"]), "", ""])
        lines.append(_aligned(rows))
        pooled_note = " (mean over members)" if seeds > 1 else ""
        lines.append(f"pooled AUC over all ids{pooled_note}: {fmt(results['pooled']['auc'])}")
    if len(results.get("settings") or []) > 1:
        lines += ["", "per setting (mean ± std over its seeds; held-out normal error is label-free):"]
        lines.append(_aligned([["setting", "AUC", "pAUC", "held-out error"], *_setting_rows(results["settings"])]))
    lines.append("")
    lines.append("| Class | Precision | Recall | F1-score |")
    lines.extend(f"| {' | '.join(row)} |" for row in _class_rows(results["threshold"]))
    lines.append(f"accuracy: {fmt(results['threshold']['accuracy'], 2)}")
    lines.append(_threshold_line(results["threshold"], _unit_name(results)))
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
    if _sectioned(results):
        header, rows = _section_rows(results)
        ensemble_note = " (ensemble-mean score)" if seeds > 1 else ""
        lines += ["", f"## Official figures per section, {results['protocol']}{ensemble_note}", ""]
        lines += _markdown_table(header, rows)
        lines += ["", f"{_official_line(results)}. " + _protocol_text(results['protocol'])]
        lines += ["", f"## AUC / pAUC per section, domains pooled{auc_note}", ""]
    else:
        lines += ["", f"## AUC / pAUC per machine id{auc_note}", ""]
    rows = _summary_rows(results)
    ensemble = results["ensemble"]["mean"]
    rows.append(["ensemble mean score", fmt(ensemble["auc"]), fmt(ensemble["pauc"]), "", ""])
    pooled_label = "pooled over ids (mean over seeds)" if seeds > 1 else "pooled over ids"
    rows.append([pooled_label, fmt(results["pooled"]["auc"]), "", "", ""])
    lines += _markdown_table(["Machine ID" if not _sectioned(results) else "Section", "AUC", "pAUC", "#normal",
                              "#anomaly"], rows)
    lines += ["", f"pAUC: McClish-standardised, FPR in [0, {DEFAULT_MAX_FPR}]. The mean is over ids (as DCASE); "
              "the pooled AUC ranks all ids' clips together."]
    if len(results.get("settings") or []) > 1:
        lines += ["", "## Per setting (mean ± std over its seeds)", ""]
        lines += _markdown_table(["Setting", "AUC", "pAUC", "Held-out normal error"], _setting_rows(results["settings"]))

    lines += ["", "## Classification at the threshold (ensemble mean score)", ""]
    lines += _markdown_table(["Class", "Precision", "Recall", "F1-score"], _class_rows(threshold))
    confusion = threshold.get("confusion", {})
    lines += ["", f"- accuracy: {fmt(threshold['accuracy'], 2)}",
              f"- {_threshold_line(threshold, _unit_name(results))}"]
    if threshold.get("source"):
        lines.append(f"- threshold source: {threshold['source']}")
    if confusion:
        lines.append("- confusion (anomaly positive): " + ", ".join(f"{k}={v}" for k, v in confusion.items()))
    if threshold.get("per_unit"):
        lines += ["", f"Each clip is judged by its {_unit_name(results)}'s threshold (its domain's where that domain "
                  "had held-out normals):", ""]
        unit_rows = [[name, fmt(entry["value"], 6), str(entry["num_heldout"]),
                      *(fmt(entry.get("domains", {}).get(d, {}).get("value"), 6) for d in ("source", "target")),
                      entry.get("source", "")] for name, entry in threshold.get("units", {}).items()]
        lines += _markdown_table([_unit_name(results), "threshold", "held-out clips", "source", "target", "from"],
                                 unit_rows)

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


def _protocol_text(edition: str) -> str:
    if edition == "dcase2021":
        return ("DCASE 2021: AUC and pAUC per domain, each on that domain's normal and anomalous clips; "
                "pAUC FPR in [0, 0.1].")
    return (f"DCASE {edition[-4:]}: AUC per domain on that domain's normals against all anomalies of the section; "
            "pAUC (FPR in [0, 0.1]) on all clips of the section.")


def _save(figure: Figure, path: str) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)


def _plot_roc(path: str, machine_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray, unit: str = "id") -> None:
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
    _save(figure, path)


def _plot_histograms(path: str, machine_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray,
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
    _save(figure, path)


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
    validation: tuple | None = None,
    sections: Sequence[str] | None = None,
    domains: Sequence[str | None] | None = None,
) -> None:
    """Write a run's results, once: results.json, threshold.json, scores.csv, validation_scores.csv (when
    ``validation`` = (files, machine ids, member scores [E, n][, domains]) of the held-out normals is given),
    report.md and the plots (roc.png, score_hist.png, train_curve.png when there is a curve).

    ``scores.csv`` has ``file,machine_id,section,domain,label,score`` (score = ensemble mean; section defaults to
    the machine id, domain is source/target or empty) and, when E > 1, one ``score_<name>`` column per member;
    names default to those in ``results["members"]``. ``threshold.json`` holds the threshold(s) that
    ``--mode=score`` applies: the global one and, when per unit, each unit's.
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

    run.write_json(RunDir.RESULTS, jsonable(results))
    threshold = results["threshold"]
    run.write_json(RunDir.THRESHOLD, jsonable(ThresholdSet.from_json(threshold).to_json()))
    _write_scores(run.file(RunDir.SCORES), files, machine_ids, labels, matrix, names, healthy, sections, domains)
    if validation is not None:
        validation_files, validation_ids, validation_scores = validation[:3]
        validation_domains = validation[3] if len(validation) > 3 else None
        validation_matrix = np.asarray(validation_scores, np.float64).reshape(len(names), len(validation_files))
        _write_scores(run.file(RunDir.VALIDATION_SCORES), validation_files, validation_ids,
                      np.zeros(len(validation_files), int), validation_matrix, names, healthy,
                      domains=validation_domains)
    with open(run.file(RunDir.REPORT), "w") as handle:
        handle.write(_report_markdown(jsonable(results)))

    id_array = np.asarray([str(i) for i in machine_ids])
    unit = "section" if _sectioned(results) else "id"
    _plot_roc(run.file(RunDir.ROC_PLOT), id_array, labels, ensemble_score, unit)
    _plot_histograms(run.file(RunDir.HIST_PLOT), id_array, labels, ensemble_score, threshold, unit)
    plot_training_curve(run.path)


def _write_scores(path: str, files, machine_ids, labels, matrix: np.ndarray, names: list[str],
                  healthy: np.ndarray, sections: Sequence[str] | None = None,
                  domains: Sequence[str | None] | None = None) -> None:
    """``score`` is the mean over the healthy members; every member keeps its own column (diverged ones too)."""
    sections = machine_ids if sections is None else sections
    domains = [None] * len(files) if domains is None else domains
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        member_columns = [f"score_{name}" for name in names] if matrix.shape[0] > 1 else []
        writer.writerow(["file", "machine_id", "section", "domain", "label", "score", *member_columns])
        ensemble_score = matrix[healthy].mean(axis=0)
        for index in range(len(files)):
            member_values = [repr(float(v)) for v in matrix[:, index]] if member_columns else []
            writer.writerow([files[index], str(machine_ids[index]), str(sections[index]), domains[index] or "",
                             int(labels[index]), repr(float(ensemble_score[index])), *member_values])


# ----------------------------------------------------------------------------------------------------------------------
# One run per machine type: the summary across types.


def official_result(results: dict) -> dict:
    """A run's official figures in the form of :func:`asd_jax.evaluate.official.official_metrics` (ensemble-mean
    score), as :func:`asd_jax.evaluate.official.summary_across_types` takes them."""
    figures = results["official"]
    result = {"protocol": results["protocol"], "official_score": results["official_score"],
              "notes": list(figures.get("notes", [])), "mean_auc": figures.get("mean_auc"),
              "mean_pauc": figures.get("mean_pauc")}
    if results.get("per_section") is not None:
        result["per_section"] = results["per_section"]
    return result


def summarise_types(per_type: dict[str, dict], run_dirs: dict[str, str] | None = None) -> dict:
    """The summary across machine types of one run per type (their ``results``), in their edition's layout.

    Per type: its official score (2021+) and mean AUC/pAUC over its units on the ensemble-mean score; overall:
    :func:`~asd_jax.evaluate.official.summary_across_types`, the arithmetic mean over types (2020) or the harmonic
    mean of every section's figures of every type (2021+). Raises ValueError when the types' editions differ.
    """
    editions = sorted({r["protocol"] for r in per_type.values()})
    if len(editions) != 1:
        raise ValueError(f"the machine types were scored under different DCASE editions ({', '.join(editions)}); "
                         "pass --config.dcase_edition to score them alike")
    edition = editions[0]
    summary = official.summary_across_types({t: official_result(r) for t, r in per_type.items()}, edition)
    for machine_type, figures in summary["per_type"].items():
        results = per_type[machine_type]
        figures.update(num_units=len(results["per_section"] or results["per_id"]),
                       num_seeds=results.get("num_seeds", 1))
        for key in ("hmean_auc_source", "hmean_auc_target", "hmean_pauc"):
            if key in results["official"]:
                figures[key] = results["official"][key]
        if run_dirs:
            figures["run_dir"] = run_dirs[machine_type]
    method = sorted({r["method"] for r in per_type.values()})
    overall = ("arithmetic mean over machine types of each type's mean over machine ids" if edition == "dcase2020"
               else "harmonic mean of every figure of every section of every machine type")
    summary["notes"] = [note for note in summary["notes"] if "has no single official score" not in note]
    return {"method": ", ".join(method), "machine_types": list(per_type), "overall": overall, **summary}


def _summary_columns(edition: str) -> tuple[tuple[str, str], ...]:
    if edition == "dcase2020":
        return (("mean_auc", "mean AUC"), ("mean_pauc", "mean pAUC"))
    pauc = (("hmean_pauc", "hmean pAUC"),) if edition != "dcase2021" else (("hmean_pauc", "hmean pAUC (s+t)"),)
    return (("official_score", "official score"), ("hmean_auc_source", "hmean AUC source"),
            ("hmean_auc_target", "hmean AUC target"), *pauc, ("mean_auc", "mean AUC"), ("mean_pauc", "mean pAUC"))


def _type_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    columns = _summary_columns(summary["protocol"])
    header = ["machine type", *(title for _, title in columns)]
    rows = [[machine_type, *(fmt(figures.get(key)) for key, _ in columns)]
            for machine_type, figures in summary["per_type"].items()]
    rows.append(["all types", *(fmt(summary.get(key)) for key, _ in columns)])
    return header, rows


def format_type_summary(summary: dict) -> str:
    header, rows = _type_rows(summary)
    return "\n".join([f"{summary['method']} on {len(summary['per_type'])} machine types | {summary['protocol']}",
                      _aligned([header, *rows]), f"all types: {summary['overall']}"])


def write_type_summary(directory: str, summary: dict) -> None:
    """``summary.json``, ``summary.csv`` (one row per type, then ``all types``) and ``summary.md`` in
    ``directory``."""
    run = RunDir(directory).create()
    run.write_json(SUMMARY_JSON, jsonable(summary))
    columns = _summary_columns(summary["protocol"])
    with open(run.file(SUMMARY_CSV), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["machine_type", *(key for key, _ in columns), "run_dir"])
        for machine_type, figures in summary["per_type"].items():
            writer.writerow([machine_type, *(_csv_value(figures.get(key)) for key, _ in columns),
                             figures.get("run_dir", "")])
        writer.writerow(["all", *(_csv_value(summary.get(key)) for key, _ in columns), ""])
    header, rows = _type_rows(summary)
    lines = [f"# {summary['method']} on {len(summary['per_type'])} machine types ({summary['protocol']})", "",
             "One detector per machine type, each an ordinary run directory below this one. Figures on the "
             "ensemble-mean score of each run.", "", *_markdown_table(header, rows), "",
             f"- all types: {summary['overall']}"]
    if summary["protocol"] == "dcase2020":
        lines.append("- DCASE 2020 has no single official score (it ranked by averaging ranks over types)")
    for machine_type, figures in summary["per_type"].items():
        if figures.get("run_dir"):
            report = os.path.join(os.path.relpath(figures["run_dir"], directory), RunDir.REPORT)
            lines.append(f"- {machine_type}: [{report}]({report})")
    if summary.get("notes"):
        lines += ["", "## Notes", "", *(f"- {note}" for note in summary["notes"])]
    with open(run.file(SUMMARY_MD), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def _csv_value(value) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else repr(float(value))
