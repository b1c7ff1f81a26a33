"""Whole-clip log magnitude spectra (the id classifier's spectrum branch): the transform, and extraction sharing the
log-mel path's decoding, skipping, quiet-clip reporting and cache."""

import os

import numpy as np
import pytest
import soundfile as sf

from asd_jax.data import features as F
from asd_jax.data.audio import load_audio
from tests.conftest import write_wav

SHORT = F.FeatureConfig(duration_s=1.0, n_mels=32)


def _clips(tmp_path, count, seconds=1.0):
    paths = [str(tmp_path / f"normal_id_00_{i:08d}.wav") for i in range(count)]
    for i, path in enumerate(paths):
        write_wav(path, seconds=seconds, seed=i)
    return paths


def _linear(log_magnitude):
    return np.exp(np.asarray(log_magnitude, np.float64)) - F.SPECTRUM_EPS


@pytest.mark.parametrize("duration_s, frequency, pool", [(1.0, 1003.0, 1), (1.0, 1003.0, 4), (10.0, 1234.5, 3),
                                                         (10.0, 50.3, 1)])
def test_a_sine_peaks_at_its_pooled_bin(duration_s, frequency, pool):
    config = F.FeatureConfig(duration_s=duration_s)
    samples = int(round(duration_s * config.sample_rate))
    t = np.arange(samples) / config.sample_rate
    wave = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    spectrum = F.log_spectrum(wave, pool)
    assert spectrum.shape == (F.spectrum_bins(config, pool),) == ((samples // 2 + 1) // pool,)
    assert spectrum.dtype == np.float32
    expected_bin = int(round(frequency * samples / config.sample_rate)) // pool
    assert int(np.argmax(spectrum)) == expected_bin
    # on an exact bin the magnitude is amplitude / 2 relative to full scale, shared by the pool
    assert _linear(spectrum[expected_bin]) == pytest.approx(0.25 / pool, rel=1e-3)


def test_spectrum_bins_of_a_ten_second_clip():
    assert F.spectrum_bins(F.FeatureConfig(), 1) == 80_001
    assert F.spectrum_bins(F.FeatureConfig(), 4) == 20_000  # the top bin of 80001 is dropped
    assert F.spectrum_bins(F.FeatureConfig(sample_rate=8_000, duration_s=0.5), 7) == 2001 // 7


@pytest.mark.parametrize("samples", [16_000, 1001])
def test_pool_averages_adjacent_linear_magnitudes(samples):
    wave = (0.1 * np.random.default_rng(0).standard_normal(samples)).astype(np.float32)
    fine = _linear(F.log_spectrum(wave, 1))
    coarse = _linear(F.log_spectrum(wave, 4))
    bins = (samples // 2 + 1) // 4
    assert coarse.shape == (bins,)
    np.testing.assert_allclose(coarse, fine[: bins * 4].reshape(bins, 4).mean(axis=1), rtol=1e-5)
    brute = np.abs(np.fft.rfft(wave.astype(np.float64)))[: bins * 4].reshape(bins, 4).mean(axis=1) / samples
    np.testing.assert_allclose(coarse, brute, rtol=1e-5)


def test_silence_gives_finite_values():
    spectrum = F.log_spectrum(np.zeros(16_000, np.float32), 2)
    assert np.isfinite(spectrum).all()
    np.testing.assert_allclose(spectrum, np.log(F.SPECTRUM_EPS), rtol=1e-6)


@pytest.mark.parametrize("pool", [0, -1, 1.5, True])
def test_a_bad_pool_names_the_setting(tmp_path, pool):
    with pytest.raises(ValueError, match="id_classifier.spectrum_pool"):
        F.spectrum_bins(SHORT, pool)
    with pytest.raises(ValueError, match="id_classifier.spectrum_pool"):
        F.log_spectrum(np.zeros(100, np.float32), pool)
    with pytest.raises(ValueError, match="id_classifier.spectrum_pool"):
        F.extract_spectra(_clips(tmp_path, 1), SHORT, pool=pool, cache_root="", num_workers=1, progress=False)
    with pytest.raises(ValueError, match="id_classifier.spectrum_pool"):
        F.spectrum_bins(SHORT, 10_000)  # more than the 8001 bins of a 1 s clip


def test_extract_spectra_skips_broken_clips_and_caches(tmp_path):
    paths = _clips(tmp_path, 3)
    broken = tmp_path / "normal_id_00_00000099.wav"
    broken.write_bytes(np.random.default_rng(0).bytes(2000))
    clips = [paths[0], str(broken), paths[1], paths[2]]
    cache = str(tmp_path / "cache")

    cold = F.extract_spectra(clips, SHORT, pool=2, cache_root=cache, num_workers=1, progress=False)
    assert not cold.cache_hit and cold.features.shape == (3, F.spectrum_bins(SHORT, 2)) == (3, 4000)
    assert cold.paths == paths
    assert [entry["file"] for entry in cold.skipped] == [str(broken)]
    assert "not a readable audio file" in cold.skipped[0]["error"]
    for row, path in enumerate(paths):
        np.testing.assert_array_equal(cold.features[row], F.log_spectrum(load_audio(path, duration_s=1.0), 2))
    assert os.path.dirname(cold.cache_dir) == os.path.join(cache, "spectra")

    warm = F.extract_spectra(clips, SHORT, pool=2, cache_root=cache, num_workers=1, progress=False)
    assert warm.cache_hit and isinstance(warm.features, np.memmap) and warm.cache_dir == cold.cache_dir
    np.testing.assert_array_equal(np.asarray(warm.features), np.asarray(cold.features))
    assert warm.paths == cold.paths and warm.skipped == cold.skipped

    # the log-mel path skips the same clip for the same reason, and caches in another entry
    mel = F.extract_features(clips, SHORT, cache_root=cache, num_workers=1, progress=False)
    assert not mel.cache_hit and mel.skipped == cold.skipped and mel.paths == cold.paths
    assert mel.cache_dir != cold.cache_dir and os.path.dirname(mel.cache_dir) == os.path.join(cache, "features")
    assert mel.features.shape == (3, SHORT.num_frames, 32)
    assert F.extract_spectra(clips, SHORT, pool=2, cache_root=cache, num_workers=1, progress=False).cache_hit

    # pool and the decoding settings are in the key; the mel settings are not
    assert not F.extract_spectra(clips, SHORT, pool=1, cache_root=cache, num_workers=1, progress=False).cache_hit
    assert not F.extract_spectra(clips, F.FeatureConfig(duration_s=0.5, n_mels=32), pool=2, cache_root=cache,
                                 num_workers=1, progress=False).cache_hit
    assert F.extract_spectra(clips, F.FeatureConfig(duration_s=1.0, n_mels=64, n_fft=512), pool=2,
                             cache_root=cache, num_workers=1, progress=False).cache_hit

    in_memory = F.extract_spectra(clips, SHORT, pool=2, cache_root="", num_workers=1, progress=False)
    assert in_memory.cache_dir is None and not in_memory.cache_hit
    np.testing.assert_array_equal(in_memory.features, np.asarray(cold.features))


def test_damaged_spectrum_cache_is_rebuilt(tmp_path):
    paths = _clips(tmp_path, 2)
    cache = str(tmp_path / "cache")
    built = F.extract_spectra(paths, SHORT, cache_root=cache, num_workers=1, progress=False, verify="full")
    expected = np.array(built.features)
    data_path = os.path.join(built.cache_dir, "features.f32")
    os.truncate(data_path, os.path.getsize(data_path) - 8)
    again = F.extract_spectra(paths, SHORT, cache_root=cache, num_workers=1, progress=False, verify="full")
    assert not again.cache_hit
    np.testing.assert_array_equal(np.asarray(again.features), expected)


def test_quiet_clips_are_kept_and_reported_like_log_mel(tmp_path):
    normal, silent = str(tmp_path / "normal_id_00_00000000.wav"), str(tmp_path / "normal_id_00_00000001.wav")
    write_wav(normal, seed=0)
    sf.write(silent, np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
    cache = str(tmp_path / "cache")
    result = F.extract_spectra([normal, silent], SHORT, cache_root=cache, num_workers=1, progress=False)
    mel = F.extract_features([normal, silent], SHORT, cache_root="", num_workers=1, progress=False)
    assert result.paths == [normal, silent] and np.isfinite(result.features).all()
    assert result.quiet == mel.quiet and [entry["file"] for entry in result.quiet] == [silent]
    assert result.levels == mel.levels
    warm = F.extract_spectra([normal, silent], SHORT, cache_root=cache, num_workers=1, progress=False)
    assert warm.cache_hit and warm.quiet == result.quiet


def test_multichannel_and_resampled_clips_decode_as_for_log_mel(tmp_path):
    stereo = str(tmp_path / "stereo.wav")
    write_wav(stereo, rate=32_000, channels=2, seed=3)
    config = F.FeatureConfig(duration_s=1.0, channel=1)
    result = F.extract_spectra([stereo], config, pool=1, cache_root="", num_workers=1, progress=False)
    wave = load_audio(stereo, 16_000, 1.0, channel=1)
    np.testing.assert_array_equal(result.features[0], F.log_spectrum(wave, 1))


def test_parallel_extraction_equals_serial(tmp_path):
    paths = _clips(tmp_path, 8)
    serial = F.extract_spectra(paths, SHORT, pool=3, cache_root="", num_workers=1, progress=False)
    parallel = F.extract_spectra(paths, SHORT, pool=3, cache_root="", num_workers=2, progress=False)
    assert parallel.paths == paths
    np.testing.assert_array_equal(serial.features, parallel.features)
