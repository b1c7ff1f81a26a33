"""Fault injection: each guarantee of the README's "What it guarantees" is proved here, on generated inputs only.

Bad input files mixed into a run; SIGKILL at random points of training and during a checkpoint save, then resume;
a corrupted latest checkpoint; two runs on one work dir; a diverging member; determinism; training longer in the
same work dir; the same for a sweep. The fast core runs in ``make test``; the rest is marked slow (``make test-slow``).
"""

import csv
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from asd_jax import pipeline, scoring, sweep
from asd_jax.runlock import LockHeldError, RunLock
from asd_jax.train.checkpoints import CheckpointError
from tests.conftest import compile_cache_env, tiny_config, write_wav

pytestmark = pytest.mark.usefixtures("jax_compile_cache")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAULT_LAUNCH = os.path.join(REPO, "tests", "reliability", "fault_launch.py")
TINY_FLAGS = [
    "--config.features.duration_s=1.0", "--config.features.n_mels=32", "--config.num_workers=1",
    "--config.lstm.hidden_size=8", "--config.lstm.frames=3", "--config.lstm.train.batch_size=8",
    "--config.lstm.train.windows_per_clip=2", "--config.lstm.train.steps_per_call=4", "--progress=false",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("reliability_cache"))


def scores_text(workdir) -> str:
    with open(os.path.join(workdir, "scores.csv")) as handle:
        return handle.read()


def run_tiny(data_dir, workdir, cache_dir, epochs=2, **changes) -> dict:
    config = tiny_config("lstm", data_dir, str(workdir), cache_dir, epochs=epochs)
    for key, value in changes.items():
        config[key] = value
    return pipeline.train_and_evaluate(config)


def launch_command(data_dir, workdir, epochs, *extra) -> list[str]:
    return [sys.executable, FAULT_LAUNCH, "--method=lstm", f"--data_dir={data_dir}", f"--workdir={workdir}",
            f"--epochs={epochs}", *TINY_FLAGS, *extra]


def subprocess_env(tmp_path, jax_compile_cache) -> dict:
    return {**os.environ, "ASD_JAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu",
            **compile_cache_env(jax_compile_cache)}


def finished_checkpoints(workdir) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder)
                  if n.isdigit() and os.path.exists(os.path.join(folder, n, "asd_jax_files.json")))


# ----------------------------------------------------------------------------------------------------------------------
# Bad input files, all mixed into one run: each is reported by name (skipped, converted or ignored), the run completes.


def _write_bad_files(train: str, test: str) -> dict[str, tuple[str, str]]:
    """{case: (path, outcome)}; outcome: "skipped" (listed with an error), "used" (converted and used, possibly
    with a warning), "warned" (used, with a warning naming it), "unmatched" (ignored: its name fits no pattern)."""
    cases = {}

    def bad(case, name, folder, outcome, writer):
        path = os.path.join(folder, name)
        writer(path)
        cases[case] = (path, outcome)

    def raw(content: bytes):
        return lambda path: open(path, "wb").write(content)

    def tone(seconds=1.0, rate=16_000, channels=1, subtype="PCM_16", amplitude=0.1):
        return lambda path: write_wav(path, seconds=seconds, rate=rate, channels=channels, subtype=subtype,
                                      amplitude=amplitude, seed=len(path))

    def truncated(path):
        write_wav(path, seconds=1.0, seed=5)
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)

    def nan_clip(path):
        data = np.full((16_000, 1), np.nan, np.float32)
        sf.write(path, data, 16_000, subtype="FLOAT")

    bad("empty", "normal_id_00_00000100.wav", train, "skipped", raw(b""))  # empty
    bad("truncated", "normal_id_00_00000101.wav", train, "skipped", truncated)
    bad("text", "normal_id_00_00000102.wav", train, "skipped", raw(b"this is text, not a wav file\n" * 40))
    bad("nan", "normal_id_00_00000103.wav", train, "skipped", nan_clip)
    bad("8bit", "normal_id_00_00000104.wav", train, "used", tone(subtype="PCM_U8"))
    bad("24bit", "normal_id_00_00000105.wav", train, "used", tone(subtype="PCM_24"))
    bad("32bit", "normal_id_00_00000106.wav", train, "used", tone(subtype="PCM_32"))
    bad("44k1", "normal_id_00_00000107.wav", train, "used", tone(rate=44_100))
    bad("stereo", "normal_id_00_00000108.wav", train, "used", tone(channels=2))
    bad("8ch", "normal_id_00_00000109.wav", train, "used", tone(channels=8))
    bad("short", "normal_id_00_00000110.wav", train, "warned", tone(seconds=0.3))  # tiled, warned
    bad("long", "normal_id_00_00000111.wav", train, "warned", tone(seconds=2.5))  # cropped, warned
    bad("silent", "normal_id_00_00000112.wav", train, "warned", tone(amplitude=0.0))  # dead microphone
    bad("test_broken", "anomaly_id_02_00000100.wav", test, "skipped", raw(b"RIFF\x00\x00"))  # broken test clip
    bad("misnamed", "recording_from_tuesday.wav", train, "unmatched", tone())  # misnamed
    return cases


