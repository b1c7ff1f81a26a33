import logging
import os

import numpy as np
import pytest
import soundfile as sf

from asd_jax.data import audio
from tests.conftest import write_wav


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_pcm_format_loads_as_float32(tmp_path, subtype):
    path = str(tmp_path / "normal_id_00_00000000.wav")
    original = write_wav(path, seconds=0.5, subtype=subtype)
    wave = audio.load_audio(path, duration_s=None)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    tolerance = 1e-2 if subtype == "PCM_U8" else 1e-4
    np.testing.assert_allclose(wave, original[:, 0], atol=tolerance)


def test_multichannel_is_averaged_and_resampled(tmp_path):
    path = str(tmp_path / "clip.wav")
    data = write_wav(path, seconds=1.0, rate=48_000, channels=8)
    wave = audio.load_audio(path, duration_s=None)
    assert wave.shape == (16_000,)
    direct = audio.resample(data.mean(axis=1), 48_000, 16_000)
    np.testing.assert_allclose(wave, direct, atol=1e-4)


def test_resample_keeps_a_tone():
    t = np.arange(44_100) / 44_100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = audio.resample(tone, 44_100, 16_000)
    spectrum = np.abs(np.fft.rfft(out))
    assert len(out) == 16_000 and abs(np.argmax(spectrum) - 440) <= 1


def test_a_short_clip_is_tiled_and_a_long_one_cropped_with_one_warning_per_length(tmp_path, caplog):
    audio.forget_reported_lengths()
    paths = [str(tmp_path / f"short_{i}.wav") for i in range(2)]
    originals = [write_wav(path, seconds=0.25, seed=i)[:, 0] for i, path in enumerate(paths)]
    with caplog.at_level(logging.WARNING):
        wave = audio.load_audio(paths[0], duration_s=0.6)
    # tiled: the clip repeated from its start (4000 + 4000 + 1600 samples), no silence
    assert wave.shape == (9600,) and "tiled" in caplog.text and paths[0] in caplog.text
    np.testing.assert_allclose(wave, np.concatenate([originals[0], originals[0], originals[0][:1600]]), atol=1e-4)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = audio.load_audio(paths[1], duration_s=0.6)  # the same lengths: not reported again
        cropped = audio.load_audio(paths[1], duration_s=0.1)  # another length: reported
    np.testing.assert_allclose(again[4000:8000], originals[1], atol=1e-4)
    assert paths[1] in caplog.text and caplog.text.count("samples instead of") == 1 and "cropped" in caplog.text
    np.testing.assert_allclose(cropped, originals[1][:1600], atol=1e-4)


def test_clip_seconds_reads_the_header(tmp_path):
    path = str(tmp_path / "clip.wav")
    write_wav(path, seconds=1.5, rate=48_000, channels=2)
    assert audio.clip_seconds(path) == pytest.approx(1.5)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    with pytest.raises(audio.AudioError, match="broken.wav"):
        audio.clip_seconds(str(broken))


def test_bad_files_raise_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("this is not audio at all" * 10)
    full = str(tmp_path / "full.wav")
    write_wav(full, seconds=0.5)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(open(full, "rb").read()[:5000])
    nan = str(tmp_path / "nan.wav")
    sf.write(nan, np.array([0.0, np.nan, 0.1], np.float32), 16_000, subtype="FLOAT")
    cases = {str(empty): "empty", str(text): "not a readable audio file", str(truncated): "truncated",
             nan: "NaN", str(tmp_path / "missing.wav"): "not found"}
    for path, problem in cases.items():
        with pytest.raises(audio.AudioError, match=problem) as info:
            audio.load_audio(path)
        assert info.value.path == path and os.path.basename(path) in str(info.value)


def test_real_8_channel_mimii_downmixes(realdata):
    path = os.path.join(realdata, "mimii_8ch_brmdv", "slider", "slider_normal.wav")
    assert sf.info(path).channels == 8
    wave = audio.load_audio(path)
    samples, _ = audio.read_wav(path)
    assert wave.shape == (160_000,) and np.isfinite(wave).all()
    np.testing.assert_allclose(wave, samples.mean(axis=1), atol=1e-6)


def test_real_dcase_clip_loads(realdata):
    path = os.path.join(realdata, "dcase2020t2_dev_mamisoa", "slider", "anomaly_id_00_00000000.wav")
    wave = audio.load_audio(path)
    assert wave.shape == (160_000,) and wave.dtype == np.float32 and 0 < np.abs(wave).max() <= 1


