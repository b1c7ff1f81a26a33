"""Sweeps: points -> members -> groups (one compiled program each) -> settings; sweep.json recomputed from the
groups' scores.csv; resume after a stop and after SIGKILL; settings that nothing reads are refused."""

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd_jax import experiment, sweep
from asd_jax.config import get_config
from tests.conftest import compile_cache_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "experiments", "sweeps", "smoke.py")

# A sweep file over the tiny test data set: hidden size {8, 12} x learning rate {1e-3, 3e-3} x seeds.
TINY_SWEEP = """
from asd_jax import experiment
from tests.conftest import tiny_config

SEEDS = {seeds}


def get_config():
    config = tiny_config("lstm", {data!r}, "", {cache!r}, epochs={epochs})
    return config


def get_sweep():
    return experiment.product({{"lstm.hidden_size": [8, 12], "lstm.train.learning_rate": [1e-3, 3e-3],
                               "seed": SEEDS}})
"""


def write_sweep(tmp_path, name: str, data: str, seeds=(0, 1), epochs: int = 1) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(TINY_SWEEP.format(seeds=list(seeds), data=data, cache=str(tmp_path / "cache"), epochs=epochs))
    return str(path)


def sweep_config(path: str, workdir: str):
    module = sweep.load(path)
    config = module.get_config()
    config.sweep, config.workdir = path, workdir
    return config


# ----------------------------------------------------------------------------------------------------------------------
# Declaring, expanding and grouping (no training).


def test_the_smoke_sweep_is_two_groups_four_settings_eight_members():
    module = sweep.load(SMOKE)
    members = experiment.expand(module.get_config(), module.get_sweep())
    groups = experiment.group(members)
    assert len(members) == 8 and len({m.name for m in members}) == 8
    assert len(experiment.unique(m.setting for m in members)) == 4
    assert [g.name for g in groups] == ["hidden16", "hidden32"]
    assert [len(g.members) for g in groups] == [4, 4]
    first = groups[0].members
    assert [m.name for m in first] == ["hidden16_lr0.001_seed0", "hidden16_lr0.001_seed1", "hidden16_lr0.003_seed0",
                                       "hidden16_lr0.003_seed1"]
    assert [m.member().values["learning_rate"] for m in first] == [1e-3, 1e-3, 3e-3, 3e-3]
    assert all(m.config.lstm.hidden_size == 16 for m in first)


def test_shape_free_values_share_a_group_and_shapes_do_not():
    base = get_config()
    base.method = "lstm"
    points = experiment.chain(
        experiment.product({"lstm.train.weight_decay": [0.0, 1e-3], "lstm.train.grad_clip_norm": [0.0, 1.0]}),
        [{"lstm.frames": 5}, {"lstm.train.epochs": 3}, {"lstm.train.batch_size": 32}])
    with pytest.raises(ValueError, match="not read by optimizer=adam"):  # weight decay needs adamw
        experiment.expand(base, points)
    base.lstm.train.optimizer = "adamw"
    groups = experiment.group(experiment.expand(base, points))
    assert [len(g.members) for g in groups] == [4, 1, 1, 1]  # the step count and the batch shape split groups
    assert [g.name for g in groups][1:] == ["frames5", "epochs3", "batch32"]


def test_a_setting_that_nothing_reads_is_refused():
    base = get_config()
    base.method = "lstm"
    with pytest.raises(ValueError, match="'gru_ae.hidden_size' is not read by method 'lstm'"):
        experiment.expand(base, experiment.product({"gru_ae.hidden_size": [8, 16]}))
    with pytest.raises(ValueError, match="read by optimizer=sgd only"):
        experiment.expand(base, [{"lstm.train.momentum": 0.5}])
    with pytest.raises(ValueError, match="no such setting"):
        experiment.expand(base, [{"lstm.hidden": 8}])
    with pytest.raises(ValueError, match="same member twice"):
        experiment.expand(base, [{"seed": 1}, {"seed": 1}])
    with pytest.raises(ValueError, match="give a list of values"):
        experiment.product({"seed": 3})


