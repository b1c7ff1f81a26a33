"""Shared fixtures: the real clips in ../shared/realdata (skipped when absent) and small WAV writers."""

import os

import numpy as np
import pytest
import soundfile as sf

REALDATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "realdata"))


@pytest.fixture(scope="session")
def realdata() -> str:
    if not os.path.isdir(REALDATA):
        pytest.skip(f"real clips not found at {REALDATA}")
    return REALDATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache root, so no test reads another's (or the user's) cached features."""
    monkeypatch.setenv("ASD_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def write_wav(path, seconds=1.0, rate=16_000, channels=1, subtype="PCM_16", seed=0, amplitude=0.1):
    rng = np.random.default_rng(seed)
    data = (amplitude * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return data


# ----------------------------------------------------------------------------------------------------------------------
# Helpers for the model, trainer and pipeline tests.

_COMPILE_CACHE_OPTIONS = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0.0,
                          "jax_persistent_cache_min_entry_size_bytes": 0}


@pytest.fixture(scope="session")
def jax_compile_cache(tmp_path_factory) -> str:
    """A session-wide persistent XLA compilation cache in a temporary folder.

    The tests compile the same tiny programs many times (every ``train_ensemble`` / pipeline run builds its own jitted
    closures); on CPU compiling dominates their run time. Compiled executables are keyed by their HLO and options, so
    a hit runs exactly the code a fresh compile would give. Subprocesses get it through :func:`compile_cache_env`.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    directory = str(tmp_path_factory.mktemp("jax_compile_cache"))
    previous = {name: getattr(jax.config, name) for name in _COMPILE_CACHE_OPTIONS}
    for name, value in {**_COMPILE_CACHE_OPTIONS, "jax_compilation_cache_dir": directory}.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield directory
    for name, value in previous.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def compile_cache_env(directory: str) -> dict:
    """Environment variables that give a subprocess the same persistent compilation cache."""
    return {"JAX_COMPILATION_CACHE_DIR": directory, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


TINY_MACHINE_IDS = ("00", "02")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """A tiny synthetic slider set (ids 00 and 02; 6 train, 3 normal + 3 anomalous test clips each; 1 s clips),
    generated once per session. Treat it as read-only: copy it (``shutil.copytree``) before changing anything."""
    from asd_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("tiny_slider"))
    synthetic.generate_dataset(root, synthetic.SynthConfig(
        machine_ids=TINY_MACHINE_IDS, num_train=6, num_test_normal=3, num_test_anomaly=3, duration_s=1.0),
        num_workers=1, progress=False)
    return root


def tiny_config(method: str, data_dir: str, workdir: str, cache_dir: str, epochs: int = 2):
    """``asd_jax.config.get_config()`` shrunk for fast tests: 1 s clips, 32 mels, and every registered method at the
    small size of its registry entry (``Method.test_settings``), 2 windows per clip and batch 8."""
    from asd_jax.config import get_config
    from asd_jax.methods import registry

    config = get_config()
    config.method = method
    config.data_dir = data_dir
    config.workdir = workdir
    config.cache_dir = cache_dir
    config.progress = False
    config.num_workers = 1
    config.features.duration_s = 1.0
    config.features.n_mels = 32
    for method in registry.methods():  # each method's own test sizes (Method.test_settings)
        config[method.section].update(method.test_settings)
        if method.kind == "ensemble":
            train = config[method.section].train
            train.epochs, train.batch_size, train.windows_per_clip, train.steps_per_call = epochs, 8, 2, 4
    return config