def test_channel_selection_takes_one_channel_or_the_mean(tmp_path):
    path = str(tmp_path / "eight.wav")
    data = write_wav(path, seconds=0.5, channels=8)
    np.testing.assert_allclose(audio.load_audio(path, duration_s=None, channel=3), data[:, 3], atol=1e-4)
    np.testing.assert_allclose(audio.load_audio(path, duration_s=None, channel="0"), data[:, 0], atol=1e-4)
    np.testing.assert_array_equal(audio.load_audio(path, duration_s=None, channel="mean"),
                                  audio.load_audio(path, duration_s=None))
    with pytest.raises(audio.ChannelError, match=r"eight.wav: channel 8 requested but the file has 8 channel") as info:
        audio.load_audio(path, channel=8)
    assert info.value.path == path and "0 to 7" in str(info.value)
    with pytest.raises(ValueError, match="'mean' or a channel index"):
        audio.load_audio(path, channel="left")
    mono = str(tmp_path / "mono.wav")
    original = write_wav(mono, seconds=0.5)
    np.testing.assert_allclose(audio.load_audio(mono, duration_s=None, channel=0), original[:, 0], atol=1e-4)


def test_two_channel_file_gives_near_far_or_mean(tmp_path):
    path = str(tmp_path / "stereo.wav")
    data = write_wav(path, seconds=0.25, channels=2)
    for channel, expected in ((0, data[:, 0]), ("0", data[:, 0]), (1, data[:, 1]), ("1", data[:, 1]),
                              ("mean", data.mean(axis=1))):
        np.testing.assert_allclose(audio.load_audio(path, duration_s=None, channel=channel), expected, atol=1e-4)
    assert np.abs(data[:, 0] - data[:, 1]).mean() > 0.01
    with pytest.raises(audio.ChannelError, match=r"stereo.wav: channel 2 requested but the file has 2 channel\(s\); "
                                                 r"pass channel='mean' or an index from 0 to 1"):
        audio.load_audio(path, channel=2)


def test_channel_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(audio.ChannelError("x.wav", "channel 2 requested but the file has 1 channel(s)",
                                                         "pass channel='mean'")))
    assert isinstance(error, audio.ChannelError) and error.path == "x.wav" and "pass channel='mean'" in str(error)


def test_feature_config_channel_is_threaded_and_a_bad_index_raises(tmp_path):
    from asd_jax.data import features as F

    path = str(tmp_path / "eight.wav")
    write_wav(path, seconds=1.0, channels=8)
    samples, _ = audio.read_wav(path)
    assert F.FeatureConfig().channel == "mean" and F.FeatureConfig(channel="2").channel == 2
    first = F.extract_features([path], F.FeatureConfig(duration_s=1.0, channel=0), cache_root="", progress=False)
    np.testing.assert_allclose(first.features[0], F.log_mel(samples[:, 0].copy(), F.FeatureConfig(duration_s=1.0)),
                               atol=1e-4)
    mean = F.extract_features([path], F.FeatureConfig(duration_s=1.0), cache_root="", progress=False)
    np.testing.assert_allclose(mean.features[0], F.log_mel(samples.mean(axis=1), F.FeatureConfig(duration_s=1.0)),
                               atol=1e-4)
    with pytest.raises(audio.ChannelError, match="has 8 channel"):
        F.extract_features([path], F.FeatureConfig(duration_s=1.0, channel=9), cache_root="", progress=False)


def test_real_mimii_channel_0_is_not_the_mean(realdata):
    path = os.path.join(realdata, "mimii_8ch_arlene14ko", "fan", "id_02", "normal", "00000000.wav")
    samples, rate = audio.read_wav(path)
    assert samples.shape[1] == 8 and rate == 16_000
    channel0 = audio.load_audio(path, channel=0)
    np.testing.assert_allclose(channel0, samples[:, 0], atol=1e-6)
    np.testing.assert_allclose(audio.load_audio(path), samples.mean(axis=1), atol=1e-6)
    assert np.abs(channel0 - audio.load_audio(path)).mean() > 1e-4
    with pytest.raises(audio.ChannelError, match="00000000.wav: channel 8 requested but the file has 8"):
        audio.load_audio(path, channel=8)
