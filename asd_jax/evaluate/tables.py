"""Text for people: the terminal table and ``report.md`` of a run, and the formatting every table shares.

:func:`fmt`, :func:`mean_pm`, :func:`aligned` and :func:`markdown_table` are the one way figures and tables are
written (runs, sweeps, benchmarks, the machine-type summary).
"""

from __future__ import annotations

import math

import numpy as np

from asd_jax.evaluate.metrics import DEFAULT_MAX_FPR
from asd_jax.evaluate.official import unit_word
from asd_jax.evaluate.results import CONTRACT_KEYS
from asd_jax.rundir import RunDir


_SECTION_FIGURES = {"dcase2021": (("auc_source", "AUC source"), ("auc_target", "AUC target"),
                                  ("pauc_source", "pAUC source"), ("pauc_target", "pAUC target")),
                    "dcase2022": (("auc_source", "AUC source"), ("auc_target", "AUC target"), ("pauc", "pAUC"))}


def fmt(value, digits: int = 4) -> str:
    """A figure with ``digits`` decimals; 'n/a' for None or NaN."""
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


def mean_pm(mean, std, digits: int = 4) -> str:
    """'0.8123 ± 0.0101', or the mean alone without a std."""
    return fmt(mean, digits) + (f" ± {fmt(std, digits)}" if std is not None else "")


def _setting_rows(settings: list[dict]) -> list[list[str]]:
    return [[s["name"], mean_pm(s["auc_mean"], s["auc_std"]), mean_pm(s["pauc_mean"], s["pauc_std"]),
             fmt(s["validation_error_mean"], 6)] for s in settings]


def _class_rows(threshold: dict) -> list[list[str]]:
    return [
        ["Normal", *(fmt(threshold[f"{m}_normal"], 2) for m in ("precision", "recall", "f1"))],
        ["Anomalous", *(fmt(threshold[f"{m}_anomaly"], 2) for m in ("precision", "recall", "f1"))],
    ]


def _threshold_line(threshold: dict, unit: str = "machine id") -> str:
    if threshold["policy"] is None:
        return f"threshold: {threshold.get('source') or 'none'}"
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
    return unit_word(results.get("protocol"))


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


def aligned(rows: list[list[str]], right_from: int | None = None) -> str:
    """Rows as plain-text columns two spaces apart; columns from ``right_from`` on are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right_from = len(widths) if right_from is None else right_from
    return "\n".join("  ".join(cell.rjust(width) if i >= right_from else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows)


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
        lines.append(aligned([header, *rows]))
        lines.append(_official_line(results))
    else:
        rows = [["id", "AUC", "pAUC", "#normal", "#anomaly"], *_summary_rows(results)]
        if seeds > 1:
            ensemble = results["ensemble"]["mean"]
            rows.append(["ensemble mean score", fmt(ensemble["auc"]), fmt(ensemble["pauc"]), "", ""])
        lines.append(aligned(rows))
        pooled_note = " (mean over members)" if seeds > 1 else ""
        lines.append(f"pooled AUC over all ids{pooled_note}: {fmt(results['pooled']['auc'])}")
    if len(results.get("settings") or []) > 1:
        lines += ["", "per setting (mean ± std over its seeds; held-out normal error is label-free):"]
        lines.append(aligned([["setting", "AUC", "pAUC", "held-out error"], *_setting_rows(results["settings"])]))
    lines.append("")
    lines.append("| Class | Precision | Recall | F1-score |")
    lines.extend(f"| {' | '.join(row)} |" for row in _class_rows(results["threshold"]))
    lines.append(f"accuracy: {fmt(results['threshold']['accuracy'], 2)}")
    lines.append(_threshold_line(results["threshold"], _unit_name(results)))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table."""
    return [
        f"| {' | '.join(header)} |",
        f"|{'|'.join('---' for _ in header)}|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]


def report_markdown(results: dict) -> str:
    """``report.md``: the run's figures, threshold, skipped files, notes and plots, for reading."""
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
        lines += markdown_table(header, rows)
        lines += ["", f"{_official_line(results)}. " + _protocol_text(results['protocol'])]
        lines += ["", f"## AUC / pAUC per section, domains pooled{auc_note}", ""]
    else:
        lines += ["", f"## AUC / pAUC per machine id{auc_note}", ""]
    rows = _summary_rows(results)
    ensemble = results["ensemble"]["mean"]
    rows.append(["ensemble mean score", fmt(ensemble["auc"]), fmt(ensemble["pauc"]), "", ""])
    pooled_label = "pooled over ids (mean over seeds)" if seeds > 1 else "pooled over ids"
    rows.append([pooled_label, fmt(results["pooled"]["auc"]), "", "", ""])
    lines += markdown_table(["Machine ID" if not _sectioned(results) else "Section", "AUC", "pAUC", "#normal",
                              "#anomaly"], rows)
    lines += ["", f"pAUC: McClish-standardised, FPR in [0, {DEFAULT_MAX_FPR}]. The mean is over ids (as DCASE); "
              "the pooled AUC ranks all ids' clips together."]
    if len(results.get("settings") or []) > 1:
        lines += ["", "## Per setting (mean ± std over its seeds)", ""]
        lines += markdown_table(["Setting", "AUC", "pAUC", "Held-out normal error"], _setting_rows(results["settings"]))

    lines += ["", "## Classification at the threshold (ensemble mean score)", ""]
    lines += markdown_table(["Class", "Precision", "Recall", "F1-score"], _class_rows(threshold))
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
        lines += markdown_table([_unit_name(results), "threshold", "held-out clips", "source", "target", "from"],
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
    lines += ["", "## Plots", "", f"![ROC per machine id]({RunDir.ROC_PLOT})", "",
              f"![Score histograms]({RunDir.HIST_PLOT})", ""]
    return "\n".join(lines)


def _protocol_text(edition: str) -> str:
    if edition == "dcase2021":
        return ("DCASE 2021: AUC and pAUC per domain, each on that domain's normal and anomalous clips; "
                "pAUC FPR in [0, 0.1].")
    return (f"DCASE {edition[-4:]}: AUC per domain on that domain's normals against all anomalies of the section; "
            "pAUC (FPR in [0, 0.1]) on all clips of the section.")


def format_value(value) -> str:
    """A swept value as it appears in names and tables (floats in %g, no slashes or spaces)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("/", "-").replace(" ", "")
