"""One run per machine type (``machine_type="all"`` or a comma list), or one detector over all of them, and the
summary across the types.

Each type trains into ``<workdir>/<type>/``, an ordinary run directory (or, for a method that trains the types
jointly, one detector trains into ``<workdir>`` and each type's figures go to ``<workdir>/<type>/``); the summary
(``summary.md``, ``summary.csv``, ``summary.json`` in ``<workdir>``) gives each type's mean AUC/pAUC (2020) or official score
(2021+), and over all types their arithmetic mean (2020) or the harmonic mean of every section's figures (2021+),
as the official evaluators compute it.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from collections.abc import Callable

from asd_jax import distributed
from asd_jax.data import loading
from asd_jax.evaluate import official
from asd_jax.evaluate.results import jsonable, official_result
from asd_jax.evaluate.tables import aligned, fmt, markdown_table
from asd_jax.rundir import RunDir

SUMMARY_JSON, SUMMARY_CSV, SUMMARY_MD = "summary.json", "summary.csv", "summary.md"


def train_every_type(config, types: list[str], run_one: Callable) -> dict:
    """One ordinary run per machine type into ``<workdir>/<type>/``, then ``summary.md``, ``summary.csv`` and
    ``summary.json`` in ``<workdir>``: per type its mean AUC/pAUC (2020) or official score (2021+), and over all
    types their arithmetic mean (2020) or the harmonic mean of every section's figures (2021+). Returns the
    summary. ``run_one(type_config)`` trains and evaluates one type (its ``workdir`` set to ``<workdir>/<type>``)
    and returns its results. The work directory is locked for the whole loop, and each type's run directory as any
    run's."""
    root = RunDir(config.workdir).create()
    with distributed.primary_lock(root.path):
        edition = loading.common_edition(config, types)
        per_type, run_dirs = {}, {}
        for index, machine_type in enumerate(types):
            type_config = copy.deepcopy(config)
            with type_config.unlocked():
                type_config.machine_type = machine_type
                type_config.workdir = root.file(machine_type)
                if edition:
                    type_config.dcase_edition = edition
            print(f"\n== machine type {index + 1}/{len(types)}: {machine_type} ==")
            per_type[machine_type] = run_one(type_config)
            run_dirs[machine_type] = type_config.workdir
        summary = summarise_types(per_type, run_dirs)
        if distributed.is_primary():
            write_type_summary(root.path, summary)
    print("\n" + format_type_summary(summary))
    print(f"wrote {SUMMARY_MD}, {SUMMARY_CSV} and {SUMMARY_JSON} to {root}")
    return summary


def train_types_jointly(config, types: list[str], run_joint: Callable) -> dict:
    """One detector over every machine type (a method with ``Method.joint_types``, e.g. the id classifier whose
    classes then span every type): ``run_joint(edition)`` trains it into ``<workdir>`` (checkpoints, config) and
    writes each type's figures to ``<workdir>/<type>/`` (an evaluation of the one detector on that type's clips,
    with its own thresholds), returning ``{type: results}``; then the same summary as one run per type."""
    edition = loading.common_edition(config, types)
    per_type = run_joint(edition)
    summary = summarise_types(per_type, {t: os.path.join(config.workdir, t) for t in types})
    summary["joint"] = True
    if distributed.is_primary():
        write_type_summary(config.workdir, summary)
    print("\n" + format_type_summary(summary))
    print(f"wrote {SUMMARY_MD}, {SUMMARY_CSV} and {SUMMARY_JSON} to {config.workdir}")
    return summary


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
                      aligned([header, *rows]), f"all types: {summary['overall']}"])


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
             ("One detector over every machine type (its checkpoints and config in this folder); each type's "
              "figures, thresholds and scores in a folder below. Figures on the ensemble-mean score."
              if summary.get("joint") else "One detector per machine type, each an ordinary run directory below "
              "this one. Figures on the ensemble-mean score of each run."), "", *markdown_table(header, rows), "",
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
