"""DCASE 2025 and 2026 layouts on generated files: 2025's supplemental folder and hidden attributes, 2026's
two-channel clips, emulated machine types, name attributes and eval names, edition detection and the official
score."""

import os

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from asd_jax.data import audio, dcase
from asd_jax.evaluate import official

RATE = 16_000


def _wav(path, channels=1, seed=0, samples=800):
    """A short 16-bit clip; channel 0 a 440 Hz tone, channel 1 (if any) seeded noise, so the two differ."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / RATE)
    noise = 0.1 * np.random.default_rng(seed).standard_normal(samples)
    data = np.stack([tone, noise][:channels], axis=1).astype(np.float32)
    sf.write(str(path), data, RATE, subtype="PCM_16")
    return data


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


def _layout(root, machine_type, names, channels=1):
    """Write ``names`` ({"train": [...], "test": [...], "supplemental": [...]}) under ``root/machine_type``."""
    for folder, files in names.items():
        for i, name in enumerate(files):
            _wav(os.path.join(root, machine_type, folder, name), channels, seed=i)


# ---------------------------------------------------------------------------------------------------- DCASE 2025

DEV_2025 = {
    "train": ["section_00_source_train_normal_0000_noAttribute.wav",
              "section_00_source_train_normal_0001_noAttribute.wav",
              "section_00_target_train_normal_0000_noAttribute.wav"],
    "test": ["section_00_source_test_normal_0000_noAttribute.wav",
             "section_00_target_test_anomaly_0000_noAttribute.wav"],
    "supplemental": ["section_00_machine_0001_.wav", "section_00_machine_source_0000_noAttribute.wav",
                     "section_00_source_supplemental_machine_0002.wav", "section_00_noise_supplemental_normal_0000.wav",
                     "section_00_noise_0003_mic_1.wav", "section_00_source_train_normal_0005_noAttribute.wav",
                     "recording.wav"],
}


def test_2025_dev_layout_keeps_supplemental_clips_out_and_hides_no_attributes(tmp_path):
    root = str(tmp_path)
    _layout(root, "bearing", DEV_2025)
    _write(tmp_path / "bearing" / "attributes_00.csv",
           "file_name,d1p,d1v,d2p,d2v\n"
           "bearing/train/section_00_source_train_normal_0000_noAttribute.wav,noAttribute,,,\n"
           "section_00_source_train_normal_0001_noAttribute,pro,noAttribute,vel,noAttribute\n"
           "bearing/test/section_00_source_test_normal_0000_noAttribute.wav\n")
    found = dcase.find_clips(root, "bearing")
    assert len(found.clips) == 5 and not found.unmatched
    assert all(os.sep + "supplemental" + os.sep not in c.path for c in found.clips)
    assert all(c.attributes == {} for c in found.clips)  # hidden values give no attribute, not a fake class
    assert (found.edition, found.channels, found.layout, found.supplemental) == ("dcase2025", 1, "dcase", True)
    assert "supplemental/ folder" in found.edition_reason and "best guess" not in found.edition_reason
    assert [(c.split, c.domain, c.label) for c in found.select("test")] == [("test", "source", dcase.NORMAL),
                                                                             ("test", "target", dcase.ANOMALY)]

    supplemental = dcase.find_supplemental(root, "bearing")
    assert supplemental.folder == os.path.join(root, "bearing", "supplemental")
    got = {c.name: (c.kind, c.domain, c.section, c.attributes) for c in supplemental.clips}
    assert got == {
        "section_00_machine_0001_.wav": ("machine", None, "00", {}),
        "section_00_machine_source_0000_noAttribute.wav": ("machine", "source", "00", {}),
        "section_00_source_supplemental_machine_0002.wav": ("machine", "source", "00", {}),
        "section_00_noise_supplemental_normal_0000.wav": ("noise", None, "00", {}),
        "section_00_noise_0003_mic_1.wav": ("noise", None, "00", {"mic": "1"}),
    }
    assert sorted(os.path.basename(p) for p in supplemental.unmatched) == [
        "recording.wav", "section_00_source_train_normal_0005_noAttribute.wav"]
    assert len(supplemental.select("noise")) == 2 and len(supplemental.select("machine")) == 3
    with pytest.raises(ValueError, match="supplemental kind 'clean'"):
        supplemental.select("clean")
    # the machine folder works as the root too; a type without the folder has no supplemental clips
    assert len(dcase.find_supplemental(os.path.join(root, "bearing"), "bearing").clips) == 5
    _layout(root, "fan", {"train": ["section_00_source_train_normal_0000_m-n_W.wav"]})
    assert dcase.find_supplemental(root, "fan").clips == []
    with pytest.raises(dcase.DatasetError, match="does not exist"):
        dcase.find_supplemental(str(tmp_path / "nowhere"), "bearing")


@pytest.mark.parametrize("name, expected", [
    ("section_00_machine_0001_.wav", ("machine", None, {})),
    ("section_01_machine_target_0004_vel_8.wav", ("machine", "target", {"vel": "8"})),
    ("section_00_target_supplemental_noise_0000_noAttribute.wav", ("noise", "target", {})),
    ("SECTION_00_NOISE_0001.wav", ("noise", None, {})),
    ("section_00_machine_noise_0000.wav", None),  # both kinds
    ("section_00_source_target_machine_0000.wav", None),  # both domains
    ("section_00_supplemental_0000.wav", None),  # no kind
    ("section_00_clean_machine_0000.wav", None),  # a word no known form has
    ("section_00_source_train_normal_0000_vel_8.wav", None),  # a training clip's name
    ("section_00_0000.wav", None),
])
def test_supplemental_names_are_recognised_or_reported(name, expected):
    clip = dcase.parse_supplemental_name(f"/d/x/supplemental/{name}", "x")
    assert (None if clip is None else (clip.kind, clip.domain, clip.attributes)) == expected


def test_2025_names_alone_are_a_documented_guess_and_hidden_attribute_types_narrow_it(tmp_path):
    root = str(tmp_path)
    names = {"train": ["section_00_source_train_normal_0000_noAttribute.wav"],
             "test": ["section_00_source_test_anomaly_0000_noAttribute.wav"]}
    _layout(root, "slider", names)  # slider hid its attributes in 2024 and 2025: names cannot tell them apart
    found = dcase.find_clips(root, "slider")
    assert found.edition == "dcase2024" and "best guess dcase2024" in found.edition_reason
    assert "dcase2025" in found.edition_reason
    _layout(root, "slider", {"supplemental": ["section_00_machine_0000_.wav"]})
    assert dcase.find_clips(root, "slider").edition == "dcase2025"
    _layout(root, "gearbox", names)
    assert dcase.find_clips(root, "gearbox").edition == "dcase2024"  # gearbox hid them in 2024 only


def test_hidden_attribute_cells_give_no_attributes(tmp_path):
    path = _write(tmp_path / "attributes_00.csv",
                  "file_name,d1p,d1v,d2p,d2v,note\n"
                  "a.wav,noAttribute,,,,\n"
                  "b.wav,speed,noAttribute,load,3,NOATTRIBUTE\n"
                  "c\n"
                  "d.wav,vel,12,,,x\n")
    assert dcase.read_attribute_csv(path) == {"a.wav": {}, "b.wav": {"load": "3"}, "c.wav": {},
                                              "d.wav": {"vel": "12", "note": "x"}}


# ---------------------------------------------------------------------------------------------------- DCASE 2026

DEV_2026 = {
    "train": ["section_00_source_train_normal_0000_car_D2_spd_5_mic_2_mic_1.wav",
              "section_00_source_train_normal_0001_car_A2_spd_28V_mic_1_noise_1.wav",
              "section_00_target_train_normal_0000_car_B1_spd_3_mic_2_mic_1.wav"],
    "test": ["section_00_source_test_normal_0000_car_D2_spd_5_mic_2_mic_1.wav",
             "section_00_source_test_anomaly_0000_car_D2_spd_5_mic_2_mic_1.wav",
             "section_00_target_test_normal_0000_car_B1_spd_3_mic_2_mic_1.wav",
             "section_00_target_test_anomaly_0000_car_B1_spd_3_mic_2_mic_1.wav"],
}


def test_2026_dev_layout_two_channels_emu_type_and_name_attributes(tmp_path):
    root = str(tmp_path)
    _layout(root, "ToyCarEmu", DEV_2026, channels=2)
    assert dcase.list_machine_types(root) == ["ToyCarEmu"]
    found = dcase.find_clips(root, "ToyCarEmu")
    assert (found.edition, found.channels, found.supplemental) == ("dcase2026", 2, False) and not found.unmatched
    assert "ToyCarEmu has section names in DCASE 2026 only" in found.edition_reason
    by_name = {c.name: c for c in found.clips}
    assert by_name[DEV_2026["train"][0]].attributes == {"car": "D2", "spd": "5", "mic": "2", "mic.2": "1"}
    assert by_name[DEV_2026["train"][1]].attributes == {"car": "A2", "spd": "28V", "mic": "1", "noise": "1"}
    assert [(c.domain, c.label) for c in found.select("test")] == [
        ("source", dcase.ANOMALY), ("source", dcase.NORMAL), ("target", dcase.ANOMALY), ("target", dcase.NORMAL)]

    path = by_name[DEV_2026["train"][0]].path
    written, _ = sf.read(path, dtype="float32")
    near = audio.load_audio(path, duration_s=None, channel="0")
    far = audio.load_audio(path, duration_s=None, channel=1)
    mean = audio.load_audio(path, duration_s=None, channel="mean")
    np.testing.assert_array_equal(near, audio.load_audio(path, duration_s=None, channel=0))
    np.testing.assert_array_equal(far, audio.load_audio(path, duration_s=None, channel="1"))
    np.testing.assert_allclose(near, written[:, 0], atol=1e-6)
    np.testing.assert_allclose(far, written[:, 1], atol=1e-6)
    np.testing.assert_allclose(mean, written.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(near, 0.3 * np.sin(2 * np.pi * 440 * np.arange(800) / RATE), atol=1e-4)
    assert np.abs(near - far).mean() > 0.05 and np.abs(near - mean).mean() > 0.02 and np.abs(far - mean).mean() > 0.02
    with pytest.raises(audio.ChannelError, match="channel 2 requested but the file has 2 channel") as info:
        audio.load_audio(path, channel=2)
    assert info.value.path == path and os.path.basename(path) in str(info.value) and "0 to 1" in str(info.value)


def test_two_channels_tell_2026_from_earlier_editions_of_the_same_type(tmp_path):
    names = {"train": ["section_00_source_train_normal_0000_spd_1.wav"],
             "test": ["section_00_source_test_anomaly_0000_spd_1.wav"]}
    _layout(str(tmp_path / "stereo"), "fan", names, channels=2)
    _layout(str(tmp_path / "mono"), "fan", names, channels=1)
    stereo = dcase.find_clips(str(tmp_path / "stereo"), "fan")
    assert stereo.edition == "dcase2026" and "two-channel clips" in stereo.edition_reason
    mono = dcase.find_clips(str(tmp_path / "mono"), "fan")
    assert mono.edition == "dcase2023" and "single-channel clips" in mono.edition_reason
    assert "best guess" in mono.edition_reason


def test_a_passed_edition_overrides_hints_that_fit_no_edition(tmp_path):
    root = str(tmp_path)
    _layout(root, "slider", {"train": ["section_00_source_train_normal_0000_vel_1.wav"]}, channels=2)
    with pytest.raises(dcase.EditionConflict, match=r"slider: slider clips fit no single DCASE edition: slider has "
                       r"section names in DCASE 2021-2025 only; but two-channel clips are DCASE 2026's .*; pass the "
                       r"edition of the data"):
        dcase.find_clips(root, "slider")
    forced = dcase.find_clips(root, "slider", edition="2026")
    assert forced.edition == "dcase2026" and forced.edition_reason.startswith("passed in")
    with pytest.raises(dcase.DatasetError, match="edition dcase2020 was asked for"):
        dcase.find_clips(root, "slider", edition="dcase2020")


@pytest.mark.parametrize("eval_name", ["section_00_test_{:04d}.wav", "section_00_{:04d}.wav"])
def test_2026_eval_names_are_labelled_by_ground_truth(tmp_path, eval_name):
    """Eval clips carry no label or domain in the name; the official ground-truth folders give both. The released
    2026 eval set names clips section_00_NNNN.wav, the baseline's documentation section_00_test_NNNN.wav."""
    root = str(tmp_path / "eval")
    names = [eval_name.format(i) for i in range(4)]
    _layout(root, "Sander", {"test": names, "train": ["section_00_source_train_normal_0000_spd_4_grit_120.wav"]},
            channels=2)
    truth = tmp_path / "truth"
    _write(truth / "ground_truth_data" / "ground_truth_Sander_section_00_test.csv",
           "".join(f"{n},{label}\n" for n, label in zip(names, (0, 1, 0, 1))))
    _write(truth / "ground_truth_domain" / "ground_truth_Sander_section_00_test.csv",
           "".join(f"{n},{domain}\n" for n, domain in zip(names, (0, 0, 1, 1))))
    found = dcase.find_clips(root, "Sander", ground_truth_csv=str(truth))
    assert found.edition == "dcase2026" and found.channels == 2 and not found.unmatched
    assert [(c.name, c.split, c.label, c.domain) for c in found.select("test")] == [
        (names[0], "test", dcase.NORMAL, "source"), (names[1], "test", dcase.ANOMALY, "source"),
        (names[2], "test", dcase.NORMAL, "target"), (names[3], "test", dcase.ANOMALY, "target")]
    assert found.select("train")[0].attributes == {"spd": "4", "grit": "120"}
    assert dcase.unit_of(os.path.join(root, "Sander", "test", names[2])) == ("00", None)

    # the baseline's eval_data_list_2026.csv form: a machine-type row, then eval name and dev-style name
    listing = _write(tmp_path / "eval_data_list_2026.csv", "Sander\n" + "".join(
        f"{n},section_00_{d}_test_{kind}_{i:04d}_spd_4_grit_120.wav\n"
        for i, (n, d, kind) in enumerate(zip(names, ("source", "source", "target", "target"),
                                             ("normal", "anomaly", "normal", "anomaly")))))
    listed = dcase.find_clips(root, "Sander", ground_truth_csv=listing).select("test")
    assert [(c.label, c.domain, c.attributes) for c in listed] == [
        (dcase.NORMAL, "source", {"spd": "4", "grit": "120"}), (dcase.ANOMALY, "source", {"spd": "4", "grit": "120"}),
        (dcase.NORMAL, "target", {"spd": "4", "grit": "120"}), (dcase.ANOMALY, "target", {"spd": "4", "grit": "120"})]


