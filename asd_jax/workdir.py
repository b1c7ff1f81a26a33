"""The work directory of a run, sweep or benchmark: its default path, and whether a run already there may go on.

A run started again in the same work directory resumes from its checkpoint, so the directory's config decides what
may change: run-level settings (where and how it runs) may, and so may the number of epochs of a constant schedule
(the window stream is keyed by the step); anything else the run reads may not. These rules need the config's
sections and the method registry, so they live here rather than in :mod:`asd_jax.rundir`, which only names and
reads the files and is imported by the JAX-free evaluation.
"""

from __future__ import annotations

import json
import os

from asd_jax import config as config_lib
from asd_jax.config import RUN_LEVEL
from asd_jax.data import loading
from asd_jax.methods import registry
from asd_jax.rundir import RunDir


def sweep_name(path: str) -> str:
    """A sweep's name: its file's name without the folder and ``.py``."""
    return os.path.splitext(os.path.basename(path or ""))[0]


def default_workdir(config) -> str:
    """``config.workdir``, else by mode: ``runs/sweep_<sweep>`` (``--mode=sweep``), ``runs/bench_sweep_<sweep>``
    (``--mode=benchmark --sweep``), ``runs/<method>_<machine types>`` otherwise."""
    if config.workdir:
        return config.workdir
    sweep = sweep_name(config.get("sweep"))
    if config.mode == "sweep":
        return os.path.join("runs", f"sweep_{sweep}")
    if config.mode == "benchmark" and sweep:
        return os.path.join("runs", f"bench_sweep_{sweep}")
    machine_type = "-".join(loading.split_list(config.machine_type)) or config.machine_type
    return os.path.join("runs", f"{config.method}_{machine_type}")


def _comparable(config) -> dict:
    """What a resumed run must share with the one that started: the settings the run reads, without the run-level
    ones (sections of other methods do not matter)."""
    plain = config.to_dict()
    read = config_lib.sections_read(config)
    for key in list(plain):
        if key in RUN_LEVEL or (isinstance(plain[key], dict) and key not in read):
            plain.pop(key)
    return json.loads(json.dumps(plain, default=str))


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(run: RunDir, config, members: list[dict]) -> str:
    """A run directory with checkpoints or results may only be continued with the same settings and members, except
    for more epochs (constant schedule): the window stream is keyed by the step, so training on from the last
    checkpoint gives what a longer run from scratch gives. An "auto" channel is compared as the run's data
    resolved it. Returns a note when the run is extended, else ''."""
    if not os.path.exists(run.file(RunDir.CONFIG)) or not (run.has_checkpoints or run.finished):
        return ""
    config = config.copy_and_resolve_references()
    loading.resolve_channel(config, run.load_resolved().get("protocol"))
    previous, current = _flatten(_comparable(run.load_config())), _flatten(_comparable(config))
    changed = sorted(key for key in set(previous) | set(current) if previous.get(key) != current.get(key))
    method = registry.get(config.method)
    epochs = f"{method.section}.train.epochs"
    note = ""
    if epochs in changed and method.kind == "ensemble":
        before, after = previous.get(epochs), current.get(epochs)
        if isinstance(before, int) and isinstance(after, int) and after > before and \
                config[method.section].train.schedule == "constant":
            changed.remove(epochs)
            note = f"continuing the {before}-epoch run to {after} epochs"
    if run.load_resolved().get("members") != json.loads(json.dumps(members, default=str)):
        changed.append("members")
    if changed:
        shown = sorted({key.split(".")[0] for key in changed})
        raise ValueError(f"{run} holds a run with other settings ({', '.join(shown)}: {', '.join(changed[:5])}); "
                         "pass another --workdir, or delete that directory to start over (only more epochs, with a "
                         "constant schedule, continue a run)")
    return note
