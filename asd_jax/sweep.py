"""``--mode=sweep``: run a declared experiment group by group and answer "which setting is best, and how sure are we".

A sweep file (``experiments/sweeps/<name>.py``) has ``get_config()`` (the base config) and ``get_sweep()`` (a list of
points, see :mod:`asd_jax.experiment`). Each group trains in one compiled program into ``DIR/<group>/``, an ordinary
run directory; then ``DIR/sweep.json``, ``sweep.csv``, ``sweep.md`` and ``sweep_auc.png`` summarise the settings.
A sweep started again with the same directory skips finished groups and resumes the running one from its checkpoint.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import time

import ml_collections

from asd_jax import distributed, experiment, pipeline, workdir
from asd_jax.data import loading
from asd_jax.evaluate.plots import plot_sweep
from asd_jax.evaluate.results import jsonable, setting_figures
from asd_jax.evaluate.tables import aligned, fmt, format_value, markdown_table, mean_pm
from asd_jax.rundir import RunDir

SWEEP_JSON, SWEEP_CSV, SWEEP_MD, SWEEP_PLOT = "sweep.json", "sweep.csv", "sweep.md", "sweep_auc.png"
CRITERION = "validation_error_mean"
CRITERION_TEXT = ("lowest mean score of the held-out normal training clips (no test labels); it compares settings "
                  "of one method, whose scores share a scale")


def load(path: str):
    """The sweep file's module (``get_config()`` and ``get_sweep()``)."""
    if not path:
        raise ValueError("--mode=sweep needs --sweep=experiments/sweeps/<name>.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {path} not found (sweep files live in experiments/sweeps/)")
    spec = importlib.util.spec_from_file_location(f"asd_jax_sweep_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("get_config", "get_sweep"):
        if not callable(getattr(module, name, None)):
            raise ValueError(f"{path} must define {name}() (see experiments/sweeps/smoke.py)")
    return module


def run(config: ml_collections.ConfigDict, stop_after_groups: int | None = None) -> dict:
    """Run the sweep ``config.sweep`` with ``config`` as its base (the sweep file's config with the command line's
    flags applied); returns the sweep.json content."""
    points = load(config.sweep).get_sweep()
    members = experiment.expand(config, points)
    groups = experiment.group(members)
    root = RunDir(workdir.default_workdir(config)).create()
    with distributed.primary_lock(root.path):  # several processes (--distributed): process 0 writes the tables
        return _run_locked(config, root, members, groups, stop_after_groups)


def _run_locked(config, root: RunDir, members: list[experiment.MemberSpec], groups: list[experiment.Group],
                stop_after_groups: int | None) -> dict:
    print(f"sweep {workdir.sweep_name(config.sweep)}: {len(members)} members, {len(experiment.unique(m.setting for m in members))}"
          f" settings, {len(groups)} group(s) (one compiled program each); directory {root}")
    records = [{"name": g.name, "shape": g.shape, "members": [m.name for m in g.members], "compiles": None,
                "seconds": None, "status": "pending"} for g in groups]
    datasets: dict[str, loading.Data] = {}
    group_results: dict[str, dict] = {}
    for index, (group, record) in enumerate(zip(groups, records)):
        if stop_after_groups is not None and index >= stop_after_groups:
            break
        run_dir = RunDir(root.file(group.name))
        if run_dir.finished and _same_group(run_dir, group):
            results = run_dir.read_json(RunDir.RESULTS)
            record.update(status="done", compiles=results.get("compiles"), seconds=results.get("seconds"),
                          reused=True)
            print(f"group {group.name}: finished earlier, results reused")
        else:
            record["status"] = "running"
            _write_json(root, _summary(config, records, group_results, members))
            started = time.perf_counter()
            data_key = loading.data_key(group.config)
            if data_key not in datasets:
                datasets[data_key] = loading.load_data(group.config)
            print(f"\n== group {index + 1}/{len(groups)}: {group.name} ({len(group.members)} members) ==")
            results = pipeline.run_group(group, run_dir, data=datasets[data_key])
            record.update(status="done", compiles=results.get("compiles"),
                          seconds=round(time.perf_counter() - started, 1))
        group_results[group.name] = results
        _write_json(root, _summary(config, records, group_results, members))
    summary = _summary(config, records, group_results, members)
    _write_json(root, summary)
    if all(r["status"] == "done" for r in records):
        if distributed.is_primary():
            _write_tables(root, summary)
            plot_sweep(root.file(SWEEP_PLOT), summary, _axes(summary))
        print(format_summary(summary))
        print(f"wrote {SWEEP_JSON}, {SWEEP_CSV}, {SWEEP_MD} and {SWEEP_PLOT} to {root}")
    return summary


def _same_group(run_dir: RunDir, group: experiment.Group) -> bool:
    try:
        workdir.check_resumable(run_dir, group.config, [m.describe() for m in group.members])
        return True
    except ValueError:
        return False


def _write_json(root: RunDir, summary: dict) -> None:
    if distributed.is_primary():
        root.write_json(SWEEP_JSON, jsonable(summary))


def _figures(setting: dict) -> dict:
    return {key: setting.get(key) for key in ("auc_mean", "auc_std", "pauc_mean", "pauc_std", "validation_error_mean",
                                              "f1_anomaly_mean", "f1_anomaly_test_tuned_mean", "per_id", "members",
                                              "seeds", "diverged")}


def _summary(config, records: list[dict], group_results: dict[str, dict],
             members: list[experiment.MemberSpec]) -> dict:
    finished = [m for results in group_results.values() for m in results["members"]]
    settings = setting_figures(finished, members)  # a setting may span groups (e.g. OC-SVM seeds)
    methods = {s["setting"].get("method", config.method) for s in settings}
    for s in settings:
        s["method"] = s["setting"].get("method", config.method)
    settings.sort(key=lambda s: (s["method"], _criterion(s)))
    summary = {"sweep": workdir.sweep_name(config.sweep), "sweep_file": os.path.abspath(config.sweep),
               "groups": records, "settings": settings}
    if settings:
        summary["selected"] = _select(settings, methods)
        best = max(settings, key=lambda s: -math.inf if s["auc_mean"] is None else s["auc_mean"])
        summary["best_by_test"] = {"criterion": "highest mean AUC over ids on the TEST labels", "setting": best["setting"],
                                   "name": best["name"], "test_tuned": True, **_figures(best)}
    return summary


def _criterion(setting: dict) -> float:
    value = setting[CRITERION]
    return math.inf if value is None else value


def _select(settings: list[dict], methods: set[str]) -> dict:
    """The label-free choice: the lowest held-out normal error, per method when the sweep spans several (their
    errors are on different scales)."""
    per_method = {}
    for method in sorted(methods):
        best = min((s for s in settings if s["method"] == method), key=_criterion)
        per_method[method] = {"setting": best["setting"], "name": best["name"], **_figures(best)}
    selected = {"criterion": CRITERION, "criterion_text": CRITERION_TEXT, "test_tuned": False}
    if len(per_method) == 1:
        selected.update(next(iter(per_method.values())))
    else:
        selected.update(setting=None, per_method=per_method,
                        note="the settings span several methods, whose held-out errors are not comparable: one "
                             "label-free choice per method")
    return selected


# ----------------------------------------------------------------------------------------------------------------------
# Tables and the plot.


def _axes(summary: dict) -> list[str]:
    return list(dict.fromkeys(path for s in summary["settings"] for path in s["setting"]))


def _rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    axes = _axes(summary)
    selected = summary["selected"]
    chosen = {selected["name"]} if selected.get("setting") is not None else \
        {entry["name"] for entry in selected.get("per_method", {}).values()}
    header = ["rank", *axes, "seeds", "AUC (mean ± std)", "pAUC (mean ± std)", "held-out error", "F1 anomaly",
              "F1 anomaly (TEST-TUNED threshold)", "selected"]
    rows = []
    for rank, s in enumerate(summary["settings"], 1):
        rows.append([str(rank), *(format_value(s["setting"].get(a, "")) for a in axes), str(len(s["seeds"])),
                     mean_pm(s["auc_mean"], s["auc_std"]), mean_pm(s["pauc_mean"], s["pauc_std"]),
                     fmt(s[CRITERION], 6), mean_pm(s["f1_anomaly_mean"], s["f1_anomaly_std"], 2),
                     mean_pm(s["f1_anomaly_test_tuned_mean"], s["f1_anomaly_test_tuned_std"], 2),
                     "label-free" if s["name"] in chosen else ""])
    return header, rows


def _write_tables(root: RunDir, summary: dict) -> None:
    axes = _axes(summary)
    with open(root.file(SWEEP_CSV), "w", newline="") as handle:
        writer = csv.writer(handle)
        keys = ("auc_mean", "auc_std", "pauc_mean", "pauc_std", CRITERION, "f1_anomaly_mean", "f1_anomaly_std",
                "f1_anomaly_test_tuned_mean", "f1_anomaly_test_tuned_std")
        writer.writerow(["setting", *axes, "seeds", *keys, "members"])
        for s in summary["settings"]:
            writer.writerow([s["name"], *(s["setting"].get(a, "") for a in axes), " ".join(map(str, s["seeds"])),
                             *(s.get(k) for k in keys), " ".join(s["members"])])
    header, rows = _rows(summary)
    lines = [f"# Sweep {summary['sweep']}", "", f"Settings sorted by the label-free criterion ({CRITERION_TEXT}). "
             "AUC/pAUC: per machine id, mean over ids, then mean ± sample std over the setting's seeds. F1 of the "
             "anomalous class, per member then mean ± std over seeds: at the run's threshold policy (set on the "
             "member's held-out normals, no test labels), and at the F1-best threshold on the test labels "
             "(TEST-TUNED, optimistic).", "",
             *markdown_table(header, rows), ""]
    lines += _choice_lines(summary, markdown=True)
    lines += ["", *markdown_table(["group", "members", "compiles", "seconds", "status"],
                                  [[g["name"], str(len(g["members"])), str(g["compiles"]), str(g["seconds"]),
                                    g["status"]] for g in summary["groups"]])]
    lines += ["", f"![mean AUC against each swept axis]({SWEEP_PLOT})", ""]
    with open(root.file(SWEEP_MD), "w") as handle:
        handle.write("\n".join(lines))


def _choice_lines(summary: dict, markdown: bool = False) -> list[str]:
    bold = (lambda text: f"**{text}**") if markdown else (lambda text: text)
    selected, best = summary["selected"], summary["best_by_test"]
    chosen = [selected] if selected.get("setting") is not None else list(selected["per_method"].values())
    lines = [f"- {bold('selected without test labels')}: {c['name']}: AUC {mean_pm(c['auc_mean'], c['auc_std'])}, "
             f"pAUC {mean_pm(c['pauc_mean'], c['pauc_std'])}" for c in chosen]
    lines.append(f"- {bold('best by test AUC (TEST-TUNED, optimistic)')}: {best['name']}: AUC "
                 f"{mean_pm(best['auc_mean'], best['auc_std'])}, pAUC {mean_pm(best['pauc_mean'], best['pauc_std'])}")
    return lines


def format_summary(summary: dict) -> str:
    header, rows = _rows(summary)
    return "\n".join([f"sweep {summary['sweep']}: {len(summary['settings'])} settings", aligned([header, *rows]),
                      *_choice_lines(summary)])
