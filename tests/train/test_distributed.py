"""``--distributed``: two processes on 127.0.0.1 (JAX's CPU collectives, gloo), two CPU devices each, give the figures
of one process; only process 0 writes run files; a distributed run resumes from its (multi-host) checkpoint; a
failing process ends both; the flags reach ``jax.distributed.initialize``."""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from asd_jax import distributed
from tests.conftest import compile_cache_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs launch.py with an audit hook that logs every file this process opens for writing, renames, truncates or
# removes under ASD_JAX_TEST_WATCH, outside checkpoint folders (Orbax's multi-host save writes there from every
# process by design). Logged as it happens: a process may end with os._exit.
_AUDITED_LAUNCH = r"""
import os, runpy, sys
watched = os.path.realpath(os.environ["ASD_JAX_TEST_WATCH"]) + os.sep
log_fd = os.open(os.environ["ASD_JAX_TEST_WRITES"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def note(event, path):
    try:
        path = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return
    if path.startswith(watched) and "checkpoints" not in path[len(watched):].split(os.sep):
        os.write(log_fd, f"{event} {path[len(watched):]}\n".encode())

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        if (any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)):
            note("write", args[0])
    elif event in ("os.rename", "os.remove", "os.truncate", "os.rmdir", "shutil.rmtree") and \
            isinstance(args[0], (str, bytes, os.PathLike)):
        note(event, args[0])
        if event == "os.rename":  # and os.replace: the file it makes
            note(event, args[1])

sys.addaudithook(hook)
sys.argv = [os.path.join(os.getcwd(), "launch.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

CONFIG_FILE = """
from tests.conftest import tiny_config


def get_config():
    return tiny_config("lstm", {data!r}, "", {cache!r}, epochs=2)
"""

# 2 learning rates x 3 seeds: 6 members, padded to 8 over the 4 devices of two processes (one group).
SWEEP_FILE = """
from asd_jax import experiment
from tests.conftest import tiny_config


def get_config():
    return tiny_config("lstm", {data!r}, "", {cache!r}, epochs=2)


def get_sweep():
    return experiment.product({{"lstm.train.learning_rate": [1e-3, 3e-3], "seed": [0, 1, 2]}})
