"""A method that declares the "noise" supplemental kind trains on noise mixtures: pipeline._with_supplemental adds
one mixture per noise-only clip to the fit clips and says so in the results."""

import dataclasses
import os

import numpy as np
import pytest
import soundfile as sf

from asd_jax import config as config_lib
from asd_jax import pipeline
from asd_jax.data import dcase, loading, mixing
from asd_jax.methods import registry

RATE = 16_000


def _wav(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(RATE)).astype(np.float32), RATE,
             subtype="PCM_16")


def _data(root) -> loading.Data:
    """A tiny DCASE 2025 bearing folder: 3 normal training clips (2 fit, 1 held out), 1 test clip, and a
    supplemental folder of 2 clean machine and 3 noise-only clips, one of them unreadable."""
    train = ["section_00_source_train_normal_0000_noAttribute.wav",
             "section_00_source_train_normal_0001_noAttribute.wav",
             "section_00_target_train_normal_0000_noAttribute.wav"]
    supplemental = ["section_00_machine_0000_.wav", "section_00_machine_source_0001_noAttribute.wav",
                    "section_00_noise_0000.wav", "section_00_noise_supplemental_normal_0001.wav"]
    for i, name in enumerate(train):
        _wav(os.path.join(root, "bearing", "train", name), i)
    _wav(os.path.join(root, "bearing", "test", "section_00_source_test_anomaly_0000_noAttribute.wav"), 10)
    for i, name in enumerate(supplemental):
        _wav(os.path.join(root, "bearing", "supplemental", name), 20 + i)
    with open(os.path.join(root, "bearing", "supplemental", "section_00_target_noise_0002.wav"), "wb") as handle:
        handle.write(b"not a wav")
    found = dcase.find_clips(root, "bearing")
    clips = found.select("train")
    return loading.Data(root, root, clips[:2], clips[2:], found.select("test"), [], "dcase2025", "",
                        supplemental=dcase.find_supplemental(root, "bearing").clips)


def _config(tmp_path, **settings):
    config = config_lib.get_config()
    config.cache_dir, config.progress, config.machine_type = str(tmp_path / "cache"), False, "bearing"
    config.features.duration_s, config.features.channel = 1.0, "mean"
    for key, value in settings.items():
        config[key] = value
    return config


@pytest.fixture
def noise_method():
    return dataclasses.replace(registry.get("dense_ae"), name="dense_ae_noise", supplemental=("noise",))


def test_registry_accepts_noise_and_refuses_unknown_kinds():
    base = registry.get("dense_ae")
    assert dataclasses.replace(base, supplemental=("machine", "noise")).supplemental == ("machine", "noise")
    with pytest.raises(ValueError, match="supplemental kinds \\['clean'\\]"):
        dataclasses.replace(base, supplemental=("clean",))


def test_noise_mixtures_are_added_one_per_noise_clip(tmp_path, noise_method, capsys):
    data = _data(str(tmp_path / "data"))
    config = _config(tmp_path)
    clips, said = pipeline._with_supplemental(config, noise_method, data)
    mixtures = clips[len(data.fit):]
    assert clips[:len(data.fit)] == data.fit
    # 3 noise clips, one unreadable: its turn is skipped and reported
    assert len(mixtures) == 2 and said["used"] == {"machine": 0, "noise": 2}
    assert said["found"] == {"machine": 2, "noise": 3} and said["setting"] == "auto"
    assert said["noise_snr_db"] == [-5.0, 5.0]
    assert [os.path.basename(s["file"]) for s in said["skipped"]] == ["section_00_target_noise_0002.wav"]
    assert "2 noise mixtures at -5 to 5 dB SNR" in capsys.readouterr().out
    fit_paths = {c.path for c in data.fit}
    for clip, entry in zip(mixtures, mixing.manifest(mixtures)):
        assert entry["clean"] in fit_paths and -5.0 <= entry["snr_db"] <= 5.0
        assert clip.split == "train" and clip.label == dcase.NORMAL and os.path.isfile(clip.path)
        assert clip.path.startswith(str(tmp_path / "cache"))
        assert sf.info(clip.path).frames == RATE
    # the configured range, the cache reused for equal settings
    again, _ = pipeline._with_supplemental(config, noise_method, data)
    assert again == clips
    narrow, said = pipeline._with_supplemental(_config(tmp_path, supplemental_noise_snr_db="1,2"), noise_method, data)
    assert said["noise_snr_db"] == [1.0, 2.0]
    assert all(1.0 <= m["snr_db"] <= 2.0 for m in mixing.manifest(narrow[len(data.fit):]))


def test_both_kinds_and_none(tmp_path, noise_method):
    data = _data(str(tmp_path / "data"))
    both = dataclasses.replace(noise_method, supplemental=("machine", "noise"))
    clips, said = pipeline._with_supplemental(_config(tmp_path), both, data)
    assert len(clips) == len(data.fit) + 2 + 2 and said["used"] == {"machine": 2, "noise": 2}
    clips, said = pipeline._with_supplemental(_config(tmp_path, supplemental="none"), noise_method, data)
    assert clips == data.fit and said["used"] == {"machine": 0, "noise": 0} and "noise_snr_db" not in said
    plain, said = pipeline._with_supplemental(_config(tmp_path), registry.get("dense_ae"), data)
    assert plain == data.fit and said["used"]["noise"] == 0