def test_a_method_axis_groups_by_method_and_ocsvm_members_are_one_group_each():
    base = get_config()
    points = experiment.product({"method": ["lstm", "logmel_ocsvm"], "seed": [0, 1]})
    groups = experiment.group(experiment.expand(base, points))
    assert [g.name for g in groups] == ["lstm", "logmel_ocsvm_seed0", "logmel_ocsvm_seed1"]
    assert [len(g.members) for g in groups] == [2, 1, 1]


# ----------------------------------------------------------------------------------------------------------------------
# Running a sweep.


def _read_scores(path: str) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _recompute(summary: dict, root: str) -> list[dict]:
    """Every setting's figures from the groups' scores.csv / validation_scores.csv, with sklearn."""
    group_of = {member: g["name"] for g in summary["groups"] for member in g["members"]}
    recomputed = []
    for setting in summary["settings"]:
        aucs, paucs, per_id, errors = [], [], {}, []
        for member in setting["members"]:
            rows = _read_scores(os.path.join(root, group_of[member], "scores.csv"))
            column = f"score_{member}" if f"score_{member}" in rows[0] else "score"
            member_auc, member_pauc = [], []
            for machine_id in sorted({r["machine_id"] for r in rows}):
                chosen = [r for r in rows if r["machine_id"] == machine_id]
                labels = [int(r["label"]) for r in chosen]
                scores = [float(r[column]) for r in chosen]
                member_auc.append(roc_auc_score(labels, scores))
                member_pauc.append(roc_auc_score(labels, scores, max_fpr=0.1))
                per_id.setdefault(machine_id, []).append(member_auc[-1])
            aucs.append(np.mean(member_auc))
            paucs.append(np.mean(member_pauc))
            held_out = _read_scores(os.path.join(root, group_of[member], "validation_scores.csv"))
            errors.append(np.mean([float(r[column]) for r in held_out]))
        recomputed.append({"auc_mean": np.mean(aucs), "auc_std": np.std(aucs, ddof=1), "pauc_mean": np.mean(paucs),
                           "pauc_std": np.std(paucs, ddof=1), "validation_error_mean": np.mean(errors),
                           "per_id": {k: np.mean(v) for k, v in per_id.items()}})
    return recomputed


