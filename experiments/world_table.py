"""The official score per machine type and over all types, mean ± sample std over each run's members (seeds), of
runs made with ``--machine_type=all`` (one folder per type below each run): ``python experiments/world_table.py
RUN_DIR [RUN_DIR ...] [--json OUT]``. Every figure comes from the runs' results.json (each member's own official
figures); ``--json OUT`` also writes each run's per-member scores, from which every cell recomputes."""

import json
import os
import sys

import numpy as np
from scipy.stats import hmean

from asd_jax.evaluate.tables import markdown_table, mean_pm

FIGURES = ("auc_source", "auc_target", "pauc")


def member_scores(run_dir: str) -> tuple[list[str], dict[str, list[float]], list[float]]:
    """(types, per type each member's official score, each member's official score over all types)."""
    with open(os.path.join(run_dir, "summary.json")) as handle:
        types = json.load(handle)["machine_types"]
    per_type, flat = {}, None
    for machine_type in types:
        with open(os.path.join(run_dir, machine_type, "results.json")) as handle:
            members = [m for m in json.load(handle)["members"] if not m.get("diverged")]
        per_type[machine_type] = [m["official"]["official_score"] for m in members]
        figures = [[s[key] for s in m["official"]["per_section"].values() for key in FIGURES] for m in members]
        flat = figures if flat is None else [a + b for a, b in zip(flat, figures)]
    return types, per_type, [float(hmean(f)) for f in flat]


def main(argv: list[str]) -> None:
    out = None
    if "--json" in argv:
        at = argv.index("--json")
        out, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    rows, types, saved = [], None, {}
    for run_dir in argv:
        types, per_type, overall = member_scores(run_dir)
        saved[os.path.basename(os.path.normpath(run_dir))] = {"run_dir": run_dir, "per_type": per_type,
                                                              "all_types": overall}
        cells = [mean_pm(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None) for v in
                 (*per_type.values(), overall)]
        rows.append([os.path.basename(os.path.normpath(run_dir)), str(len(overall)), *cells])
    print("\n".join(markdown_table(["method", "seeds", *types, "all types"], rows)))
    if out:
        with open(out, "w") as handle:
            json.dump({"figure": "official score (harmonic mean of AUC source, AUC target and pAUC) per member",
                       "runs": saved}, handle, indent=2)


if __name__ == "__main__":
    main(sys.argv[1:])