# ---------------------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("edition", ["dcase2025", "dcase2026"])
def test_official_score_of_found_clips_recomputed_with_sklearn_and_scipy(tmp_path, edition):
    """The 2022-2024 protocol: per section, AUC of source normals vs all anomalies, AUC of target normals vs all
    anomalies, pAUC (max_fpr 0.1) on all clips; the score is the harmonic mean of those figures over every section
    of every machine type."""
    root = str(tmp_path)
    rng = np.random.default_rng(7)
    per_type, figures = {}, []
    for machine_type in ("ToyCarEmu", "valveEmu"):
        names = [f"section_00_{d}_test_{k}_{i:04d}_pat_01.wav" for d in ("source", "target")
                 for k, count in (("normal", 6), ("anomaly", 4)) for i in range(count)]
        _layout(root, machine_type, {"test": names}, channels=2)
        found = dcase.find_clips(root, machine_type, edition=edition)
        clips = found.select("test")
        labels = np.array([c.label for c in clips])
        domains = np.array([c.domain for c in clips])
        scores = rng.normal(0, 1, len(clips)) + 1.0 * labels + 0.6 * (domains == "target") * (1 - labels)
        per_type[machine_type] = result = official.official_metrics(
            [c.section for c in clips], labels, scores, [c.domain for c in clips], edition=found.edition)
        expected = []
        for domain in ("source", "target"):
            chosen = (labels == 1) | (domains == domain)
            expected.append(roc_auc_score(labels[chosen], scores[chosen]))
        expected.append(roc_auc_score(labels, scores, max_fpr=0.1))
        section = result["per_section"]["00"]
        assert [section["auc_source"], section["auc_target"], section["pauc"]] == pytest.approx(expected)
        assert result["protocol"] == edition and result["official_score"] == pytest.approx(hmean(expected))
        figures += expected
    summary = official.summary_across_types(per_type, edition)
    assert summary["official_score"] == pytest.approx(hmean(figures))
    assert official.figure_keys(edition) == ("auc_source", "auc_target", "pauc")