@pytest.fixture(scope="module")
def bad_input_run(tiny_dataset, cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    data = str(root / "data")
    shutil.copytree(tiny_dataset, data)
    cases = _write_bad_files(os.path.join(data, "slider", "train"), os.path.join(data, "slider", "test"))
    handler = _Records()
    logging.getLogger().addHandler(handler)
    try:
        results = run_tiny(data, root / "run", cache_dir, epochs=1)
    finally:
        logging.getLogger().removeHandler(handler)
    return cases, results, handler.messages, str(root / "run")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


BAD_INPUTS = ("empty", "truncated", "text", "nan", "8bit", "24bit", "32bit", "44k1", "stereo", "8ch", "short",
              "long", "silent", "test_broken", "misnamed")


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_reported_by_name_and_the_rest_of_the_run_is_intact(case, bad_input_run):
    cases, results, messages, workdir = bad_input_run
    assert set(cases) == set(BAD_INPUTS)
    path, outcome = cases[case]
    skipped = {entry["file"]: entry.get("error", "") for entry in results["skipped_files"]}
    named = [m for m in messages if path in m]
    if outcome == "skipped":
        assert path in skipped and path in skipped[path], skipped  # the error names the file (and the fix)
    elif outcome == "unmatched":
        assert skipped.get(path) == "name fits no DCASE pattern" and named
    else:
        assert path not in skipped
        if outcome == "warned":
            assert named, f"no warning names {path}"
    # the run completed with every good clip: 5 readable + 8 converted train clips of id 00 beside the originals
    assert results["train_clips"] + results["validation"]["num_clips"] == 2 * 6 + 9
    rows = list(csv.DictReader(open(os.path.join(workdir, "scores.csv"))))
    assert len(rows) == 2 * 6 and all(np.isfinite(float(r["score"])) for r in rows)  # the broken 13th is skipped
    if case == "silent":
        assert [q["file"] for q in results["quiet_clips"]] == [path]


# ----------------------------------------------------------------------------------------------------------------------
# SIGKILL during training and during a checkpoint save -> resume -> the scores of an uninterrupted run.


@pytest.fixture(scope="module")
def straight_run(tiny_dataset, tmp_path_factory, jax_compile_cache):
    """An uninterrupted 6-epoch launch.py run (the reference every resumed run must equal)."""
    tmp_path = tmp_path_factory.mktemp("straight")
    workdir = str(tmp_path / "run")
    done = subprocess.run(launch_command(tiny_dataset, workdir, 6), cwd=REPO, capture_output=True, text=True,
                          env=subprocess_env(tmp_path, jax_compile_cache), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return workdir


def _kill_and_resume(tiny_dataset, tmp_path, jax_compile_cache, kill_after_s: float | None = None,
                     kill_in_save: int | None = None) -> str:
    workdir = str(tmp_path / "killed")
    env = subprocess_env(tmp_path, jax_compile_cache)
    extra = [f"--kill_in_save={kill_in_save}"] if kill_in_save else []
    process = subprocess.Popen(launch_command(tiny_dataset, workdir, 6, *extra), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after_s is not None:
        deadline = time.monotonic() + 240
        while not os.path.exists(os.path.join(workdir, "train_curve.jsonl")) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)  # training has begun: now wait the random delay
        time.sleep(kill_after_s)
        process.send_signal(signal.SIGKILL)
    code = process.wait(timeout=240)
    assert code == -signal.SIGKILL, f"the run ended with {code} before it was killed"
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    done = subprocess.run(launch_command(tiny_dataset, workdir, 6), cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return workdir


def test_sigkill_during_a_checkpoint_save_then_resume_gives_identical_scores(straight_run, tiny_dataset, tmp_path,
                                                                             jax_compile_cache):
    workdir = _kill_and_resume(tiny_dataset, tmp_path, jax_compile_cache, kill_in_save=3)
    assert scores_text(workdir) == scores_text(straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_point_of_training_then_resume_gives_identical_scores(seed, straight_run, tiny_dataset,
                                                                                  tmp_path, jax_compile_cache):
    # a random point of the epochs after the first (the killer waits for the first epoch's curve line): a share of
    # the time the uninterrupted run spent on them, so the kill lands in training however fast the machine is
    with open(os.path.join(straight_run, "train_curve.jsonl")) as handle:
        seconds = [json.loads(line)["seconds"] for line in handle if line.strip()]
    delay = random.Random(seed).uniform(0.0, 0.9) * sum(seconds[1:])
    workdir = _kill_and_resume(tiny_dataset, tmp_path, jax_compile_cache, kill_after_s=delay)
    assert scores_text(workdir) == scores_text(straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("step", [1, 5])
def test_sigkill_during_the_first_and_a_late_save(step, straight_run, tiny_dataset, tmp_path, jax_compile_cache):
    workdir = _kill_and_resume(tiny_dataset, tmp_path, jax_compile_cache, kill_in_save=step)
    assert scores_text(workdir) == scores_text(straight_run)


# ----------------------------------------------------------------------------------------------------------------------
# A corrupted latest checkpoint.


def _corrupt(step_dir: str) -> list[str]:
    """Truncate every data file of a checkpoint step to half its size (a disk that filled up mid-write); returns
    their paths. (Orbax keeps copies of some data in files it never reads back: damaging only one file may leave
    the checkpoint intact.)"""
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(step_dir, "default"))
             for name in names if os.path.basename(root) == "d"]
    for path in files:
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
    return files


def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tiny_dataset, cache_dir, tmp_path, caplog):
    reference = tmp_path / "reference"
    run_tiny(tiny_dataset, reference, cache_dir, epochs=3)
    damaged = tmp_path / "damaged"
    shutil.copytree(reference, damaged)
    _corrupt(str(damaged / "checkpoints" / "3"))

    # scoring new clips with the damaged run: the older checkpoint is used, with a warning
    clip = os.path.join(tiny_dataset, "slider", "test", sorted(os.listdir(os.path.join(tiny_dataset, "slider",
                                                                                         "test")))[0])
    with caplog.at_level(logging.WARNING):
        rows = scoring.score_files(str(damaged), [clip], progress=False)
    assert rows[0]["decision"] in ("normal", "anomaly")
    assert any("skipping checkpoint" in r.getMessage() and "/3" in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_tiny(tiny_dataset, damaged, cache_dir, epochs=3)  # resumes from 2, trains epoch 3 again
    assert any("skipping checkpoint" in r.getMessage() for r in caplog.records)
    assert scores_text(damaged) == scores_text(reference)
    assert os.path.isdir(damaged / "checkpoints" / "corrupt")  # the damaged step is kept aside, not deleted

    for step in ("2", "3"):
        _corrupt(str(damaged / "checkpoints" / step))
    with pytest.raises(CheckpointError, match="no checkpoint in .* restores"):
        run_tiny(tiny_dataset, damaged, cache_dir, epochs=3)
    with pytest.raises(CheckpointError, match="no checkpoint in .* restores"):
        scoring.score_files(str(damaged), [clip], progress=False)


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
def test_launch_reports_an_unrestorable_run_in_one_line(tiny_dataset, tmp_path, jax_compile_cache):
    env = subprocess_env(tmp_path, jax_compile_cache)
    workdir = str(tmp_path / "run")
    assert subprocess.run(launch_command(tiny_dataset, workdir, 1), cwd=REPO, env=env, capture_output=True,
                          timeout=300).returncode == 0
    _corrupt(os.path.join(workdir, "checkpoints", "1"))
    done = subprocess.run(launch_command(tiny_dataset, workdir, 1), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    assert "error: no checkpoint in" in done.stderr and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------------------------------------------------
# Two runs on one work dir.


def test_a_second_run_on_a_busy_work_dir_stops_at_once_and_a_stale_lock_is_taken_over(tiny_dataset, cache_dir,
                                                                                       tmp_path, caplog):
    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from asd_jax.runlock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
                               str(workdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(LockHeldError, match=f"PID {holder.pid}") as error:
            run_tiny(tiny_dataset, workdir, cache_dir, epochs=1)
        assert time.monotonic() - started < 10 and os.uname().nodename in str(error.value)
        assert not os.path.exists(workdir / "train_curve.jsonl")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with caplog.at_level(logging.WARNING):
        run_tiny(tiny_dataset, workdir, cache_dir, epochs=1)
    assert any("stale lock" in r.getMessage() for r in caplog.records)
    with open(workdir / "train_curve.jsonl") as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1]


def test_a_sweep_directory_is_locked_too(tmp_path):
    with RunLock(str(tmp_path / "sweep")):
        config = tiny_config("lstm", "", "", "")
        config.sweep = os.path.join(REPO, "experiments", "sweeps", "smoke.py")
        config.workdir = str(tmp_path / "sweep")
        with pytest.raises(LockHeldError):
            sweep.run(config)


# ----------------------------------------------------------------------------------------------------------------------
# A diverging member; determinism; training longer.


def test_a_diverging_member_is_kept_out_of_the_ensemble_the_threshold_and_the_headline(tiny_dataset, cache_dir,
                                                                                       tmp_path):
    healthy = run_tiny(tiny_dataset, tmp_path / "healthy", cache_dir)
    config = tiny_config("lstm", tiny_dataset, str(tmp_path / "mixed"), cache_dir)
    mixed = pipeline.train_and_evaluate(config, axes={"lstm.train.learning_rate": [1e-3, 1e3]})
    assert mixed["members_diverged"] == ["lr1000_seed0"]
    assert [m.get("diverged", False) for m in mixed["members"]] == [False, True]
    # the healthy member alone decides the threshold and the headline figures (vmapped: equal to float tolerance)
    assert mixed["threshold"]["value"] == pytest.approx(healthy["threshold"]["value"], rel=1e-4)
    assert mixed["threshold"]["f1_anomaly"] == pytest.approx(healthy["threshold"]["f1_anomaly"])
    assert mixed["mean"]["auc"] == pytest.approx(healthy["mean"]["auc"])
    rows = list(csv.DictReader(open(tmp_path / "mixed" / "scores.csv")))
    assert float(rows[0]["score"]) == pytest.approx(float(rows[0]["score_lr0.001_seed0"]))
    assert "score_lr1000_seed0" in rows[0]  # its own column stays
    assert "diverged" in (tmp_path / "mixed" / "report.md").read_text()
    assert [s["diverged"] for s in mixed["settings"]] == [[], ["lr1000_seed0"]]


def test_the_same_command_twice_gives_identical_scores(tiny_dataset, cache_dir, tmp_path):
    run_tiny(tiny_dataset, tmp_path / "first", cache_dir)
    run_tiny(tiny_dataset, tmp_path / "second", cache_dir)
    assert scores_text(tmp_path / "first") == scores_text(tmp_path / "second")


def test_training_longer_in_the_same_work_dir_equals_a_longer_run(tiny_dataset, cache_dir, tmp_path):
    run_tiny(tiny_dataset, tmp_path / "extended", cache_dir, epochs=2)
    run_tiny(tiny_dataset, tmp_path / "extended", cache_dir, epochs=3)
    run_tiny(tiny_dataset, tmp_path / "fresh", cache_dir, epochs=3)
    assert scores_text(tmp_path / "extended") == scores_text(tmp_path / "fresh")
    with open(tmp_path / "extended" / "train_curve.jsonl") as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1, 2, 3]
    with pytest.raises(ValueError, match="other settings"):  # other changes are still refused
        run_tiny(tiny_dataset, tmp_path / "extended", cache_dir, epochs=3, val_fraction=0.3)
    with pytest.raises(ValueError, match=r"other settings \(lstm: lstm.train.epochs\)"):  # and fewer epochs
        run_tiny(tiny_dataset, tmp_path / "extended", cache_dir, epochs=2)


# ----------------------------------------------------------------------------------------------------------------------
# Sweeps: a corrupted group checkpoint (SIGKILL mid-sweep is in tests/test_sweep.py).


@pytest.mark.slow
def test_a_sweep_with_a_corrupted_group_checkpoint_resumes_to_the_same_figures(tiny_dataset, tmp_path):
    from tests.test_sweep import sweep_config, write_sweep

    path = write_sweep(tmp_path, "tiny", tiny_dataset, epochs=2)
    reference = sweep.run(sweep_config(path, str(tmp_path / "reference")))
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "reference", damaged)
    os.remove(damaged / "hidden12" / "results.json")  # the second group was running when its last save broke
    _corrupt(str(damaged / "hidden12" / "checkpoints" / "2"))
    resumed = sweep.run(sweep_config(path, str(damaged)))
    assert resumed["settings"] == reference["settings"]
