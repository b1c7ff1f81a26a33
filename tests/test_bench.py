"""The benchmark runs and its JSON is consistent (no timing thresholds: speed is judged in `make bench`)."""

import json
import math

from asd_jax import bench
from asd_jax.config import get_config


def test_benchmark_json_is_complete_and_consistent(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PEAK_SIZES", (128,))
    config = get_config()
    config.method = "lstm,dense_ae"
    config.lstm.hidden_size = 8
    config.lstm.train.batch_size = 4
    config.lstm.train.steps_per_call = 2
    config.dense_ae.train.batch_size = 4
    config.dense_ae.train.steps_per_call = 2
    config.benchmark.ensemble_sizes = "1,2"
    config.benchmark.num_clips = 3
    config.benchmark.warmup_calls = 1
    config.benchmark.timed_calls = 1
    config.output = str(tmp_path / "bench.json")
    bench.run(config)
    output = json.loads((tmp_path / "bench.json").read_text())
    assert output["peak_flops_per_s"] > 0 and output["device"]
    assert [(r["method"], r["ensemble_size"]) for r in output["results"]] == [
        ("lstm", 1), ("lstm", 2), ("dense_ae", 1), ("dense_ae", 2)]
    for row in output["results"]:
        for key in ("windows_per_s_per_member", "windows_per_s_total", "step_time_s", "compile_time_s",
                    "flops_per_window", "flops_per_s", "share_of_peak"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        members_total = row["windows_per_s_per_member"] * row["ensemble_size"]
        assert math.isclose(row["windows_per_s_total"], members_total, rel_tol=1e-9)
        assert math.isclose(row["share_of_peak"], row["flops_per_s"] / output["peak_flops_per_s"], rel_tol=1e-9)
        assert math.isclose(row["flops_per_s"], row["flops_per_window"] * row["windows_per_s_total"], rel_tol=1e-9)


def test_lstm_flop_count_matches_the_hand_count():
    config = get_config()
    forward = 2 * 10 * 2 * (128 + 128) * 512 + 2 * 128 * 128
    assert bench.analytic_flops_per_window("lstm", config, 128) == 3 * forward  # about 15.8 MFLOP
