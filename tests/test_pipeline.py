"""The main job end to end on a tiny synthetic slider set: run directory contract, ensembles, broken clips, scoring
new files, resume after a killed process, the launch.py flags, and one run on the real slider id_00 clips."""

import logging
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from asd_jax import pipeline, scoring
from asd_jax import workdir as workdir_lib
from asd_jax.data import loading
from asd_jax.rundir import RunDir
from asd_jax.data.dcase import DatasetError
from tests.conftest import TINY_MACHINE_IDS, compile_cache_env, tiny_config

pytestmark = pytest.mark.usefixtures("jax_compile_cache")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = {"method", "machine_type", "data_dir", "num_seeds", "per_id", "mean", "threshold", "skipped_files"}
SEQUENCE = ("lstm", "gru_ae", "dense_ae")
NUM_TEST_CLIPS = len(TINY_MACHINE_IDS) * (3 + 3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("pipeline_cache"))


@pytest.fixture(scope="module")
def trained(tiny_dataset, cache_dir, tmp_path_factory):
    """``trained(method) -> (workdir, results)``: each method trained once per module on the tiny set."""
    runs = {}

    def run(method):
        if method not in runs:
            workdir = str(tmp_path_factory.mktemp(f"run_{method}"))
            runs[method] = workdir, pipeline.train_and_evaluate(tiny_config(method, tiny_dataset, workdir, cache_dir))
        return runs[method]

    return run


def read_scores(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "scores.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def read_results(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as handle:
        return json.load(handle)


def list_test_clips(data_dir: str) -> list[str]:
    folder = os.path.join(data_dir, "slider", "test")
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".wav"))




# ----------------------------------------------------------------------------------------------------------------------
# The run directory contract.


@pytest.mark.parametrize("method", [*SEQUENCE, "logmel_ocsvm"])
def test_train_and_evaluate_writes_the_run_directory(method, trained, tiny_dataset):
    workdir, returned = trained(method)
    results = read_results(workdir)
    assert CONTRACT <= set(results)
    assert results["method"] == method and results["machine_type"] == "slider"
    assert results["data_dir"] == os.path.abspath(tiny_dataset)
    assert results["num_seeds"] == 1
    assert set(results["per_id"]) == set(TINY_MACHINE_IDS)
    for machine_id in TINY_MACHINE_IDS:
        figures = results["per_id"][machine_id]
        assert (figures["num_normal"], figures["num_anomaly"]) == (3, 3)
        assert 0.0 <= figures["auc"] <= 1.0 and 0.0 <= figures["pauc"] <= 1.0
    assert np.isfinite(results["mean"]["auc"]) and np.isfinite(results["threshold"]["value"])
    assert results["skipped_files"] == []
    assert returned["per_id"] == results["per_id"]

    rows = read_scores(workdir)
    assert list(rows[0]) == ["file", "machine_id", "section", "domain", "label", "score"]
    assert sorted(r["file"] for r in rows) == list_test_clips(tiny_dataset)  # one row per test clip
    for row in rows:
        assert row["machine_id"] in TINY_MACHINE_IDS and row["section"] == row["machine_id"] and row["domain"] == ""
        assert row["label"] == ("1" if os.path.basename(row["file"]).startswith("anomaly") else "0")
        assert np.isfinite(float(row["score"]))
    assert len({r["score"] for r in rows}) > 1

    for name in ("config.json", "threshold.json", "report.md"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "threshold.json")) as handle:
        saved_threshold = json.load(handle)
    assert saved_threshold["value"] == pytest.approx(results["threshold"]["value"])
    assert saved_threshold["per_unit"] is True and set(saved_threshold["units"]) == set(TINY_MACHINE_IDS)
    assert results["protocol"] == "dcase2020" and results["per_section"] is None
    with open(os.path.join(workdir, "config.json")) as handle:
        saved = json.load(handle)
    assert saved["config"]["method"] == method and saved["resolved"]["num_test_clips"] == NUM_TEST_CLIPS
    if method in SEQUENCE:
        assert os.path.isfile(os.path.join(workdir, "normalizer.npz"))
        checkpoints = os.path.join(workdir, "checkpoints")
        assert "2" in os.listdir(checkpoints)  # the last epoch
        with open(os.path.join(workdir, "train_curve.jsonl")) as handle:
            assert [json.loads(line)["epoch"] for line in handle] == [1, 2]
        assert results["members_frozen"] == [] and results["train_clips"] == 10
    else:
        assert os.path.isfile(os.path.join(workdir, "ocsvm.pkl"))
        assert sum(row["selected"] for row in results["ocsvm"]["grid"]) == 1


