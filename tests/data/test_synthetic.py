"""The synthetic slide-rail data set: layout, determinism, faults, caching and difficulty."""

import filecmp
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from asd_jax.data import synthetic as S
from asd_jax.data.dcase import ANOMALY, NORMAL, find_clips

TINY = S.SynthConfig(machine_ids=("00", "04"), num_train=3, num_test_normal=2, num_test_anomaly=4, duration_s=2.0)
DEV_NAME = re.compile(r"^(normal|anomaly)_id_(\d\d)_(\d{8})\.wav$")


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if f.endswith(".wav"))


def _mean_log_spectrum(wave: np.ndarray) -> np.ndarray:
    _, _, power = signal.spectrogram(wave, fs=16_000, nperseg=1024, noverlap=512)
    return 10 * np.log10(power + 1e-12).mean(axis=1)


def test_layout_names_and_wav_format(tmp_path):
    summary = S.generate_dataset(str(tmp_path), TINY, num_workers=1, progress=False)
    files = _files(str(tmp_path))
    assert len(files) == summary["clips"] == 2 * (3 + 2 + 4)
    for relpath in files:
        machine_type, split, name = relpath.split(os.sep)
        match = DEV_NAME.match(name)
        assert machine_type == "slider" and split in ("train", "test") and match, relpath
        assert match[2] in TINY.machine_ids
        assert split == "test" or match[1] == "normal"
        info = sf.info(os.path.join(tmp_path, relpath))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16_000, 1, "PCM_16", 32_000)
    clips = find_clips(str(tmp_path), "slider")
    assert not clips.unmatched
    assert {c.label for c in clips.select("train")} == {NORMAL}
    assert sum(c.label == ANOMALY for c in clips.select("test")) == 8
    assert summary["counts"]["04"] == {"train": {"normal": 3}, "test": {"normal": 2, "anomaly": 4}}
    assert summary["anomaly_kinds"]["00"] == {kind: 1 for kind in S.ANOMALY_KINDS}

    manifest = json.loads((tmp_path / S.MANIFEST).read_text())
    assert "not mimii" in manifest["note"].lower() and manifest["config"] == TINY.to_json()
    faults = manifest["test_clips"]
    assert len(faults) == 12 and faults[os.path.join("slider", "test", "normal_id_00_00000000.wav")]["anomaly"] is None
    severities = [f["severity"] for f in faults.values() if f["anomaly"]]
    assert len(severities) == 8 and all(TINY.severity[0] <= s <= TINY.severity[1] for s in severities)

    smaller = S.SynthConfig(machine_ids=("00",), num_train=1, num_test_normal=1, num_test_anomaly=1, duration_s=2.0)
    S.generate_dataset(str(tmp_path), smaller, num_workers=1, progress=False)
    assert len(_files(str(tmp_path))) == 3  # clips of the earlier, larger config are gone


