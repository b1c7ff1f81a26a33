"""The method registry: every reader takes its facts from it, and a method registered here, in the test, passes every
model check and runs end to end (training, evaluation, scoring, the benchmark) with nothing else added."""

import json
import os

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import pytest

from asd_jax import bench, pipeline, scoring
from asd_jax.config import get_config
from asd_jax.methods import registry
from asd_jax.methods.sequence import SequenceDetector
from tests.conftest import TINY_MACHINE_IDS, tiny_config
from tests.models.test_models import MODEL_CHECKS

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
        SequenceDetector,
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


@pytest.mark.parametrize("name", registry.names())
def test_every_method_reads_sections_of_the_default_config(name):
    config = get_config()
    method = registry.get(name)
    method.resolve_config(config)  # settings that follow the data (the classifier's whole-clip frames=0)
    assert all(section in config for section in method.reads), name
    assert set(method.test_settings) <= set(config[method.section]), name  # the tests' sizes name real settings
    if method.kind == "ensemble":
        assert method.window_length(config[method.section]) >= 1
        assert method.flops_per_window(config[method.section], config.features.n_mels) > 0
    else:
        assert method.vector_source in registry.VECTOR_SOURCES


def test_registry_lookups_and_refusals():
    assert registry.get("lstm").window_length(get_config().lstm) == get_config().lstm.frames + 1
    assert registry.get("vggish_ocsvm").reads == ("ocsvm", "vggish")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("lstm"))
    with pytest.raises(ValueError, match="needs build_model"):
        registry.Method("broken", "", "ensemble", "broken", ml_collections.ConfigDict, SequenceDetector)
    with pytest.raises(ValueError, match="needs vector_source"):
        registry.Method("broken", "", "clip_vector", "ocsvm", ml_collections.ConfigDict, SequenceDetector)


@pytest.mark.parametrize("check", MODEL_CHECKS, ids=lambda check: check.__name__)
def test_a_method_registered_in_the_test_passes_every_model_check(toy, check):
    check(toy.name)


@pytest.mark.slow  # a minute or so on 2 cores: `make test-slow` runs it
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
    rows = scoring.score_files(run, [clip], progress=False)
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


def test_the_id_classifiers_frames_0_resolves_to_the_whole_clip_once_its_length_is_known():
    from asd_jax.config import get_config
    from asd_jax.data import loading
    config = get_config()
    config.method, config.id_classifier.frames = "id_classifier", 0
    method = registry.get("id_classifier")
    with pytest.raises(ValueError, match="resolve_config"):  # unresolved: a clear error, not an empty window
        method.window_model(config, (["a", "b"], [0, 1]))
    config.features.duration_s = 12.0  # as loading.resolve_duration leaves it for DCASE 2023's ToyCar
    method.resolve_config(config)
    assert config.id_classifier.frames == loading.feature_config(config).num_frames == 376
    config.features.duration_s = 10.0
    method.resolve_config(config)  # resolved once: an explicit window length is kept
    assert config.id_classifier.frames == 376
    assert method.window_model(config, (["a", "b"], [0, 1])).window_length == 376
    registry.get("lstm").resolve_config(config)  # a method without settings that follow the data: nothing changes
    assert config.lstm.frames == get_config().lstm.frames
