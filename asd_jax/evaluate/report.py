"""The files of a finished run, written once from its results dict: ``results.json``, ``threshold.json``,
``scores.csv``, ``validation_scores.csv``, ``report.md`` and the plots."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np

from asd_jax.evaluate.plots import plot_histograms, plot_roc, plot_training_curve
from asd_jax.evaluate.results import check_clips, jsonable, member_matrix, member_names_of
from asd_jax.evaluate.tables import report_markdown
from asd_jax.evaluate.thresholds import ThresholdSet
from asd_jax.rundir import RunDir


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
    attributes: Sequence[dict] | None = None,
) -> None:
    """Write a run's results, once: results.json, threshold.json, scores.csv, validation_scores.csv (when
    ``validation`` = (files, machine ids, member scores [E, n][, domains]) of the held-out normals is given),
    report.md and the plots (roc.png, score_hist.png, train_curve.png when there is a curve).

    ``scores.csv`` has ``file,machine_id,section,domain,label,score`` (score = ensemble mean; section defaults to
    the machine id, domain is source/target or empty), ``attributes`` (``key=value;...``) when any clip has
    attributes (2021+ names and attribute files), and, when E > 1, one ``score_<name>`` column per member;
    names default to those in ``results["members"]``. ``threshold.json`` holds the threshold(s) that
    ``--mode=score`` applies: the global one and, when per unit, each unit's.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    num_clips = check_clips(files, machine_ids, labels)
    labels = np.asarray(labels).astype(int)
    matrix = member_matrix(member_scores, num_clips)
    if member_names is None and len(results.get("members", [])) == matrix.shape[0]:
        member_names = [m["name"] for m in results["members"]]
    names = member_names_of(member_names, matrix.shape[0])
    diverged = {m["name"] for m in results.get("members", []) if m.get("diverged")}
    healthy = np.array([name not in diverged for name in names])
    ensemble_score = matrix[healthy].mean(axis=0)
    run.create()

    run.write_json(RunDir.RESULTS, jsonable(results))
    threshold = results["threshold"]
    if threshold["policy"] is None:  # no threshold: --mode=score gives scores without decisions, and says why
        run.write_json(RunDir.THRESHOLD, {"policy": None, "value": None, "reason": threshold.get("source")})
    else:
        run.write_json(RunDir.THRESHOLD, jsonable(ThresholdSet.from_json(threshold).to_json()))
    _write_scores(run.file(RunDir.SCORES), files, machine_ids, labels, matrix, names, healthy, sections, domains,
                  attributes)
    if validation is not None:
        validation_files, validation_ids, validation_scores = validation[:3]
        validation_domains = validation[3] if len(validation) > 3 else None
        validation_matrix = np.asarray(validation_scores, np.float64).reshape(len(names), len(validation_files))
        _write_scores(run.file(RunDir.VALIDATION_SCORES), validation_files, validation_ids,
                      np.zeros(len(validation_files), int), validation_matrix, names, healthy,
                      domains=validation_domains)
    with open(run.file(RunDir.REPORT), "w") as handle:
        handle.write(report_markdown(jsonable(results)))

    id_array = np.asarray([str(i) for i in machine_ids])
    unit = "section" if results.get("per_section") is not None else "id"
    plot_roc(run.file(RunDir.ROC_PLOT), id_array, labels, ensemble_score, unit)
    plot_histograms(run.file(RunDir.HIST_PLOT), id_array, labels, ensemble_score, threshold, unit)
    plot_training_curve(run.path)


def _write_scores(path: str, files, machine_ids, labels, matrix: np.ndarray, names: list[str],
                  healthy: np.ndarray, sections: Sequence[str] | None = None,
                  domains: Sequence[str | None] | None = None, attributes: Sequence[dict] | None = None) -> None:
    """``score`` is the mean over the healthy members; every member keeps its own column (diverged ones too)."""
    sections = machine_ids if sections is None else sections
    domains = [None] * len(files) if domains is None else domains
    attribute_column = attributes is not None and any(attributes)
    attribute_cells = [";".join(f"{k}={v}" for k, v in sorted(a.items())) for a in attributes] if attribute_column \
        else []
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        member_columns = [f"score_{name}" for name in names] if matrix.shape[0] > 1 else []
        writer.writerow(["file", "machine_id", "section", "domain", *(["attributes"] if attribute_column else []),
                         "label", "score", *member_columns])
        ensemble_score = matrix[healthy].mean(axis=0)
        for index in range(len(files)):
            member_values = [repr(float(v)) for v in matrix[:, index]] if member_columns else []
            writer.writerow([files[index], str(machine_ids[index]), str(sections[index]), domains[index] or "",
                             *attribute_cells[index:index + 1], int(labels[index]), repr(float(ensemble_score[index])),
                             *member_values])
