"""The method registry: every reader takes its facts from it, and a method registered here, in the test, runs end
to end (training, evaluation, scoring, the benchmark) with nothing else added."""

import json
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import pytest

from asd_jax import bench, pipeline
from asd_jax.config import get_config
from asd_jax.methods import registry
from tests.conftest import TINY_MACHINE_IDS, tiny_config

pytestmark = pytest.mark.usefixtures("jax_compile_cache")


class FrameMLP(nn.Module):
    """A toy window model: reconstruct each frame of the window through a narrow dense layer."""

    width: int = 4

    @nn.compact
    def __call__(self, frames):
        return nn.Dense(frames.shape[-1])(nn.relu(nn.Dense(self.width)(frames)))


def toy_method() -> registry.Method:
    return registry.Method(
        "toy_mlp", "a per-frame dense autoencoder (test only)", "ensemble", "toy_mlp",
        lambda: ml_collections.ConfigDict(dict(width=4, frames=2, score_hop=1, train=registry.train_section(
            epochs=2, batch_size=8, learning_rate=1e-3, windows_per_clip=2, steps_per_call=2))),
        build_model=lambda section: FrameMLP(section.width),
        window_length=lambda section: section.frames,
        flops_per_window=lambda section, mels: 3.0 * section.frames * 2 * 2 * mels * section.width,
        errors=lambda module, variables, batch, train: (
            jnp.mean(jnp.square(module.apply(variables, batch["windows"]) - batch["windows"]), axis=(1, 2)), None))


@pytest.fixture
def toy():
    method = registry.register(toy_method())
    yield method
    registry.unregister(method.name)


def test_builtin_methods_are_registered_with_their_sections():
    config = get_config()
    assert set(registry.names()) >= {"lstm", "gru_ae", "dense_ae", "id_classifier", "vggish_ocsvm", "logmel_ocsvm",
                                     "vggish_knn", "logmel_knn"}
    assert registry.names("ensemble") == ("lstm", "gru_ae", "dense_ae", "id_classifier")
    for method in registry.methods():
        assert all(section in config for section in method.reads), method.name
    assert registry.get("lstm").window_length(config.lstm) == config.lstm.frames + 1
    assert registry.get("vggish_ocsvm").reads == ("ocsvm", "vggish")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("lstm"))
    with pytest.raises(ValueError, match="needs build_model"):
        registry.Method("broken", "", "ensemble", "broken", ml_collections.ConfigDict)


def test_a_method_registered_in_the_test_runs_end_to_end(toy, tiny_dataset, tmp_path):
    config = tiny_config(toy.name, tiny_dataset, str(tmp_path / "run"), str(tmp_path / "cache"))
    assert config.toy_mlp.width == 4  # its section comes from its registry entry
    config.num_seeds = 2
    results = pipeline.train_and_evaluate(config)
    assert results["method"] == "toy_mlp" and set(results["per_id"]) == set(TINY_MACHINE_IDS)
    assert [m["name"] for m in results["members"]] == ["seed0", "seed1"] and results["compiles"] == 1
    assert 0.0 <= results["mean"]["auc"] <= 1.0
    run = str(tmp_path / "run")
    with open(os.path.join(run, "train_curve.jsonl")) as handle:
        assert [json.loads(line)["epoch"] for line in handle] == [1, 2]
    clip = os.path.join(tiny_dataset, "slider", "test", sorted(os.listdir(os.path.join(tiny_dataset, "slider",
                                                                                         "test")))[0])
    rows = pipeline.score_files(run, [clip], progress=False)
    assert rows[0]["decision"] in ("normal", "anomaly")

    config = tiny_config(toy.name, tiny_dataset, "", str(tmp_path / "cache"))
    config.method = "toy_mlp"
    config.features.duration_s, config.features.n_mels = 0.5, 8
    config.benchmark.ensemble_sizes, config.benchmark.num_clips = "1,2", 3
    config.benchmark.warmup_calls, config.benchmark.timed_calls = 1, 1
    output = bench.run(config)
    assert [(r["method"], r["ensemble_size"]) for r in output["results"]] == [("toy_mlp", 1), ("toy_mlp", 2)]
    assert all(r["windows_per_s_total"] > 0 and r["flops_per_window"] == 3.0 * 2 * 2 * 2 * 8 * 4
               for r in output["results"])
