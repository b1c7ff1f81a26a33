"""The benchmark runs and its JSON is consistent; its FLOP counts match hand counts (no timing thresholds: speed is
judged in `make bench`)."""

import json
import math

import jax
import jax.numpy as jnp
import pytest

from asd_jax import bench
from asd_jax.config import get_config
from asd_jax.methods import registry
from asd_jax.train import ensemble

METHODS = registry.names("ensemble")


def _tiny_config(tmp_path):
    """Tiny models, features and batches: the whole benchmark runs in seconds."""
    config = get_config()
    config.method = ",".join(METHODS)
    config.features.duration_s = 0.5  # 16 frames
    config.features.n_mels = 8
    config.lstm.hidden_size, config.lstm.num_layers, config.lstm.frames = 8, 2, 3
    config.gru_ae.hidden_size, config.gru_ae.num_layers, config.gru_ae.frames = 8, 1, 4
    config.dense_ae.hidden_size, config.dense_ae.bottleneck, config.dense_ae.frames = 8, 2, 2
    config.id_classifier.frames, config.id_classifier.channels, config.id_classifier.embedding_dim = 8, "4,8", 8
    # the asdkit body's 7x7 stem needs more than these 8 mel bins
    config.id_classifier.body, config.id_classifier.spectrum_pool = "compact", 2
    for method in METHODS:
        config[method].train.batch_size = 4
        config[method].train.steps_per_call = 2
    config.benchmark.ensemble_sizes = "2"
    config.benchmark.num_clips = 3
    config.benchmark.warmup_calls = 1
    config.benchmark.timed_calls = 1
    config.output = str(tmp_path / "bench.json")
    return config


@pytest.mark.slow  # about a minute: `make test-slow` runs it
def test_benchmark_json_is_complete_and_consistent(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "PEAK_SIZES", (128,))
    returned = bench.run(_tiny_config(tmp_path))
    output = json.loads((tmp_path / "bench.json").read_text())
    assert output == json.loads(json.dumps(returned))
    assert "% peak" in capsys.readouterr().out
    assert output["device"] and output["jax_version"] == jax.__version__ and output["cpu_count"] >= 1
    assert output["timestamp"] and output["features_shape"] == [3, 16, 8]
    peak = output["peak_flops_per_s"]
    assert math.isfinite(peak) and peak > 0 and peak == max(output["peak_samples_flops_per_s"])
    assert [(r["method"], r["ensemble_size"]) for r in output["results"]] == [(method, 2) for method in METHODS]
    for row in output["results"]:
        for key in ("windows_per_s_per_member", "windows_per_s_total", "step_time_s", "step_time_best_s",
                    "compile_time_s", "flops_per_window", "flops_per_window_executed", "flops_per_s",
                    "flops_per_s_executed", "share_of_peak", "share_of_peak_executed"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["batch_size"] == 4 and row["steps_per_call"] == 2 and len(row["call_times_s"]) == 1
        assert row["step_time_best_s"] <= row["step_time_s"]
        windows = row["batch_size"] * row["ensemble_size"]
        assert math.isclose(row["windows_per_s_total"], row["windows_per_s_per_member"] * row["ensemble_size"],
                            rel_tol=1e-9)
        assert math.isclose(row["windows_per_s_total"], windows / row["step_time_s"], rel_tol=1e-9)
        assert math.isclose(row["flops_per_s"], row["flops_per_window"] * row["windows_per_s_total"], rel_tol=1e-9)
        assert math.isclose(row["share_of_peak"], row["flops_per_s"] / peak, rel_tol=1e-9)
        assert math.isclose(row["share_of_peak_executed"], row["flops_per_s_executed"] / peak, rel_tol=1e-9)
        # the step never runs more matmul FLOPs than forward + backward = 3x forward
        # a CNN's backward runs its strided convolutions transposed, over dilated inputs: counted larger
        slack = 1.35 if registry.get(row["method"]).labels else 1 + 1e-9
        assert row["flops_per_window_executed"] <= row["flops_per_window"] * slack
        if row["flops_per_window_xla"] is not None:
            assert row["flops_per_window_xla"] > 0


def test_lstm_flop_count_matches_the_hand_count():
    config = get_config()
    forward = 2 * 10 * 2 * (128 + 128) * 512 + 2 * 128 * 128
    assert registry.get("lstm").flops_per_window(config.lstm, 128) == 3 * forward  # about 15.8 MFLOP


def test_matmul_count_multiplies_loop_bodies_and_batch_dimensions():
    def program(x, w):
        y, _ = jax.lax.scan(lambda carry, _: (jnp.tanh(carry @ w), None), x, None, length=7)
        return jax.vmap(jnp.matmul, in_axes=(None, 0))(y, jnp.stack([w, w, w]))

    jaxpr = jax.make_jaxpr(program)(jnp.zeros((5, 4)), jnp.zeros((4, 4))).jaxpr
    assert bench.count_matmul_flops(jaxpr) == 7 * 2 * 5 * 4 * 4 + 3 * 2 * 5 * 4 * 4


@pytest.mark.parametrize("method", METHODS)
def test_executed_flops_of_the_default_step_are_close_to_the_model_count(method):
    """The traced default training step runs 3x-forward matmuls, less the work it can skip (first-layer input
    gradients, products with all-zero initial states)."""
    config = get_config()
    entry = registry.get(method)
    entry.resolve_config(config)  # the classifier's whole-clip frames=0 -> 313 for the default 10-s clips
    model = entry.window_model(config)
    train = config[method].train
    states = ensemble.abstract_states(model, [ensemble.Member.create(0)], 128)
    features = jax.ShapeDtypeStruct((4, 313, 128), jnp.float32)
    train_fn = ensemble.make_train_fn(model, train.batch_size, 1)
    labels = jax.eval_shape(lambda: entry.stand_in_clip_data(config, 4))  # the classifier's labels and spectra
    executed = bench.count_matmul_flops(jax.make_jaxpr(train_fn)(states, features, labels).jaxpr) / train.batch_size
    slack = 1.35 if entry.labels else 1 + 1e-9  # CNN: transposed strided convolutions are counted over dilated inputs
    assert 0.75 < executed / entry.flops_per_window(config[method], 128) <= slack


def test_published_peaks_are_given_for_known_accelerators_only():
    from types import SimpleNamespace

    from asd_jax.hardware import published_peak

    h200 = published_peak(SimpleNamespace(platform="gpu", device_kind="NVIDIA H200"))
    assert h200["device_kind"] == "NVIDIA H200" and h200["tflops"]["float32"] == 67.0
    assert published_peak(SimpleNamespace(platform="tpu", device_kind="TPU v4"))["tflops"] == {"bfloat16": 275.0}
    assert published_peak(SimpleNamespace(platform="gpu", device_kind="Some Future GPU")) is None
    assert published_peak(SimpleNamespace(platform="cpu", device_kind="cpu")) is None