"""


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _launch(tmp_path, name: str, args: list[str], workdir: str, processes: int = 1, devices: int = 1,
            cache: str | None = None, extra: dict[int, list[str]] | None = None, timeout: float = 240):
    """Run launch.py as ``processes`` processes (``--distributed`` when several) with ``devices`` CPU devices
    each; returns per process (exit code, log text, audited writes)."""
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "ASD_JAX_TEST_WATCH": workdir, "PYTHONUNBUFFERED": "1", **(compile_cache_env(cache) if cache else {})}
    running = []
    for index in range(processes):
        command = [sys.executable, "-c", _AUDITED_LAUNCH, *args, *(extra or {}).get(index, [])]
        if processes > 1:
            command += ["--distributed", f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                        f"--process_id={index}"]
        log_path, writes_path = tmp_path / f"{name}.{index}.log", tmp_path / f"{name}.{index}.writes"
        writes_path.write_text("")
        log = open(log_path, "w")
        running.append((subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env={**env, "ASD_JAX_TEST_WRITES": str(writes_path)}), log, log_path,
                        writes_path))
    deadline = time.monotonic() + timeout
    outcomes = []
    for process, log, log_path, writes_path in running:
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other, *_ in running:
                other.kill()
            code = "timeout"
        log.close()
        outcomes.append((code, log_path.read_text(), writes_path.read_text().split("\n")[:-1]))
    return outcomes


def _ok(outcomes):
    for index, (code, text, _) in enumerate(outcomes):
        assert code == 0, f"process {index} ended with {code}:\n{text[-4000:]}"


def _scores(path: str) -> tuple[list[list[str]], np.ndarray]:
    """(the identifying columns, the member score columns) of a scores.csv."""
    with open(path) as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    first = header.index("score")
    return [row[:first] for row in body], np.array([[float(v) for v in row[first:]] for row in body])


def _figures(results: dict) -> dict:
    return {"mean": results["mean"], "ensemble": results["ensemble"], "per_id": results["per_id"],
            "members": [{k: m.get(k) for k in ("name", "auc", "pauc", "validation_error")} for m in results["members"]]}


def _assert_close(a, b, path="figures"):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{index}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), path
    else:
        assert a == b, path


def _curve_losses(workdir: str) -> np.ndarray:
    with open(os.path.join(workdir, "train_curve.jsonl")) as handle:
        return np.array([json.loads(line)["loss"] for line in handle])


# ----------------------------------------------------------------------------------------------------------------------
# The flags.


def test_initialize_gets_only_the_flags_given():
    assert distributed.initialize_args("127.0.0.1:1234", 2, 1) == {
        "coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1}
    assert distributed.initialize_args() == {}  # everything from the cluster's environment (SLURM, MPI, TPU)
    assert distributed.initialize_args(None, 4, None) == {"num_processes": 4}
    assert distributed.initialize_args("", None, 0) == {"process_id": 0}
    for bad in (("127.0.0.1", 2, 0), (None, 0, None), (None, 2, 2), (None, None, -1)):
        with pytest.raises(ValueError):
            distributed.initialize_args(*bad)


_FLAGS_SNIPPET = """
import json, sys
import jax
calls = []
jax.distributed.initialize = lambda **kwargs: calls.append(kwargs)
import launch
launch._main = lambda argv: print(json.dumps(calls))
launch.FLAGS(sys.argv)
launch.main(sys.argv)
"""


@pytest.mark.parametrize("flags, expected", [
    (["--distributed", "--coordinator_address=10.0.0.1:1234", "--num_processes=4", "--process_id=0"],
     [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 0}]),
    (["--distributed"], [{}]),
    ([], []),
])
def test_launch_passes_the_flags_to_jax_distributed_initialize(flags, expected):
    result = subprocess.run([sys.executable, "-c", _FLAGS_SNIPPET, "launch.py", *flags], cwd=REPO, text=True,
                            capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


# ----------------------------------------------------------------------------------------------------------------------
# Process 0 alone writes the run's files (a mocked process index, one real process).


def test_a_process_other_than_0_writes_no_run_file(tiny_dataset, jax_compile_cache, tmp_path, monkeypatch):
    from asd_jax import sweep

    path = tmp_path / "sweep_file.py"
    path.write_text(SWEEP_FILE.format(data=tiny_dataset, cache=str(tmp_path / "cache")))
    config = sweep.load(str(path)).get_config()
    config.sweep, config.workdir = str(path), str(tmp_path / "sweep")
    with config.unlocked():
        config.lstm.train.epochs = 1
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    summary = sweep.run(config)
    assert summary["groups"][0]["status"] == "done" and len(summary["settings"]) == 2
    written = [os.path.relpath(os.path.join(root, name), config.workdir)
               for root, _, names in os.walk(config.workdir) for name in names]
    # the checkpoints are every process's (Orbax); the file manifest that seals them is process 0's
    assert written and all(name.split(os.sep)[1] == "checkpoints" for name in written), written
    assert not any(name.endswith("asd_jax_files.json") for name in written)


# ----------------------------------------------------------------------------------------------------------------------
# Two real processes.


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
def test_two_processes_give_the_figures_of_one_and_only_process_0_writes(tiny_dataset, jax_compile_cache, tmp_path):
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(SWEEP_FILE.format(data=tiny_dataset, cache=str(tmp_path / "cache")))
    single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
    args = ["--mode=sweep", f"--sweep={sweep_file}", "--progress=false"]
    _ok(_launch(tmp_path, "single", [*args, f"--workdir={single_dir}"], single_dir, cache=jax_compile_cache))
    outcomes = _launch(tmp_path, "multi", [*args, f"--workdir={multi_dir}"], multi_dir, processes=2, devices=2,
                       cache=jax_compile_cache)
    _ok(outcomes)

    (group,) = [name for name in os.listdir(single_dir) if os.path.isdir(os.path.join(single_dir, name))]
    with open(os.path.join(single_dir, "sweep.json")) as a, open(os.path.join(multi_dir, "sweep.json")) as b:
        single_sweep, multi_sweep = json.load(a), json.load(b)
    for key in ("settings", "selected", "best_by_test"):
        _assert_close(single_sweep[key], multi_sweep[key], key)
    with open(os.path.join(single_dir, group, "results.json")) as a, \
            open(os.path.join(multi_dir, group, "results.json")) as b:
        _assert_close(_figures(json.load(a)), _figures(json.load(b)))
    for name in ("scores.csv", "validation_scores.csv"):
        single_rows, single_values = _scores(os.path.join(single_dir, group, name))
        multi_rows, multi_values = _scores(os.path.join(multi_dir, group, name))
        assert single_rows == multi_rows and single_values.shape == multi_values.shape == (len(single_rows), 7)
        np.testing.assert_allclose(multi_values, single_values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_curve_losses(os.path.join(multi_dir, group)),
                               _curve_losses(os.path.join(single_dir, group)), rtol=1e-5)
    assert sorted(os.listdir(multi_dir)) == sorted(os.listdir(single_dir))

    (_, _, primary_writes), (_, secondary_log, secondary_writes) = outcomes
    assert secondary_writes == [], secondary_writes  # process 1 wrote no run file and no table
    written = {line.split(" ", 1)[1] for line in primary_writes}
    assert {"sweep.csv", "sweep.md", "sweep.json", os.path.join(group, "results.json"),
            os.path.join(group, "scores.csv"), os.path.join(group, "config.json"),
            os.path.join(group, "normalizer.npz"), os.path.join(group, "train_curve.jsonl"), ".lock",
            os.path.join(group, ".lock")} <= written  # (the audit sees what process 0 writes)
    steps = os.path.join(multi_dir, group, "checkpoints", "2")
    assert os.path.isfile(os.path.join(steps, "asd_jax_files.json"))
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(os.path.join(steps, "default")))
    with open(os.path.join(steps, "default", "_sharding")) as handle:  # Orbax's record of each array's sharding
        meshes = [json.loads(entry)["device_mesh"]["mesh"] for entry in json.load(handle).values()]
    assert meshes and all(len(mesh) == 4 for mesh in meshes)  # the members lived on both processes' 4 devices
    assert "its standard output is dropped" in secondary_log


@pytest.mark.slow
def test_a_distributed_run_falls_back_past_a_damaged_checkpoint_and_resumes_as_one_process_trains(
        tiny_dataset, jax_compile_cache, tmp_path):
    """4 members over 4 devices (no padding: each process saves its own shards), 2 epochs; the checkpoint of epoch 2
    is damaged in process 1's shard files; continued to 3 epochs, both processes skip it, process 0 moves it aside,
    both resume from epoch 1's: the figures of 3 epochs on one process."""
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(CONFIG_FILE.format(data=tiny_dataset, cache=str(tmp_path / "cache")))
    single_dir, multi_dir = str(tmp_path / "single"), str(tmp_path / "multi")
    args = [f"--config={config_file}", "--num_seeds=4", "--progress=false"]
    _ok(_launch(tmp_path, "single", [*args, "--epochs=3", f"--workdir={single_dir}"], single_dir,
                cache=jax_compile_cache))
    outcomes = _launch(tmp_path, "multi2", [*args, "--epochs=2", f"--workdir={multi_dir}"], multi_dir, processes=2,
                       devices=2, cache=jax_compile_cache)
    _ok(outcomes)
    assert outcomes[1][2] == [], outcomes[1][2]
    with open(os.path.join(multi_dir, "train_curve.jsonl")) as handle:
        before = [json.loads(line) for line in handle]
    shards = os.path.join(multi_dir, "checkpoints", "2", "default", "ocdbt.process_1", "d")
    assert os.listdir(shards), "process 1 saved no shard of its own"
    target = max((os.path.join(shards, name) for name in os.listdir(shards)), key=os.path.getsize)
    with open(target, "r+b") as handle:  # same size, other bytes: only the file manifest's checksum sees it
        handle.seek(os.path.getsize(target) // 2)
        handle.write(b"\xff" * 8)

    outcomes = _launch(tmp_path, "multi3", [*args, "--epochs=3", f"--workdir={multi_dir}"], multi_dir, processes=2,
                       devices=2, cache=jax_compile_cache)
    _ok(outcomes)
    assert outcomes[1][2] == [], outcomes[1][2]
    assert "continuing the 2-epoch run to 3 epochs" in outcomes[0][1]
    assert all("skipping checkpoint" in text and "checksum mismatch" in text for _, text, _ in outcomes)
    (moved,) = os.listdir(os.path.join(multi_dir, "checkpoints", "corrupt"))
    assert moved.startswith("2-")
    with open(os.path.join(multi_dir, "train_curve.jsonl")) as handle:
        curve = [json.loads(line) for line in handle]
    assert [r["epoch"] for r in curve] == [1, 2, 3] and curve[0] == before[0]  # resumed after epoch 1
    assert curve[1]["seconds"] != before[1]["seconds"]  # epoch 2 trained again
    with open(os.path.join(single_dir, "results.json")) as a, open(os.path.join(multi_dir, "results.json")) as b:
        _assert_close(_figures(json.load(a)), _figures(json.load(b)))
    single_rows, single_values = _scores(os.path.join(single_dir, "scores.csv"))
    multi_rows, multi_values = _scores(os.path.join(multi_dir, "scores.csv"))
    assert single_rows == multi_rows
    np.testing.assert_allclose(multi_values, single_values, rtol=1e-5, atol=1e-6)
    losses = _curve_losses(multi_dir)
    assert losses.shape == (3, 4)
    np.testing.assert_allclose(losses, _curve_losses(single_dir), rtol=1e-5)


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
def test_a_failing_process_ends_every_process_with_a_clear_error(tiny_dataset, tmp_path):
    from asd_jax.runlock import RunLock

    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(CONFIG_FILE.format(data=tiny_dataset, cache=str(tmp_path / "cache")))
    args = [f"--config={config_file}", "--progress=false"]

    # process 1 is given other settings: both stop at once, before any training
    workdir = str(tmp_path / "settings")
    started = time.monotonic()
    outcomes = _launch(tmp_path, "settings", [*args, f"--workdir={workdir}"], workdir, processes=2, devices=2,
                       extra={1: ["--epochs=3"]}, timeout=120)
    assert [code for code, _, _ in outcomes] == [1, 1], [text[-2000:] for _, text, _ in outcomes]
    assert all("were given different settings" in text for _, text, _ in outcomes)
    assert time.monotonic() - started < 60

    # the run directory is in use: process 0 cannot lock it and ends; process 1, waiting for it, ends too
    workdir = str(tmp_path / "locked")
    os.makedirs(workdir)
    started = time.monotonic()
    with RunLock(workdir):
        outcomes = _launch(tmp_path, "locked", [*args, f"--workdir={workdir}"], workdir, processes=2, devices=2,
                           timeout=120)
    assert all(code != 0 and code != "timeout" for code, _, _ in outcomes), [t[-2000:] for _, t, _ in outcomes]
    assert "is in use by" in outcomes[0][1] and "process 0 of 2" in outcomes[0][1]
    assert time.monotonic() - started < 60
    assert os.listdir(workdir) == [".lock"]
