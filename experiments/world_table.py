"""The official score per machine type and over all types, mean ± sample std over each run's members (seeds), of
runs made with ``--machine_type=all`` (one folder per type below each run): ``python experiments/world_table.py
RUN [RUN ...] [--json OUT]``. Every figure comes from the runs' results.json (each member's own official
figures); ``--json OUT`` also writes each run's per-member scores, from which every cell recomputes.

A RUN is a work directory, or ``NAME=DIR+DIR...``: one row named NAME whose members are those of every DIR, for
seeds trained in separate runs (``--seed=0 --num_seeds=1`` and ``--seed=1 --num_seeds=2`` make one 3-seed row). The
directories must hold the same machine types and must not repeat a seed."""

import json
import os
import sys

import numpy as np
from scipy.stats import hmean

from asd_jax.evaluate.tables import markdown_table, mean_pm

FIGURES = ("auc_source", "auc_target", "pauc")


def member_scores(run_dir: str) -> tuple[list[str], dict[str, list[float]], list[float], list]:
    """(types, per type each member's official score, each member's official score over all types, the members'
    seeds: their names where a results.json predates the seed field)."""
    with open(os.path.join(run_dir, "summary.json")) as handle:
        types = json.load(handle)["machine_types"]
    per_type, flat, seeds = {}, None, None
    for machine_type in types:
        with open(os.path.join(run_dir, machine_type, "results.json")) as handle:
            members = [m for m in json.load(handle)["members"] if not m.get("diverged")]
        per_type[machine_type] = [m["official"]["official_score"] for m in members]
        figures = [[s[key] for s in m["official"]["per_section"].values() for key in FIGURES] for m in members]
        flat = figures if flat is None else [a + b for a, b in zip(flat, figures)]
        seeds = seeds or [m.get("seed", m["name"]) for m in members]
    return types, per_type, [float(hmean(f)) for f in flat], seeds


def pooled_scores(spec: str) -> tuple[str, list[str], dict[str, list[float]], list[float], list[str]]:
    """(row name, types, per type each member's score, each member's overall score, the directories) of a RUN."""
    name, _, dirs = spec.rpartition("=")
    run_dirs = dirs.split("+")
    name = name or os.path.basename(os.path.normpath(run_dirs[0]))
    types, per_type, overall, seeds = None, {}, [], []
    for run_dir in run_dirs:
        run_types, run_per_type, run_overall, run_seeds = member_scores(run_dir)
        if types is not None and run_types != types:
            raise ValueError(f"{run_dir} holds the machine types {run_types}, {run_dirs[0]} holds {types}: "
                             "pool only runs over the same types")
        types = run_types
        seeds += run_seeds
        for machine_type, values in run_per_type.items():
            per_type.setdefault(machine_type, []).extend(values)
        overall += run_overall
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{spec}: the runs repeat a seed ({sorted(seeds)}); pool runs of different seeds")
    return name, types, per_type, overall, run_dirs


def main(argv: list[str]) -> None:
    out = None
    if "--json" in argv:
        at = argv.index("--json")
        out, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    rows, types, saved = [], None, {}
    for spec in argv:
        name, types, per_type, overall, run_dirs = pooled_scores(spec)
        saved[name] = {"run_dir": run_dirs[0] if len(run_dirs) == 1 else run_dirs, "per_type": per_type,
                       "all_types": overall}
        cells = [mean_pm(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None) for v in
                 (*per_type.values(), overall)]
        rows.append([name, str(len(overall)), *cells])
    print("\n".join(markdown_table(["method", "seeds", *types, "all types"], rows)))
    if out:
        with open(out, "w") as handle:
            json.dump({"figure": "official score (harmonic mean of AUC source, AUC target and pAUC) per member",
                       "runs": saved}, handle, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