def test_num_seeds_three_gives_three_members(tiny_dataset, cache_dir, tmp_path):
    config = tiny_config("lstm", tiny_dataset, str(tmp_path), cache_dir)
    config.num_seeds = 3
    results = pipeline.train_and_evaluate(config)
    saved = read_results(str(tmp_path))
    names = ["seed0", "seed1", "seed2"]
    assert saved["num_seeds"] == 3 == results["num_seeds"]
    assert [m["name"] for m in saved["members"]] == names
    assert set(saved["std"]) >= {"auc", "pauc"} and set(saved["ensemble"]["per_id"]) == set(TINY_MACHINE_IDS)
    rows = read_scores(str(tmp_path))
    assert list(rows[0]) == ["file", "machine_id", "section", "domain", "label", "score",
                             *(f"score_{n}" for n in names)]
    assert len(rows) == NUM_TEST_CLIPS
    for row in rows:
        members = [float(row[f"score_{n}"]) for n in names]
        assert np.all(np.isfinite(members))
        assert float(row["score"]) == pytest.approx(np.mean(members), rel=1e-6)
    # the members differ (own seed: own initialisation and window draws)
    assert len({row["score_seed0"] for row in rows} & {row["score_seed1"] for row in rows}) == 0
    member_aucs = [m["mean"]["auc"] for m in saved["members"]]
    assert saved["mean"]["auc"] == pytest.approx(np.mean(member_aucs))


# ----------------------------------------------------------------------------------------------------------------------
# Bad data.


