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
