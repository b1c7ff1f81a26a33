"""Silent and near-silent clips: measured, kept, warned about by name and listed, from a fresh build and the cache."""

import glob
import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from asd_jax.data import audio
from asd_jax.data import features as F
from tests.conftest import write_wav

SHORT = F.FeatureConfig(duration_s=1.0, n_mels=32)


def _noise(path, dbfs, seconds=1.0, subtype="FLOAT", seed=0):
    """White noise at an RMS level of ``dbfs`` (float samples, so even -90 dBFS is not lost to quantisation)."""
    return write_wav(str(path), seconds=seconds, subtype=subtype, seed=seed, amplitude=10.0 ** (dbfs / 20.0))


@pytest.fixture()
def mixed_clips(tmp_path):
    """normal (-20 dBFS), all zeros, -90 dBFS noise, a constant DC offset, in that order."""
    normal, zero, faint, stuck = (str(tmp_path / f"normal_id_00_{i:08d}.wav") for i in range(4))
    _noise(normal, -20.0, subtype="PCM_16")
    sf.write(zero, np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
    _noise(faint, -90.0, seed=1)
    sf.write(stuck, np.full(16_000, 0.25, np.float32), 16_000, subtype="PCM_16")
    return normal, zero, faint, stuck


def test_level_dbfs_of_known_signals():
    t = np.arange(16_000) / 16_000
    sine = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert audio.level_dbfs(sine) == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.01)
    assert audio.level_dbfs(sine + 0.5) == pytest.approx(audio.level_dbfs(sine), abs=0.01)  # DC is ignored
    assert audio.level_dbfs(np.zeros(100, np.float32)) == -np.inf
    assert audio.level_dbfs(np.full(100, 0.3, np.float32)) == -np.inf
    assert audio.level_dbfs(np.zeros(0, np.float32)) == -np.inf


def test_quiet_problem_around_the_threshold():
    assert audio.quiet_problem(-30.0) is None
    assert audio.quiet_problem(audio.QUIET_DBFS + 0.1) is None
    assert audio.quiet_problem(-83.24) == "near-silent (-83.2 dBFS RMS)"
    assert audio.quiet_problem(None) == audio.quiet_problem(float("-inf")) == "silent (constant signal)"
    assert audio.quiet_problem(-60.0, threshold_dbfs=-50.0) == "near-silent (-60.0 dBFS RMS)"


def test_level_is_measured_before_padding(tmp_path):
    path = tmp_path / "short.wav"
    _noise(path, -66.0, seconds=0.25)  # padded to 1 s it would read -72 dBFS, below the threshold
    wave, dbfs = audio.load_clip(str(path), duration_s=1.0)
    assert wave.shape == (16_000,) and dbfs == pytest.approx(-66.0, abs=0.5)
    np.testing.assert_array_equal(wave, audio.load_audio(str(path), duration_s=1.0))


def _check_quiet(result, mixed, caplog):
    normal, zero, faint, stuck = mixed
    assert result.paths == list(mixed) and result.features.shape[0] == 4 and not result.skipped
    assert [entry["file"] for entry in result.quiet] == [zero, faint, stuck]
    by_file = {entry["file"]: entry for entry in result.quiet}
    assert by_file[zero]["dbfs"] is None and by_file[zero]["problem"] == "silent (constant signal)"
    assert by_file[stuck]["dbfs"] is None
    assert by_file[faint]["dbfs"] == pytest.approx(-90.0, abs=0.5) and "near-silent" in by_file[faint]["problem"]
    assert result.levels[0] == pytest.approx(-20.0, abs=0.5) and result.levels[1] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in (zero, faint, stuck):
        assert any(message.startswith(path + ": ") and "check the microphone" in message for message in warnings)
    assert any(f"{faint}: near-silent (-9" in message and "dBFS RMS" in message for message in warnings)
    assert not any(normal in message for message in warnings)


def test_quiet_clips_are_kept_warned_and_listed_cold_and_cached(tmp_path, mixed_clips, caplog):
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="asd_jax"):
        cold = F.extract_features(mixed_clips, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert not cold.cache_hit
    _check_quiet(cold, mixed_clips, caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asd_jax"):
        warm = F.extract_features(mixed_clips, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert warm.cache_hit and warm.quiet == cold.quiet and warm.levels == cold.levels
    _check_quiet(warm, mixed_clips, caplog)


def test_quiet_clips_without_a_cache(mixed_clips, caplog):
    with caplog.at_level(logging.WARNING, logger="asd_jax"):
        result = F.extract_features(mixed_clips, SHORT, cache_root="", num_workers=1, progress=False)
    _check_quiet(result, mixed_clips, caplog)


def test_levels_come_back_from_worker_processes(tmp_path):
    paths = [str(tmp_path / f"normal_id_00_{i:08d}.wav") for i in range(8)]
    for i, path in enumerate(paths):
        _noise(path, -90.0 if i == 5 else -30.0, seed=i)
    result = F.extract_features(paths, SHORT, cache_root="", num_workers=2, progress=False)
    assert [entry["file"] for entry in result.quiet] == [paths[5]]
    assert result.levels[0] == pytest.approx(-30.0, abs=0.5)


def test_old_cache_index_without_levels_is_rebuilt(tmp_path, mixed_clips, caplog):
    cache = str(tmp_path / "cache")
    built = F.extract_features(mixed_clips, SHORT, cache_root=cache, num_workers=1, progress=False)
    index_path = os.path.join(built.cache_dir, "index.json")
    with open(index_path) as handle:
        index = json.load(handle)
    del index["levels"]  # an index written before levels were recorded
    with open(index_path, "w") as handle:
        json.dump(index, handle)
    with caplog.at_level(logging.WARNING, logger="asd_jax"):
        again = F.extract_features(mixed_clips, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert not again.cache_hit
    _check_quiet(again, mixed_clips, caplog)
    np.testing.assert_array_equal(np.asarray(again.features), np.asarray(built.features))
    with open(index_path) as handle:
        assert len(json.load(handle)["levels"]) == 4
    assert F.extract_features(mixed_clips, SHORT, cache_root=cache, num_workers=1, progress=False).cache_hit


def test_synthetic_clips_are_not_flagged(tiny_dataset):
    paths = sorted(glob.glob(os.path.join(tiny_dataset, "**", "*.wav"), recursive=True))
    levels = [audio.load_clip(path, duration_s=None)[1] for path in paths]
    assert paths and all(audio.quiet_problem(level) is None for level in levels)


def test_real_clips_are_not_flagged(realdata, caplog):
    paths = sorted(glob.glob(os.path.join(realdata, "**", "*.wav"), recursive=True))
    levels = {path: audio.load_clip(path, duration_s=None)[1] for path in paths}
    flagged = {path: level for path, level in levels.items() if audio.quiet_problem(level) is not None}
    assert paths and not flagged
    quietest = sorted(paths, key=levels.get)[:4]  # the raw 8-channel MIMII downmixes, about -50 dBFS
    with caplog.at_level(logging.WARNING, logger="asd_jax"):
        result = F.extract_features(quietest, cache_root="", num_workers=1, progress=False)
    assert result.paths == quietest and result.quiet == [] and "check the microphone" not in caplog.text