def test_broken_clips_are_skipped_and_listed(tiny_dataset, cache_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(tiny_dataset, data)
    broken_train = os.path.join(data, "slider", "train", "normal_id_00_00000001.wav")
    broken_test = os.path.join(data, "slider", "test", "anomaly_id_02_00000000.wav")
    for path in (broken_train, broken_test):
        with open(path, "wb") as handle:
            handle.write(b"this is not a wav file" * 50)
    workdir = str(tmp_path / "run")
    results = pipeline.train_and_evaluate(tiny_config("lstm", data, workdir, cache_dir))
    saved = read_results(workdir)
    skipped = {entry["file"]: entry["error"] for entry in saved["skipped_files"]}
    assert set(skipped) == {broken_train, broken_test}
    assert all(skipped.values())
    assert [e["file"] for e in results["skipped_files"]] == [e["file"] for e in saved["skipped_files"]]
    rows = read_scores(workdir)
    assert len(rows) == NUM_TEST_CLIPS - 1 and broken_test not in {r["file"] for r in rows}
    assert saved["per_id"]["02"]["num_anomaly"] == 2 and saved["per_id"]["00"]["num_anomaly"] == 3
    assert all(np.isfinite(float(r["score"])) for r in rows)
    assert saved["train_clips"] + saved["validation"]["num_clips"] == 2 * 6 - 1


def test_empty_train_folder_names_the_expected_folder(tiny_dataset, cache_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(tiny_dataset, data)
    train_folder = os.path.join(data, "slider", "train")
    for name in os.listdir(train_folder):
        os.remove(os.path.join(train_folder, name))
    with pytest.raises(DatasetError, match="no train clips") as error:
        pipeline.train_and_evaluate(tiny_config("lstm", data, str(tmp_path / "run"), cache_dir))
    assert train_folder in str(error.value)
    assert not os.path.exists(tmp_path / "run" / "results.json")


# ----------------------------------------------------------------------------------------------------------------------
# Scoring new recordings with a trained run.


@pytest.mark.parametrize("method", ["lstm", "logmel_ocsvm"])
def test_score_files_matches_the_test_scores_of_the_run(method, trained, tiny_dataset, tmp_path):
    workdir, _ = trained(method)
    expected = {row["file"]: float(row["score"]) for row in read_scores(workdir)}
    clips = list_test_clips(tiny_dataset)[::3]
    bad = str(tmp_path / "normal_id_00_99999999.wav")
    with open(bad, "wb") as handle:
        handle.write(b"\x00garbage" * 64)
    missing = str(tmp_path / "missing.wav")
    output = str(tmp_path / "scores.json")
    rows = scoring.score_files(workdir, [clips[0], bad, *clips[1:], missing], output=output, progress=False)

    with open(os.path.join(workdir, "threshold.json")) as handle:
        saved = json.load(handle)
    threshold = saved["value"]
    scored = {row["file"]: row for row in rows if "error" not in row}
    assert set(scored) == set(clips)
    for path, row in scored.items():
        assert row["score"] == pytest.approx(expected[path], rel=1e-5, abs=1e-6)
        unit = os.path.basename(path).split("_")[2]  # {normal|anomaly}_id_XX_...: each clip gets its id's threshold
        assert row["threshold"] == saved["units"][unit]["value"] and row["threshold_unit"] == unit
        assert row["decision"] == ("anomaly" if row["score"] > row["threshold"] else "normal")
    errors = {row["file"]: row["error"] for row in rows if "error" in row}
    assert set(errors) == {bad, missing} and all(errors.values())
    with open(output) as handle:
        written = json.load(handle)
    assert written["method"] == method and written["threshold"]["value"] == threshold
    assert written["clips"] == json.loads(json.dumps(rows))


def test_score_files_needs_a_trained_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        scoring.score_files(str(tmp_path), ["a.wav"], progress=False)
    with pytest.raises(ValueError, match="wav files"):
        scoring.score_files(str(tmp_path), [], progress=False)


def test_a_run_directory_resumes_only_with_the_same_settings(trained, tiny_dataset, cache_dir):
    workdir, _ = trained("lstm")
    config = tiny_config("lstm", tiny_dataset, workdir, cache_dir)
    config.lock()  # as launch.py's config is: the lock state is no setting
    run = pipeline.RunDir(workdir)
    members = [m.describe() for m in pipeline.plain_group(config).members]
    config.progress = True  # run-level settings may change
    workdir_lib.check_resumable(run, config, members)
    for path, value in [("lstm.hidden_size", 16), ("features.n_mels", 64)]:
        changed = tiny_config("lstm", tiny_dataset, workdir, cache_dir)
        *parents, leaf = path.split(".")
        node = changed
        for parent in parents:
            node = node[parent]
        node[leaf] = value
        with pytest.raises(ValueError, match=f"other settings \\({path.split('.')[0]}:"):
            workdir_lib.check_resumable(run, changed, members)
    two_seeds = [m.describe() for m in pipeline.plain_group(config.copy_and_resolve_references()).members] * 2
    with pytest.raises(ValueError, match="other settings \\(members:"):
        workdir_lib.check_resumable(run, config, two_seeds)


# ----------------------------------------------------------------------------------------------------------------------
# launch.py: resume after SIGKILL, and the flags.

LAUNCH_OVERRIDES = [
    "--config.features.duration_s=1.0", "--config.features.n_mels=32", "--config.num_workers=1",
    "--config.lstm.hidden_size=8", "--config.lstm.frames=3", "--config.lstm.train.batch_size=8",
    "--config.lstm.train.windows_per_clip=2", "--config.lstm.train.steps_per_call=4",
]


def _launch_command(data_dir: str, workdir: str, epochs: int) -> list[str]:
    return [sys.executable, os.path.join(REPO, "launch.py"), "--method=lstm", f"--data_dir={data_dir}",
            f"--workdir={workdir}", f"--epochs={epochs}", "--progress=false", *LAUNCH_OVERRIDES]


def _finished_checkpoints(workdir: str) -> list[int]:
    """Steps whose checkpoint is sealed: Orbax committed ``checkpoints/<step>`` and its file manifest is written."""
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()
                  and os.path.exists(os.path.join(folder, name, "asd_jax_files.json")))


def _curve(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "train_curve.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
def test_resume_after_sigkill_gives_the_scores_of_an_uninterrupted_run(tiny_dataset, jax_compile_cache, tmp_path):
    epochs = 12
    env = {**os.environ, "ASD_JAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu",
           **compile_cache_env(jax_compile_cache)}
    killed_dir, straight_dir = str(tmp_path / "killed"), str(tmp_path / "straight")

    def launch(workdir, log_name):
        log = open(tmp_path / log_name, "w")
        return subprocess.Popen(_launch_command(tiny_dataset, workdir, epochs), cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT), log

    def finish(process, log, timeout=240):
        try:
            code = process.wait(timeout=timeout)
        finally:
            log.close()
        return code

    # the uninterrupted run goes first (it also fills the feature and compilation caches)
    process, log = launch(straight_dir, "straight.log")
    assert finish(process, log) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    process, log = launch(killed_dir, "killed.log")
    deadline = time.monotonic() + 240
    while not _finished_checkpoints(killed_dir) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    code = finish(process, log)
    assert code == -signal.SIGKILL, f"the run ended (code {code}) before it could be killed: raise epochs\n" + \
        (tmp_path / "killed.log").read_text()[-3000:]
    assert not os.path.exists(os.path.join(killed_dir, "results.json"))
    last = _finished_checkpoints(killed_dir)[-1]
    assert 1 <= last < epochs
    before = _curve(killed_dir)

    process, log = launch(killed_dir, "resumed.log")
    assert finish(process, log) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    curve = _curve(killed_dir)
    assert [r["epoch"] for r in curve] == list(range(1, epochs + 1))
    assert curve[:last] == before[:last]  # resumed: the epochs up to the checkpoint were not trained again
    assert _finished_checkpoints(killed_dir)[-1] == epochs

    with open(os.path.join(killed_dir, "scores.csv")) as a, open(os.path.join(straight_dir, "scores.csv")) as b:
        resumed, straight = a.read(), b.read()
    assert resumed.count("\n") == NUM_TEST_CLIPS + 1
    assert resumed == straight  # bitwise: the scores are written with repr()
    assert read_results(killed_dir)["threshold"] == read_results(straight_dir)["threshold"]
    assert [r["loss"] for r in curve] == [r["loss"] for r in _curve(straight_dir)]


_FLAGS_SNIPPET = """
import json, sys
import launch
launch.FLAGS(sys.argv)
try:
    config, axes = launch.resolve_config()
    print(json.dumps({"config": json.loads(config.to_json()), "axes": axes}))
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
"""


def _resolve_flags(*flags: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _FLAGS_SNIPPET, *flags], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
def test_launch_flags_map_into_the_config():
    resolved = _resolve_flags("--method=lstm", "--epochs=7", "--learning_rate=1e-3,3e-4", "--machine_ids=00,02",
                              "--num_seeds=2", "--seed=5", "--batch_size=32", "--data_dir=/data/x",
                              "--test_data_dir=/data/y", "--workdir=/runs/z", "--threshold_policy=gamma_fit",
                              "--progress=false", "--config.lstm.hidden_size=64", "--config.gru_ae.train.epochs=3")
    config = ml_collections.ConfigDict(resolved["config"])
    assert config.method == "lstm"
    assert config.lstm.train.epochs == 7 and config.lstm.train.batch_size == 32
    assert config.gru_ae.train.epochs == 3 and config.dense_ae.train.epochs == 100  # other sections untouched
    assert resolved["axes"] == {"lstm.train.learning_rate": [1e-3, 3e-4]}
    assert config.machine_ids == "00,02"
    assert (config.num_seeds, config.seed) == (2, 5)
    assert (config.data_dir, config.test_data_dir, config.workdir) == ("/data/x", "/data/y", "/runs/z")
    assert config.threshold.policy == "gamma_fit" and config.progress is False
    assert config.lstm.hidden_size == 64
    members = pipeline.plain_group(config, resolved["axes"]).members
    assert [(m.seed, m.member().values["learning_rate"]) for m in members] == [(5, 1e-3), (6, 1e-3), (5, 3e-4),
                                                                               (6, 3e-4)]
    assert [m.name for m in members] == ["lr0.001_seed5", "lr0.001_seed6", "lr0.0003_seed5", "lr0.0003_seed6"]

    resolved = _resolve_flags("--method=gru_ae", "--epochs=4")
    config = ml_collections.ConfigDict(resolved["config"])
    assert config.gru_ae.train.epochs == 4 and config.lstm.train.epochs == 10
    assert len(pipeline.plain_group(config, resolved["axes"]).members) == 1

    refused = _resolve_flags("--method=logmel_ocsvm", "--epochs=4")
    assert refused["error"] == "UsageError" and "trained on windows" in refused["message"]


def test_config_files_and_overrides():
    resolved = _resolve_flags(f"--config={os.path.join(REPO, 'experiments', 'configs', 'dcase_baseline.py')}",
                              "--config.dense_ae.train.epochs=3", "--machine_ids=00")
    config = ml_collections.ConfigDict(resolved["config"])
    assert config.method == "dense_ae" and config.dense_ae.train.epochs == 3 and config.machine_ids == "00"
    done = subprocess.run([sys.executable, "-c", _FLAGS_SNIPPET, "--config.lstm.no_such_setting=3"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no_such_setting" in done.stderr  # a setting that does not exist is refused


# ----------------------------------------------------------------------------------------------------------------------
# Real recordings.


def test_lstm_on_the_real_slider_id00_clips(realdata, tmp_path, capsys):
    train_root = os.path.join(realdata, "dcase2020t2_dev_zyy438")
    test_root = os.path.join(realdata, "dcase2020t2_dev_mamisoa")
    if not os.path.isdir(os.path.join(train_root, "slider", "train")) or not os.path.isdir(
            os.path.join(test_root, "slider")):
        pytest.skip("the real slider id_00 clips are not there")
    config = tiny_config("lstm", train_root, str(tmp_path / "run"), str(tmp_path / "cache"))
    config.test_data_dir = test_root
    config.machine_ids = "00"
    config.num_workers = 0
    config.features.duration_s, config.features.n_mels = 10.0, 128  # the real clips as DCASE uses them
    config.lstm.hidden_size, config.lstm.frames = 32, 10
    config.lstm.train.epochs, config.lstm.train.batch_size, config.lstm.train.windows_per_clip = 2, 64, 8
    results = pipeline.train_and_evaluate(config)

    with open(os.path.join(str(tmp_path / "run"), "config.json")) as handle:
        resolved = json.load(handle)["resolved"]
    rows = read_scores(str(tmp_path / "run"))
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    assert len(rows) == resolved["num_test_clips"] >= 2 and set(labels.tolist()) == {0, 1}
    assert np.all(np.isfinite(scores))
    assert all(r["machine_id"] == "00" for r in rows)
    assert results["skipped_files"] == [] and results["members_frozen"] == []
    assert resolved["num_fit_clips"] + resolved["num_validation_clips"] == 75
    auc = results["per_id"]["00"]["auc"]
    assert 0.0 <= auc <= 1.0
    with capsys.disabled():
        print(f"\nreal slider id_00 (lstm, hidden 32, 10 frames, 2 epochs): AUC {auc:.4f}, pAUC "
              f"{results['per_id']['00']['pauc']:.4f}; trained on {resolved['num_fit_clips']} clips "
              f"(+{resolved['num_validation_clips']} held out for the threshold) from {train_root}/slider/train; "
              f"tested on {int((labels == 0).sum())} normal + {int((labels == 1).sum())} anomalous clips from "
              f"{test_root}/slider; threshold {results['threshold']['value']:.4f}")


def test_the_auto_clip_length_keeps_the_real_12_s_toycar_clips_whole(realdata, tmp_path, caplog):
    """DCASE 2023's ToyCar clips last 12 s, its other types 10 s: ``features.duration_s=0`` (the default) takes each
    run's longest training clip, so nothing is cropped; the length is saved resolved in the run's config."""
    root = os.path.join(realdata, "dcase2023t2_dev_minchala")
    if not os.path.isdir(os.path.join(root, "ToyCar", "train")):
        pytest.skip("the real DCASE 2023 ToyCar clips are not there")
    frames = {}
    for machine_type, seconds in (("ToyCar", 12.0), ("fan", 10.0)):
        workdir = str(tmp_path / machine_type)
        config = tiny_config("logmel_knn", root, workdir, str(tmp_path / "cache"))
        config.machine_type, config.features.duration_s = machine_type, 0.0
        with caplog.at_level(logging.WARNING):
            results = pipeline.train_and_evaluate(config)
        saved = RunDir(workdir).load_config()
        assert saved.features.duration_s == seconds
        assert results["skipped_files"] == [] and "samples instead of" not in caplog.text
        frames[machine_type] = loading.feature_config(saved).num_frames
    assert frames == {"ToyCar": 376, "fan": 313}


def test_asdkits_networks_train_one_model_over_every_real_2023_type(realdata, tmp_path):
    """``body=asdkit`` (7x7 stem, pre-activation blocks, three wide spectrum convolutions over every FFT bin) on the
    real DCASE 2023 clips of ``../shared/realdata/dcase2023t2_dev_minchala``: one model over its 7 types reads the
    whole clip (1 s here) and every type gets finite scores and its figures (on one or two test clips each: a check
    that real recordings run through, not a benchmark)."""
    root = os.path.join(realdata, "dcase2023t2_dev_minchala")
    if not os.path.isdir(os.path.join(root, "ToyCar", "train")):
        pytest.skip("the real DCASE 2023 clips are not there")
    workdir = str(tmp_path / "run")
    config = tiny_config("id_classifier", root, workdir, str(tmp_path / "cache"), epochs=1)
    config.machine_type = "all"
    section = config.id_classifier
    assert (section.body, section.spectrum_pool) == ("asdkit", 1)  # the defaults
    section.frames, section.squeeze_excite = 0, True  # the whole clip and SE, as the default (not the test settings)
    summary = pipeline.train_and_evaluate(config)
    types = ["ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"]
    assert summary["joint"] and sorted(summary["machine_types"]) == sorted(types)
    assert RunDir(workdir).load_config().id_classifier.frames == 32  # the whole 1-s clip
    for machine_type in types:
        rows = read_scores(os.path.join(workdir, machine_type))
        assert rows and all(np.isfinite(float(r["score"])) for r in rows)
        score = summary["per_type"][machine_type]["official_score"]
        if {r["label"] for r in rows} == {"0", "1"}:  # AUC needs both classes among the type's test clips
            assert 0.0 <= score <= 1.0
        else:
            assert score is None
