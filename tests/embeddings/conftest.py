"""Session fixtures: a VGGish-shaped TF-Hub-style SavedModel with random weights and the same weights as a TF1
checkpoint (each built once, deleted at the end), the models loaded from them, and a few test waveforms."""

import shutil
import tempfile

import numpy as np
import pytest

from asd_jax.embeddings import testing


@pytest.fixture(scope="session")
def model_root():
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_hub")
    root = tempfile.mkdtemp(prefix="asd_jax_vggish_")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def vggish_arrays():
    return testing.random_vggish_arrays(seed=0)


@pytest.fixture(scope="session")
def vggish_dir(model_root, vggish_arrays) -> str:
    """A SavedModel folder that ``hub.load(folder)(waveform) -> [patches, 128]`` like the TF-Hub VGGish."""
    return testing.save_random_vggish(f"{model_root}/saved_model", arrays=vggish_arrays)


@pytest.fixture(scope="session")
def vggish_checkpoint(model_root, vggish_arrays) -> str:
    """The same weights as a single-file TF1 checkpoint under the original names, like vggish_model.ckpt."""
    return testing.save_tf1_checkpoint(vggish_arrays, f"{model_root}/checkpoint/vggish_model.ckpt")


@pytest.fixture(scope="session")
def tf_model(vggish_dir):
    from asd_jax.embeddings.vggish import load_tf_vggish

    return load_tf_vggish(vggish_dir)


@pytest.fixture(scope="session")
def tf_extractor(vggish_dir):
    from asd_jax.embeddings.vggish import VGGishExtractor

    return VGGishExtractor(vggish_dir, backend="tf", progress=False)


@pytest.fixture(scope="session")
def flax_extractor(vggish_dir):
    from asd_jax.embeddings.vggish import VGGishExtractor

    return VGGishExtractor(vggish_dir, backend="flax", batch_size=2, progress=False)


@pytest.fixture(scope="session")
def waveforms() -> list[np.ndarray]:
    """Two 10 s clips (noise plus a tone, and a louder chirp-like mix) and one of 2.5 s, at 16 kHz in [-1, 1]."""
    rng = np.random.default_rng(0)
    t = np.arange(160_000) / 16_000
    first = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 440.0 * t)
    second = 0.2 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (200.0 + 300.0 * t) * t)
    third = 0.1 * rng.standard_normal(40_000)
    return [np.clip(wave, -1, 1).astype(np.float32) for wave in (first, second, third)]