@pytest.fixture(scope="module")
def finished_sweep(tiny_dataset, tmp_path_factory, jax_compile_cache):
    """The tiny sweep run once: (its directory, sweep.json, the programs JAX compiled meanwhile)."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    path = write_sweep(tmp_path, "tiny", tiny_dataset)
    root = str(tmp_path / "out")
    summary, compiled = _compiled_programs(lambda: sweep.run(sweep_config(path, root)))
    return root, summary, compiled


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        match = re.match(r"Compiling jit\((\w+)\)", record.getMessage())
        if match:
            self.names.append(match.group(1))


def _compiled_programs(function):
    """Run ``function`` with ``jax_log_compiles`` on: (its result, the name of every program JAX compiled)."""
    handler, logger = _Compiles(), logging.getLogger("jax._src.interpreters.pxla")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        result = function()
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    return result, handler.names


def test_a_sweep_writes_its_outputs_and_every_figure_can_be_recomputed(finished_sweep):
    root, summary, _ = finished_sweep
    on_disk = json.load(open(os.path.join(root, "sweep.json")))
    assert on_disk == json.loads(json.dumps(summary))
    assert [g["name"] for g in summary["groups"]] == ["hidden8", "hidden12"]
    assert all(g["status"] == "done" and g["compiles"] == 1 and len(g["members"]) == 4 for g in summary["groups"])
    assert len(summary["settings"]) == 4
    for name in ("sweep.csv", "sweep.md", "sweep_auc.png"):
        assert os.path.getsize(os.path.join(root, name)) > 0, name
    for group in summary["groups"]:  # every group is an ordinary run directory with a column per member
        header = _read_scores(os.path.join(root, group["name"], "scores.csv"))[0]
        assert [k for k in header if k.startswith("score_")] == [f"score_{m}" for m in group["members"]]
        assert os.path.isdir(os.path.join(root, group["name"], "tensorboard", group["members"][0]))
    for figures, recomputed in zip(summary["settings"], _recompute(summary, root)):
        assert len(figures["seeds"]) == 2
        for key in ("auc_mean", "auc_std", "pauc_mean", "pauc_std", "validation_error_mean"):
            assert figures[key] == pytest.approx(recomputed[key], rel=1e-6, abs=1e-9), key
        for machine_id, auc in recomputed["per_id"].items():
            assert figures["per_id"][machine_id]["auc_mean"] == pytest.approx(auc)
    errors = [s["validation_error_mean"] for s in summary["settings"]]
    assert errors == sorted(errors)  # sorted by the label-free criterion
    selected, best = summary["selected"], summary["best_by_test"]
    assert selected["test_tuned"] is False and selected["setting"] == summary["settings"][0]["setting"]
    assert best["test_tuned"] is True and best["auc_mean"] == max(s["auc_mean"] for s in summary["settings"])
    assert "TEST-TUNED" in open(os.path.join(root, "sweep.md")).read()


def test_one_training_program_per_group_whatever_the_member_count(finished_sweep, tiny_dataset, tmp_path):
    _, summary, compiled = finished_sweep
    assert compiled.count("train_steps") == len(summary["groups"]) == 2  # 8 members, 2 training programs
    assert [g["compiles"] for g in summary["groups"]] == [1, 1]
    path = write_sweep(tmp_path, "tiny_one_seed", tiny_dataset, seeds=(0,))
    fewer, compiled_fewer = _compiled_programs(lambda: sweep.run(sweep_config(path, str(tmp_path / "out"))))
    assert compiled_fewer.count("train_steps") == 2  # 4 members: the same two programs, each member axis shorter
    model_programs = ("train_steps", "member_scores", "init_one")
    assert sorted(n for n in compiled if n in model_programs) == sorted(n for n in compiled_fewer
                                                                          if n in model_programs)


def test_a_stopped_sweep_resumes_to_the_same_figures(finished_sweep, tiny_dataset, tmp_path):
    root, reference, _ = finished_sweep
    path = write_sweep(tmp_path, "tiny", tiny_dataset)
    out = str(tmp_path / "out")
    partial = sweep.run(sweep_config(path, out), stop_after_groups=1)
    assert [g["status"] for g in partial["groups"]] == ["done", "pending"]
    assert not os.path.exists(os.path.join(out, "sweep.md"))
    resumed = sweep.run(sweep_config(path, out))
    assert resumed["groups"][0].get("reused") is True and "reused" not in resumed["groups"][1]
    assert resumed["settings"] == reference["settings"]


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
def test_sigkill_mid_sweep_then_resume_gives_the_same_figures(finished_sweep, tiny_dataset, tmp_path,
                                                              jax_compile_cache):
    _, reference, _ = finished_sweep
    path = write_sweep(tmp_path, "tiny", tiny_dataset, epochs=1)
    out = str(tmp_path / "out")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **compile_cache_env(jax_compile_cache)}
    command = [sys.executable, os.path.join(REPO, "launch.py"), "--mode=sweep", f"--sweep={path}",
               f"--workdir={out}", "--progress=false"]
    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    first_done = os.path.join(out, "hidden8", "results.json")
    deadline = time.monotonic() + 240
    while not os.path.exists(first_done) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    log.close()
    assert not os.path.exists(os.path.join(out, "sweep.md"))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = json.load(open(os.path.join(out, "sweep.json")))
    assert [g["status"] for g in resumed["groups"]] == ["done", "done"]
    assert resumed["settings"] == json.loads(json.dumps(reference["settings"]))


def test_every_sweep_file_in_experiments_declares_valid_members():
    """Each shipped sweep loads, expands (every swept path exists and is read by its method) and groups."""
    folder = os.path.join(REPO, "experiments", "sweeps")
    files = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    assert {"smoke.py", "writeup.py", "id_classifier.py"} <= set(files)
    groups_of = {}
    for name in files:
        module = sweep.load(os.path.join(folder, name))
        members = experiment.expand(module.get_config(), module.get_sweep())
        groups_of[name] = experiment.group(members)
        assert members and sum(len(g.members) for g in groups_of[name]) == len(members), name
    # the id classifier's loss and augmentation are static: one group of 2 seeds each
    assert [len(g.members) for g in groups_of["id_classifier.py"]] == [2, 2, 2]
