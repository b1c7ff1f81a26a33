"""``--mode=benchmark --sweep=FILE``: what running a sweep as one program per group buys over separate runs.

    python launch.py --mode=benchmark --sweep=experiments/sweeps/smoke.py --output=bench_sweep.json

Two ways to get the same figures from the same members, on the same data and epochs, timed by the wall clock:

* **together**: ``--mode=sweep`` itself (:func:`asd_jax.sweep.run`): every group's members train in one compiled
  program, the data are read once per data setting;
* **separate**: each member as its own ``python -m asd_jax.bench_sweep`` process (``--mode=train`` of that member's
  config, one seed), one after another, as a user without the member axis would run them; each pays its own start,
  data read and compile.

The features are extracted into the cache before either is timed, so neither pays the extraction. The JSON also
holds each member's mean AUC both ways (they agree to float tolerance: the same seeds draw the same windows) and
the CPU / device, JAX version and load averages, since other processes slow both.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import jax

from asd_jax import experiment, pipeline, sweep, workdir
from asd_jax.data import loading
from asd_jax.bench import load_average, machine_facts
from asd_jax.rundir import RunDir

TOGETHER, SEPARATE = "together", "separate"


def run(config) -> dict:
    """Time ``config.sweep`` both ways; prints a table, writes the JSON to ``config.output`` (default
    ``<dir>/bench_sweep.json``) and returns it. ``<dir>`` (``--workdir``) is emptied first: a benchmark never
    resumes."""
    members = experiment.expand(config, sweep.load(config.sweep).get_sweep())
    groups = experiment.group(members)
    root = workdir.default_workdir(config)
    for part in (TOGETHER, SEPARATE):
        shutil.rmtree(os.path.join(root, part), ignore_errors=True)
    os.makedirs(os.path.join(root, SEPARATE), exist_ok=True)
    print(f"benchmark of sweep {workdir.sweep_name(config.sweep)}: {len(members)} members in {len(groups)} group(s); "
          f"directory {root}")
    for group in {loading.data_key(g.config): g for g in groups}.values():  # fill the feature cache, untimed
        loading.load_data(group.config)
    load_before = load_average()

    together_config = copy.deepcopy(config)
    with together_config.unlocked():
        together_config.mode, together_config.workdir = "sweep", os.path.join(root, TOGETHER)
    started = time.perf_counter()
    summary = sweep.run(together_config)
    together_s = time.perf_counter() - started

    separate = []
    for index, member in enumerate(members):
        print(f"\n== separate run {index + 1}/{len(members)}: {member.name} ==", flush=True)
        separate.append(_run_separately(member, os.path.join(root, SEPARATE, f"{index:03d}_{member.name}")))
    separate_s = sum(row["seconds"] for row in separate)

    together_auc = _member_aucs(os.path.join(root, TOGETHER), groups)
    for row, member in zip(separate, members):
        row["mean_auc_together"] = together_auc.get(member.name)
    diffs = [abs(row["mean_auc"] - row["mean_auc_together"]) for row in separate
             if row["mean_auc"] is not None and row["mean_auc_together"] is not None]
    output = {
        "sweep": config.sweep, "members": len(members),
        "groups": [{"name": r["name"], "members": len(r["members"]), "seconds": r["seconds"],
                    "compiles": r["compiles"]} for r in summary["groups"]],
        "together_s": together_s, "separate_s": separate_s, "speedup": separate_s / together_s,
        "separate": separate,
        "max_mean_auc_difference": max(diffs) if diffs else None,
        "note": "together: --mode=sweep, one compiled program per group, data read once; separate: one process "
                "per member (--mode=train, 1 seed), one after another, each with its own start, data read and "
                "compile; features cached before both",
        **machine_facts(jax.devices()[0], load_before),
    }
    print(format_table(output), flush=True)
    path = config.output or os.path.join(root, "bench_sweep.json")
    with open(path, "w") as handle:
        json.dump(output, handle, indent=2)
    print(f"wrote {path}")
    return output


def _run_separately(member: experiment.MemberSpec, workdir: str) -> dict:
    """Run one member as its own process; its wall time (start to exit) and mean AUC."""
    config = copy.deepcopy(member.config)
    with config.unlocked():
        config.mode, config.workdir, config.num_seeds, config.progress = "train", workdir, 1, False
    os.makedirs(workdir, exist_ok=True)
    config_path, log_path = os.path.join(workdir, "member_config.pkl"), os.path.join(workdir, "log.txt")
    with open(config_path, "wb") as handle:
        pickle.dump(config, handle)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call([sys.executable, "-m", "asd_jax.bench_sweep", config_path], stdout=log,
                               stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the separate run of member {member.name} failed (exit {code}); see {log_path}")
    results = RunDir(workdir).read_json(RunDir.RESULTS)
    return {"member": member.name, "seconds": seconds, "mean_auc": (results.get("mean") or {}).get("auc")}


def _member_aucs(together_dir: str, groups: list[experiment.Group]) -> dict[str, float]:
    """member name -> its mean AUC in the together run."""
    out = {}
    for group in groups:
        results = RunDir(os.path.join(together_dir, group.name)).read_json(RunDir.RESULTS)
        for member in results.get("members", []):
            out[member["name"]] = (member.get("mean") or {}).get("auc")
    return out


def format_table(output: dict) -> str:
    lines = [f"{'':10s} {'seconds':>9s}",
             f"{'together':10s} {output['together_s']:9.1f}  ({len(output['groups'])} program(s))",
             f"{'separate':10s} {output['separate_s']:9.1f}  ({output['members']} processes)",
             f"speed-up {output['speedup']:.2f}x; largest |mean AUC together - separate| "
             f"{output['max_mean_auc_difference']}",
             f"cpu: {output['cpu']} ({output['cpu_count']} CPUs, load average {output['load_average_before'][0]:.2f} "
             f"before / {output['load_average_after'][0]:.2f} after); device {output['device']}"]
    return "\n".join(lines)


def _main(config_path: str) -> None:
    """The separate run of one member: its pickled config, ``--mode=train``."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    with open(config_path, "rb") as handle:
        config = pickle.load(handle)
    pipeline.train_and_evaluate(config)


if __name__ == "__main__":
    _main(sys.argv[1])
