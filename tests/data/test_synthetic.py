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


def test_describe_and_synth_mode_settings(tmp_path, capsys):
    """--mode=synth is the one way to write a set: its layout and size settings choose the generator's config."""
    from asd_jax.config import get_config
    from asd_jax.data import loading

    assert "not mimii" in S.describe().lower()
    config = get_config()
    config.synthetic.seed, config.synthetic.snr_db, config.synthetic.size = 4, -6.0, "dcase_dev"
    assert loading.synth_config(config) == S.SynthConfig.dcase_dev_size(seed=4, snr_db=-6.0)
    config.synthetic.layout, config.synthetic.seed, config.synthetic.size = "dcase2023", 2, "default"
    assert loading.synth_config(config) == S.SynthConfig(layout="dcase2023", seed=2, snr_db=-6.0)
    config.synthetic.size = "dcase_dev"
    assert loading.synth_config(config) == S.SynthConfig.dcase2023_dev_size(seed=2, snr_db=-6.0)


TINY_2023 = S.SynthConfig(layout="dcase2023", num_train=4, num_train_target=2, num_test_normal=2, num_test_anomaly=3,
                          duration_s=1.0)
NAME_2023 = re.compile(r"^section_00_(source|target)_(train|test)_(normal|anomaly)_(\d{4})_vel_(\d+)_snr_(-?\d+)\.wav$")


def test_dcase2023_layout_is_parsed_back_with_domains_and_attributes(tmp_path):
    from asd_jax.data.dcase import find_clips as find

    summary = S.generate_dataset(str(tmp_path), TINY_2023, num_workers=1, progress=False)
    files = _files(str(tmp_path))
    assert len(files) == summary["clips"] == 4 + 2 + 2 * (2 + 3)
    assert all(NAME_2023.match(os.path.basename(f)) for f in files), files
    assert summary["domains"]["00"] == {"source": {"train": {"normal": 4}, "test": {"normal": 2, "anomaly": 3}},
                                        "target": {"train": {"normal": 2}, "test": {"normal": 2, "anomaly": 3}}}

    found = find(str(tmp_path), "slider", edition="dcase2023")
    assert found.edition == "dcase2023" and not found.unmatched and len(found.clips) == len(files)
    assert find(str(tmp_path), "slider").edition == "dcase2023"  # also the guess without the override
    counts = {(c.domain, c.split, c.label): 0 for c in found.clips}
    for clip in found.clips:
        counts[(clip.domain, clip.split, clip.label)] += 1
    assert counts == {("source", "train", NORMAL): 4, ("target", "train", NORMAL): 2,
                      ("source", "test", NORMAL): 2, ("source", "test", ANOMALY): 3,
                      ("target", "test", NORMAL): 2, ("target", "test", ANOMALY): 3}
    assert {c.section for c in found.clips} == {"00"}
    assert {c.domain: c.attributes["vel"] for c in found.clips} == {"source": "100", "target": "130"}
    assert {c.domain: c.attributes["snr"] for c in found.clips} == {"source": "0", "target": "-3"}

    attributes = (tmp_path / "slider" / "attributes_00.csv").read_text().splitlines()
    assert attributes[0] == "file_name,d1p,d1v,d2p,d2v" and len(attributes) == 1 + len(files)
    assert "slider/train/section_00_target_train_normal_0001_vel_130_snr_-3.wav,vel,130,snr,-3" in attributes
    manifest = json.loads((tmp_path / S.MANIFEST).read_text())
    assert manifest["config"]["layout"] == "dcase2023" and S.is_complete(str(tmp_path), TINY_2023)
    assert {f["domain"] for f in manifest["test_clips"].values()} == {"source", "target"}

    S.generate_dataset(str(tmp_path), TINY, num_workers=1, progress=False)  # back to the 2020 layout: no leftovers
    assert all(DEV_NAME.match(os.path.basename(f)) for f in _files(str(tmp_path)))
    assert not (tmp_path / "slider" / "attributes_00.csv").exists()


def test_dcase2023_source_is_the_2020_recording_and_target_is_shifted():
    config_2020 = S.SynthConfig(duration_s=1.0)
    source = S.synth_clip(TINY_2023, "00", "train", 1, domain="source")
    np.testing.assert_array_equal(source, S.synth_clip(config_2020, "00", "train", 1))
    target = S.synth_clip(TINY_2023, "00", "train", 1, domain="target")
    assert np.abs(target - source).mean() > 0.1 * np.abs(source).mean()
    np.testing.assert_array_equal(target, S.synth_clip(TINY_2023, "00", "train", 1, domain="target"))
    slower = S.SynthConfig(layout="dcase2023", duration_s=1.0, target_speed=0.8)
    assert not np.array_equal(target, S.synth_clip(slower, "00", "train", 1, domain="target"))
    with pytest.raises(ValueError, match="domain must be"):
        S.synth_clip(TINY_2023, "00", "train", 1, domain="other")


def test_dcase2023_config_defaults_and_hash():
    config = S.SynthConfig(layout="dcase2023")
    assert config.machine_ids == ("00",) and config.counts("00") == {
        "train": 120, "test_normal": 40, "test_anomaly": 40, "train_target": 10}
    dev = S.SynthConfig.dcase2023_dev_size()
    assert dev.counts("00") == {"train": 990, "test_normal": 50, "test_anomaly": 50, "train_target": 10}
    assert len(S.clip_plan(dev)) == 990 + 10 + 2 * 100
    # the dcase2020 layout's JSON and hash do not see the dcase2023 fields
    assert "layout" not in S.SynthConfig().to_json() and S.SynthConfig().machine_ids == ("00", "02", "04", "06")
    assert S.SynthConfig(target_speed=1.5).short_hash() == S.SynthConfig().short_hash()
    assert config.short_hash() != S.SynthConfig().short_hash()
    assert S.SynthConfig(**config.to_json()) == config
    for bad in ({"layout": "dcase2019"}, {"layout": "dcase2023", "target_speed": 3.0},
                {"layout": "dcase2023", "num_train_target": -1}):
        with pytest.raises(ValueError):
            S.SynthConfig(**bad)


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
