"""Noise-only supplemental clips mixed into normal training clips (asd_jax.data.mixing): the SNR, measured back from
the written wavs; determinism; the cache; broken inputs; names that keep the clean clip's unit and domain."""

import os

import numpy as np
import pytest
import soundfile as sf

from asd_jax.data import audio, dcase, mixing
from asd_jax.methods.knn import units_of

RATE = 16_000
SECONDS = 1.0


def _wav(path, seed, amplitude=0.1, tone_hz=None, seconds=SECONDS):
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    wave = amplitude * rng.standard_normal(samples)
    if tone_hz:
        wave += amplitude * np.sin(2 * np.pi * tone_hz * np.arange(samples) / RATE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
    return path


def _world(root, noise_names=("section_00_noise_0000.wav", "section_01_noise_supplemental_normal_0001.wav",
                              "section_02_noise_0002.wav")):
    """Clean training clips of sections 00 and 01 (source and target, with attributes) and noise clips; returns
    (clean clips, noise clips)."""
    names = ["section_00_source_train_normal_0000_vel_6.wav", "section_00_source_train_normal_0001_vel_8.wav",
             "section_00_target_train_normal_0000_noAttribute.wav", "section_01_source_train_normal_0000_a_1.wav",
             "section_01_target_train_normal_0001_a_2.wav"]
    for i, name in enumerate(names):
        _wav(os.path.join(root, "fan", "train", name), seed=i, tone_hz=300 + 100 * i)
    for i, name in enumerate(noise_names):
        _wav(os.path.join(root, "fan", "supplemental", name), seed=100 + i, amplitude=0.05)
    clean = dcase.find_clips(root, "fan", edition="dcase2025").select("train")
    noise = dcase.find_supplemental(root, "fan").select("noise")
    assert len(clean) == 5 and len(noise) == len(noise_names)
    return clean, noise


def _make(clean, noise, cache, count=None, seed=0, snr_db=(-5.0, 5.0)):
    return mixing.noise_mixtures(clean, noise, count=len(noise) if count is None else count, snr_db=snr_db,
                                 seed=seed, sample_rate=RATE, duration_s=SECONDS, cache_root=str(cache),
                                 progress=False)


# ---------------------------------------------------------------------------------------------------- mix()


@pytest.mark.parametrize("snr_db", [-10.0, -3.5, 0.0, 7.25, 20.0])
def test_mix_sets_the_power_ratio(snr_db):
    rng = np.random.default_rng(1)
    clean = 0.2 * rng.standard_normal(8000)
    noise = 0.03 * rng.standard_normal(8000) + 0.01
    mixture = mixing.mix(clean, noise, snr_db)
    assert mixture.peak_scale == 1.0 or np.max(np.abs(mixture.wave)) == pytest.approx(mixing.PEAK, rel=1e-6)
    scaled_clean = mixture.peak_scale * clean
    scaled_noise = mixture.peak_scale * mixture.noise_gain * noise
    np.testing.assert_allclose(mixture.wave, scaled_clean + scaled_noise, atol=1e-6)
    measured = 10 * np.log10(np.sum(scaled_clean ** 2) / np.sum(scaled_noise ** 2))
    assert measured == pytest.approx(snr_db, abs=1e-9)


def test_mix_limits_the_peak_and_keeps_the_snr():
    rng = np.random.default_rng(2)
    clean, noise = 0.9 * rng.standard_normal(4000), 0.5 * rng.standard_normal(4000)
    mixture = mixing.mix(clean, noise, -2.0)
    assert mixture.peak_scale < 1.0 and np.max(np.abs(mixture.wave)) <= mixing.PEAK + 1e-7
    residual = mixture.wave - mixture.peak_scale * clean
    measured = 10 * np.log10(np.sum((mixture.peak_scale * clean) ** 2) / np.sum(residual.astype(np.float64) ** 2))
    assert measured == pytest.approx(-2.0, abs=1e-4)


def test_mix_refuses_silence():
    with pytest.raises(mixing.SilentClip, match="noise clip is silent"):
        mixing.mix(np.ones(10), np.zeros(10), 0.0)
    with pytest.raises(mixing.SilentClip, match="clean clip is silent"):
        mixing.mix(np.zeros(10), np.ones(10), 0.0)


@pytest.mark.parametrize("value, expected", [(None, (-5.0, 5.0)), ("", (-5.0, 5.0)), ("(-3, 4)", (-3.0, 4.0)),
                                             ("0,10", (0.0, 10.0)), ([1, 2], (1.0, 2.0)), (3, (3.0, 3.0))])
def test_snr_ranges(value, expected):
    assert mixing.parse_snr_range(value) == expected


@pytest.mark.parametrize("value", ["5,-5", "a,b", (1, 2, 3), "nan,1"])
def test_bad_snr_ranges(value):
    with pytest.raises(ValueError, match="SNR range"):
        mixing.parse_snr_range(value)


# ---------------------------------------------------------------------------------------------------- noise_mixtures()


def test_mixtures_have_the_drawn_snr_and_the_clean_clips_identity(tmp_path):
    clean, noise = _world(str(tmp_path / "data"))
    clips, skipped = _make(clean, noise, tmp_path / "cache", count=7, snr_db=(-4.0, 6.0))
    assert skipped == [] and len(clips) == 7
    by_path = {c.path: c for c in clean}
    noise_by_path = {c.path: c for c in noise}
    table = mixing.manifest(clips)
    # the noise clips are used in turns: 7 mixtures of 3 noise clips use each 2 or 3 times
    assert sorted(np.bincount([sorted(noise_by_path).index(m["noise"]) for m in table])) == [2, 2, 3]
    for clip, entry in zip(clips, table):
        source, noise_clip = by_path[entry["clean"]], noise_by_path[entry["noise"]]
        assert (clip.machine_type, clip.machine_id, clip.section, clip.domain, clip.attributes, clip.split,
                clip.label) == (source.machine_type, source.machine_id, source.section, source.domain,
                                source.attributes, "train", dcase.NORMAL)
        # same section as the noise clip when some clean clip has it; section 02 has none: any clean clip
        if noise_clip.section in ("00", "01"):
            assert source.section == noise_clip.section
        # the file name parses to the clean clip's unit and domain, for dcase and for the kNN / classifier code
        assert dcase.unit_of(clip.path) == (source.section, source.domain)
        assert units_of([clip.path]) == [source.section]
        assert dcase.parse_name(clip.path, "fan", "train").section == source.section
        # measure the SNR back from the 16-bit wav: least squares of the mixture on the clean and the noise wave
        mixed, rate = sf.read(clip.path, dtype="float64")
        assert rate == RATE and len(mixed) == RATE and np.max(np.abs(mixed)) <= 1.0
        clean_wave = audio.load_audio(source.path, RATE, SECONDS).astype(np.float64)
        noise_wave = audio.load_audio(noise_clip.path, RATE, SECONDS).astype(np.float64)
        (a, b), *_ = np.linalg.lstsq(np.stack([clean_wave, noise_wave], axis=1), mixed, rcond=None)
        measured = 10 * np.log10(np.sum((a * clean_wave) ** 2) / np.sum((b * noise_wave) ** 2))
        assert -4.0 <= entry["snr_db"] <= 6.0
        assert measured == pytest.approx(entry["snr_db"], abs=0.02)
        assert a == pytest.approx(entry["peak_scale"], rel=1e-3)
    assert len({c.path for c in clips}) == 7
    assert len({round(m["snr_db"], 6) for m in table}) == 7  # drawn, not fixed


def test_same_seed_same_mixtures_other_seed_others(tmp_path):
    clean, noise = _world(str(tmp_path / "data"))
    first, _ = _make(clean, noise, tmp_path / "cache_a", count=5, seed=3)
    again, _ = _make(list(reversed(clean)), list(reversed(noise)), tmp_path / "cache_b", count=5, seed=3)
    other, _ = _make(clean, noise, tmp_path / "cache_c", count=5, seed=4)
    describe = lambda clips: [(os.path.basename(c.path), m["clean"], m["noise"], m["snr_db"])  # noqa: E731
                              for c, m in zip(clips, mixing.manifest(clips))]
    assert describe(first) == describe(again)
    for a, b in zip(first, again):
        with open(a.path, "rb") as x, open(b.path, "rb") as y:
            assert x.read() == y.read()
    assert [m["snr_db"] for m in mixing.manifest(other)] != [m["snr_db"] for m in mixing.manifest(first)]


def test_a_second_call_reuses_the_cache(tmp_path, monkeypatch):
    clean, noise = _world(str(tmp_path / "data"))
    first, _ = _make(clean, noise, tmp_path / "cache")
    stamps = [os.stat(c.path).st_mtime_ns for c in first]

    def no_reading(*args, **kwargs):
        raise AssertionError("a cached mixture was rebuilt")

    monkeypatch.setattr(mixing, "load_clip", no_reading)
    second, _ = _make(clean, noise, tmp_path / "cache")
    assert second == first and [os.stat(c.path).st_mtime_ns for c in second] == stamps
    # other settings are another entry; a damaged entry is rebuilt
    monkeypatch.undo()
    other, _ = _make(clean, noise, tmp_path / "cache", snr_db=(0.0, 1.0))
    assert os.path.dirname(other[0].path) != os.path.dirname(first[0].path)
    with open(first[0].path, "r+b") as handle:
        handle.truncate(100)
    rebuilt, _ = _make(clean, noise, tmp_path / "cache")
    assert rebuilt == first and os.path.getsize(first[0].path) > 100


def test_broken_and_silent_noise_clips_are_reported_and_skipped(tmp_path):
    root = str(tmp_path / "data")
    clean, _ = _world(root, noise_names=("section_00_noise_0000.wav",))
    folder = os.path.join(root, "fan", "supplemental")
    with open(os.path.join(folder, "section_00_noise_0001.wav"), "wb") as handle:
        handle.write(b"RIFF\x00\x00\x00\x00WAVEnot really")
    sf.write(os.path.join(folder, "section_01_noise_0002.wav"), np.zeros(RATE, np.float32), RATE)
    noise = dcase.find_supplemental(root, "fan").select("noise")
    assert len(noise) == 3
    clips, skipped = _make(clean, noise, tmp_path / "cache", count=6)
    assert len(clips) == 2  # only the good noise clip's two turns
    assert sorted(os.path.basename(s["file"]) for s in skipped) == ["section_00_noise_0001.wav",
                                                                    "section_01_noise_0002.wav"]
    assert all(s["error"] for s in skipped)
    assert {m["noise"] for m in mixing.manifest(clips)} == {os.path.join(folder, "section_00_noise_0000.wav")}
    # the skipped list comes back from the cache too
    assert _make(clean, noise, tmp_path / "cache", count=6) == (clips, skipped)


def test_noise_of_a_type_without_clean_clips_is_reported(tmp_path):
    clean, noise = _world(str(tmp_path / "data"), noise_names=("section_00_noise_0000.wav",))
    stray = dcase.SupplementalClip(noise[0].path, "valve", "00", "noise")
    clips, skipped = _make(clean, [stray], tmp_path / "cache")
    assert clips == [] and skipped[0]["file"] == stray.path and "valve" in skipped[0]["error"]
    assert _make([], noise, tmp_path / "cache") == ([], [])
    assert _make(clean, noise, tmp_path / "cache", count=0) == ([], [])


def test_2020_and_mimii_clean_clips_keep_their_machine_id(tmp_path):
    data = str(tmp_path / "data")
    dev = _wav(os.path.join(data, "fan", "train", "normal_id_02_00000001.wav"), seed=1)
    mimii = _wav(os.path.join(data, "raw", "fan", "id_04", "normal", "00000007.wav"), seed=2)
    noise = _wav(os.path.join(data, "fan", "supplemental", "section_00_noise_0000.wav"), seed=3)
    clean = [dcase.parse_name(dev, "fan", "train"),
             dcase.Clip(mimii, "fan", "04", "train", dcase.NORMAL)]
    noises = [dcase.SupplementalClip(noise, "fan", "00", "noise")]
    clips, skipped = _make(clean, noises, tmp_path / "cache", count=4)
    assert skipped == [] and len(clips) == 4
    for clip, entry in zip(clips, mixing.manifest(clips)):
        expected = "02" if entry["clean"] == dev else "04"
        assert clip.section == expected and dcase.unit_of(clip.path) == (expected, None)
        assert os.path.isfile(clip.path)
