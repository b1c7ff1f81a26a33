import os

import librosa
import numpy as np
import pytest

from asd_jax.data import features as F
from asd_jax.data.audio import load_audio
from tests.conftest import write_wav

SHORT = F.FeatureConfig(duration_s=1.0)


def _clips(tmp_path, count, seconds=1.0):
    paths = [str(tmp_path / f"normal_id_00_{i:08d}.wav") for i in range(count)]
    for i, path in enumerate(paths):
        write_wav(path, seconds=seconds, seed=i)
    return paths


def test_log_mel_matches_the_dcase_baseline_formula():
    wave = (0.1 * np.random.default_rng(0).standard_normal(160_000)).astype(np.float32)
    features = F.log_mel(wave)
    mel = librosa.feature.melspectrogram(y=wave, sr=16_000, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    expected = 20.0 / 2.0 * np.log10(mel + np.finfo(np.float32).eps)
    assert features.shape == (313, 128) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected.T, rtol=1e-5, atol=1e-4)
    assert F.FeatureConfig().num_frames == 313


def test_linear_scale_is_the_log_power_of_the_stft_bins_between_fmin_and_fmax():
    """scale=linear against a NumPy STFT (centred frames, zero padding, periodic Hann window): ASDKit's 1024-point
    STFT from 200 Hz to 8 kHz keeps bins 13 (203 Hz) to 512 (8 kHz), 500 of them."""
    wave = (0.1 * np.random.default_rng(1).standard_normal(16_000)).astype(np.float32)
    config = F.FeatureConfig(duration_s=1.0, scale="linear", fmin=200.0, fmax=8000.0)
    assert config.linear_bins == range(13, 513) and config.num_bins == 500
    padded = np.pad(wave.astype(np.float64), 512)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    frames = np.stack([padded[start:start + 1024] * window for start in range(0, len(padded) - 1023, 512)])
    power = np.abs(np.fft.rfft(frames, axis=-1))[:, 13:513] ** 2
    features = F.log_mel(wave, config)
    assert features.shape == (config.num_frames, 500) == (32, 500)
    np.testing.assert_allclose(features, 10 * np.log10(power + config.eps), rtol=1e-4, atol=1e-3)
    assert F.FeatureConfig(scale="linear").num_bins == 513  # fmin 0, fmax None: every bin
    assert F.FeatureConfig(scale="mel", n_mels=64).num_bins == 64
    with pytest.raises(ValueError, match="features.scale='bark'"):
        F.FeatureConfig(scale="bark")
    with pytest.raises(ValueError, match="leave no STFT bin"):
        F.FeatureConfig(scale="linear", fmin=7000.0, fmax=6000.0)


def test_parameters_are_configurable():
    wave = np.zeros(16_000, np.float32)
    config = F.FeatureConfig(duration_s=1.0, n_fft=512, hop_length=256, n_mels=64)
    assert F.log_mel(wave, config).shape == (config.num_frames, 64) == (63, 64)