def test_same_seed_gives_same_bytes_whatever_the_worker_count(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    S.generate_dataset(str(one), TINY, num_workers=1, progress=False)
    S.generate_dataset(str(two), TINY, num_workers=2, progress=False)
    files = _files(str(one))
    assert files == _files(str(two))
    _, mismatch, errors = filecmp.cmpfiles(one, two, files, shallow=False)
    assert not mismatch and not errors


def test_clip_depends_on_seed_and_identity_not_on_the_rest_of_the_set():
    clip = S.synth_clip(TINY, "00", "train", 1)
    assert clip.dtype == np.float32 and clip.shape == (32_000,) and np.abs(clip).max() <= 1.0
    bigger = S.SynthConfig(machine_ids=("06", "00"), num_train=50, num_test_anomaly=9, duration_s=2.0)
    np.testing.assert_array_equal(clip, S.synth_clip(bigger, "00", "train", 1))
    reseeded = S.SynthConfig(duration_s=2.0, seed=1)
    others = [S.synth_clip(TINY, "00", "train", 2), S.synth_clip(TINY, "00", "test", 1),
              S.synth_clip(TINY, "04", "train", 1), S.synth_clip(reseeded, "00", "train", 1)]
    for other in others:
        assert np.abs(other - clip).mean() > 0.1 * np.abs(clip).mean()


@pytest.mark.parametrize("kind", S.ANOMALY_KINDS)
def test_each_fault_changes_the_clip_more_as_severity_grows(kind):
    config = S.SynthConfig(duration_s=4.0)
    clean = S.synth_clip(config, "02", "test", 3, kind, 0.0)
    np.testing.assert_array_equal(clean, S.synth_clip(config, "02", "test", 3, "rail_damage", 0.0))
    reference = _mean_log_spectrum(clean)
    distances = [np.abs(_mean_log_spectrum(S.synth_clip(config, "02", "test", 3, kind, s)) - reference).mean()
                 for s in (0.1, 0.4, 0.7, 1.0)]
    assert distances[0] > 0.01
    assert all(b > a for a, b in zip(distances, distances[1:])), distances


def test_dcase_dev_size_counts_match_the_real_slider_dev_set():
    config = S.SynthConfig.dcase_dev_size(seed=3)
    assert config.seed == 3 and config.machine_ids == ("00", "02", "04", "06")
    expected = {"00": (968, 100, 356), "02": (968, 100, 267), "04": (434, 100, 178), "06": (434, 100, 89)}
    for machine_id, (train, normal, anomaly) in expected.items():
        assert config.counts(machine_id) == {"train": train, "test_normal": normal, "test_anomaly": anomaly}
    plan = S.clip_plan(config)
    assert len(plan) == 4094 and sum(spec.anomaly is not None for spec in plan) == 890
    assert S.SynthConfig.dcase_dev_size(machine_ids=("6",)).counts("06")["train"] == 434
    with pytest.raises(ValueError, match="no machine ids"):
        S.SynthConfig.dcase_dev_size(machine_ids=("01",))


def test_config_normalises_and_validates():
    config = S.SynthConfig(machine_ids=["0", "id_02"], num_train={"02": 5, "00": 7},
                           anomaly_kinds={"00": ("loose_belt",), "02": "speed_change"})
    assert config.machine_ids == ("00", "02") and config.num_train == (7, 5)
    assert config.counts("02")["train"] == 5 and config.kinds("02") == ("speed_change",)
    assert {s.anomaly for s in S.clip_plan(config) if s.machine_id == "00" and s.anomaly} == {"loose_belt"}
    assert hash(config) == hash(S.SynthConfig(**json.loads(json.dumps(config.to_json()))))
    assert config.short_hash() != S.SynthConfig().short_hash()
    for bad in ({"anomaly_kinds": ("rust",)}, {"severity": (0.0, 1.0)}, {"num_train": (1, 2)},
                {"num_train": {"00": 1}}, {"machine_ids": ("00", "0")}, {"seed": -1}):
        with pytest.raises(ValueError):
            S.SynthConfig(**bad)
    with pytest.raises(ValueError, match="training clips are normal"):
        S.synth_clip(TINY, "00", "train", 0, "loose_belt", 0.5)


def test_default_dataset_is_cached_and_an_interrupted_one_is_redone(tmp_path, monkeypatch):
    root = S.default_dataset(config=TINY, num_workers=1, progress=False)
    assert root == os.path.join(os.environ["ASD_JAX_CACHE_DIR"], "synthetic", TINY.short_hash())
    assert S.is_complete(root, TINY) and os.path.isdir(os.path.join(root, "slider", "train"))

    calls = []
    real_generate = S.generate_dataset
    monkeypatch.setattr(S, "generate_dataset", lambda *args, **kw: calls.append(args) or real_generate(*args, **kw))
    assert S.default_dataset(config=TINY, num_workers=1, progress=False) == root and not calls

    os.remove(os.path.join(root, "slider", "test", "anomaly_id_04_00000002.wav"))
    assert S.default_dataset(config=TINY, num_workers=1, progress=False) == root and len(calls) == 1
    os.remove(os.path.join(root, S.MANIFEST))  # as if killed before finishing
    assert S.default_dataset(config=TINY, num_workers=1, progress=False) == root and len(calls) == 2
    assert S.is_complete(root, TINY) and len(_files(root)) == 18

    other = S.default_dataset(str(tmp_path), config=TINY, num_workers=1, progress=False)
    assert other.startswith(str(tmp_path)) and len(calls) == 3


def test_describe_and_command_line(tmp_path, monkeypatch):
    assert "not mimii" in S.describe().lower()
    seen = {}
    monkeypatch.setattr(S, "generate_dataset", lambda out_dir, config, num_workers: seen.update(config=config))
    S.main([str(tmp_path), "--dcase_dev_size", "--seed", "4", "--snr_db", "-6"])
    assert seen["config"] == S.SynthConfig.dcase_dev_size(seed=4, snr_db=-6.0)


@pytest.mark.slow
def test_default_set_defeats_the_energy_detector_but_not_a_spectral_one():
    """Mean log-mel energy must not separate normal from anomalous clips on every id; a per-bin mean/std
    Mahalanobis detector fitted on normal training clips must do clearly better than chance."""
    from sklearn.covariance import LedoitWolf
    from sklearn.metrics import roc_auc_score

    from asd_jax.data.features import FeatureConfig, log_mel

    config = S.SynthConfig()
    train_per_id = 60
    energy, spectral = {}, {}
    for machine_id in config.machine_ids:
        def features(spec):
            mel = log_mel(S.synth_clip(config, machine_id, spec.split, spec.index, spec.anomaly, spec.severity),
                          FeatureConfig())
            return np.concatenate([mel.mean(0), mel.std(0)]), float(mel.mean())

        specs = [s for s in S.clip_plan(config) if s.machine_id == machine_id]
        train = np.array([features(s)[0] for s in specs if s.split == "train"][:train_per_id])
        test = [(features(s), s.anomaly is not None) for s in specs if s.split == "test"]
        labels = [is_anomaly for _, is_anomaly in test]
        energy[machine_id] = roc_auc_score(labels, [mean for (_, mean), _ in test])
        model = LedoitWolf().fit(train)
        spectral[machine_id] = roc_auc_score(labels, model.mahalanobis(np.array([f for (f, _), _ in test])))
    print("energy AUC", energy, "spectral AUC", spectral)
    assert all(auc < 0.9 for auc in energy.values()), energy
    assert np.mean(list(spectral.values())) > 0.7 and min(spectral.values()) > 0.6, spectral