def test_cache_round_trip_hit_and_invalidation(tmp_path):
    paths = _clips(tmp_path, 3)
    cache = str(tmp_path / "cache")
    cold = F.extract_features(paths, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert not cold.cache_hit and cold.features.shape == (3, SHORT.num_frames, 128)
    np.testing.assert_allclose(cold.features[1], F.log_mel(load_audio(paths[1], duration_s=1.0), SHORT))
    warm = F.extract_features(paths, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert warm.cache_hit and isinstance(warm.features, np.memmap)
    np.testing.assert_array_equal(np.asarray(warm.features), np.asarray(cold.features))
    # a change of the feature config or of the clip list rebuilds
    assert not F.extract_features(paths, F.FeatureConfig(duration_s=1.0, n_mels=64), cache_root=cache,
                                  num_workers=1, progress=False).cache_hit
    assert not F.extract_features(paths[:2], SHORT, cache_root=cache, num_workers=1, progress=False).cache_hit
    # a rewritten clip (new size/mtime) rebuilds
    write_wav(paths[0], seconds=1.0, seed=99)
    os.utime(paths[0], ns=(1, 1))
    rebuilt = F.extract_features(paths, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert not rebuilt.cache_hit
    assert not np.array_equal(np.asarray(rebuilt.features[0]), np.asarray(cold.features[0]))


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "index"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, damage):
    paths = _clips(tmp_path, 3)
    cache = str(tmp_path / "cache")
    built = F.extract_features(paths, SHORT, cache_root=cache, num_workers=1, progress=False)
    expected = np.array(built.features)
    data_path = os.path.join(built.cache_dir, "features.f32")
    if damage == "truncate":
        os.truncate(data_path, os.path.getsize(data_path) - 100)
    elif damage == "corrupt":
        with open(data_path, "r+b") as handle:
            handle.seek(os.path.getsize(data_path) - 4 * 128 * 3)
            handle.write(b"\xff" * 64)
    else:
        with open(os.path.join(built.cache_dir, "index.json"), "w") as handle:
            handle.write('{"key": ')
    again = F.extract_features(paths, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert not again.cache_hit
    np.testing.assert_array_equal(np.asarray(again.features), expected)


def test_bad_clip_is_skipped_and_listed(tmp_path):
    paths = _clips(tmp_path, 3)
    broken = tmp_path / "normal_id_00_00000099.wav"
    broken.write_text("garbage")
    result = F.extract_features([paths[0], str(broken), paths[1]], SHORT, cache_root=str(tmp_path / "c"),
                                num_workers=1, progress=False)
    assert result.paths == [paths[0], paths[1]] and result.features.shape[0] == 2
    assert result.skipped[0]["file"] == str(broken) and "not a readable audio file" in result.skipped[0]["error"]
    warm = F.extract_features([paths[0], str(broken), paths[1]], SHORT, cache_root=str(tmp_path / "c"),
                              num_workers=1, progress=False)
    assert warm.cache_hit and warm.skipped == result.skipped


def test_parallel_extraction_equals_serial(tmp_path):
    paths = _clips(tmp_path, 9)
    serial = F.extract_features(paths, SHORT, cache_root="", num_workers=1, progress=False)
    parallel = F.extract_features(paths, SHORT, cache_root="", num_workers=2, progress=False)
    np.testing.assert_array_equal(serial.features, parallel.features)
    assert parallel.paths == paths


def test_normalizer_uses_given_clips_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(20, 50, 4)).astype(np.float32)
    normalizer = F.Normalizer.fit(train, chunk=3)
    np.testing.assert_allclose(normalizer.mean, train.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(normalizer.std, train.std(axis=(0, 1)), rtol=1e-4)
    normalised = normalizer(train)
    np.testing.assert_allclose(normalised.mean(axis=(0, 1)), 0, atol=1e-4)
    normalizer.save(str(tmp_path / "norm.npz"))
    loaded = F.Normalizer.load(str(tmp_path / "norm.npz"))
    np.testing.assert_array_equal(loaded.mean, normalizer.mean)
    with pytest.raises(ValueError, match="zero training clips"):
        F.Normalizer.fit(np.zeros((0, 5, 4), np.float32))


def test_real_clips_extract(realdata):
    folder = os.path.join(realdata, "dcase2020t2_dev_mamisoa", "slider")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))[:4]
    result = F.extract_features(paths, cache_root="", num_workers=1, progress=False)
    assert result.features.shape == (4, 313, 128) and np.isfinite(result.features).all()


def test_progress_in_a_log_is_one_complete_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ASD_JAX_PROGRESS", raising=False)
    paths = _clips(tmp_path, 3)
    F.extract_features(paths, SHORT, cache_root="", num_workers=1, progress=True, description="train log-mel")
    error = capsys.readouterr().err
    assert error.startswith("train log-mel: 3/3 clip in ") and error.count("\n") == 1 and "\r" not in error
