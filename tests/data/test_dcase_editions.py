"""Names, editions, attributes, ground truth and the raw MIMII split of every DCASE Task 2 edition."""

import collections
import os

import numpy as np
import pytest

from asd_jax.data import dcase


def _touch(root, *names):
    for name in names:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return str(path)


# ------------------------------------------------------------------------------------------------------- names


def test_2020_names_have_id_as_section_and_no_domain():
    clip = dcase.parse_name("/d/fan/train/normal_id_02_00000007.wav", "fan", "train")
    assert (clip.section, clip.machine_id, clip.domain, clip.attributes) == ("02", "02", None, {})
    clip = dcase.parse_name("/d/fan/test/id_05_00000001.wav", "fan", "test")
    assert (clip.section, clip.label, clip.domain) == ("05", dcase.UNKNOWN, None)


def test_section_dev_names_carry_domain_and_attributes():
    clip = dcase.parse_name("x/section_00_target_test_anomaly_0015_car_A2_spd_6_mic_2.wav", "ToyTrain", "test")
    assert (clip.section, clip.machine_id, clip.domain, clip.label) == ("00", "00", "target", dcase.ANOMALY)
    assert clip.attributes == {"car": "A2", "spd": "6", "mic": "2"}
    assert dcase.parse_name("x/section_01_source_train_normal_0000_m-n_W.wav", "fan", None).attributes == {"m-n": "W"}
    assert dcase.parse_name("x/section_00_source_train_normal_0001_noAttribute.wav", "ToothBrush",
                            None).attributes == {}
    assert dcase.parse_name("x/section_02_source_train_normal_0000.wav", "fan", None).attributes == {}
    # 2021 attribute strings that are not key_value pairs are kept whole
    assert dcase.parse_name("x/section_00_source_train_normal_0000_A1Spd28VMic1.wav", "ToyCar",
                            None).attributes == {"attributes": "A1Spd28VMic1"}


def test_eval_names_of_2021_and_2022_plus():
    clip = dcase.parse_name("x/section_03_target_test_0042.wav", "fan", None)
    assert (clip.section, clip.domain, clip.split, clip.label) == ("03", "target", "test", dcase.UNKNOWN)
    clip = dcase.parse_name("x/section_00_0199.wav", "bandsaw", None)
    assert (clip.section, clip.domain, clip.split, clip.label) == ("00", None, "test", dcase.UNKNOWN)


@pytest.mark.parametrize("value, expected", [("2023", "dcase2023"), ("DCASE2021", "dcase2021"), (2020, "dcase2020"),
                                             ("DCASE2025T2", "dcase2025"), (2026, "dcase2026"),
                                             ("auto", None), ("", None), (None, None)])
def test_normalise_edition(value, expected):
    assert dcase.normalise_edition(value) == expected


def test_unknown_edition_is_an_error():
    with pytest.raises(dcase.DatasetError, match="unknown DCASE edition '2019'; expected one of .*dcase2026 or 'auto'"):
        dcase.normalise_edition("2019")


# ---------------------------------------------------------------------------------------------------- editions


@pytest.mark.parametrize("names, machine_type, expected", [
    (["normal_id_00_00000000.wav", "anomaly_id_02_00000001.wav"], "slider", "dcase2020"),
    (["id_01_00000000.wav"], "fan", "dcase2020"),
    (["section_03_source_test_0000.wav", "section_00_source_train_normal_0000_x_1.wav"], "fan", "dcase2021"),
    (["section_00_source_train_normal_0000_vel_1.wav"], "pump", "dcase2021"),
    (["section_00_0000.wav"], "bandsaw", "dcase2023"),
    (["section_00_0000.wav"], "HairDryer", "dcase2024"),
    (["section_00_source_train_normal_0000_noAttribute.wav"], "slider", "dcase2024"),
    (["section_00_source_train_normal_0000_vel_1.wav"], "slider", "dcase2023"),
    (["section_00_source_train_normal_0000_vel_1.wav", "section_01_source_train_normal_0000_vel_1.wav"],
     "bearing", "dcase2022"),
    (["section_01_0000.wav", "section_00_0000.wav"], "fan", "dcase2022"),
    (["section_00_source_train_normal_0000_noAttribute.wav"], "bearing", "dcase2025"),
    (["section_00_0000.wav"], "AutoTrash", "dcase2025"),
    (["section_00_0000.wav"], "ToothBrush", "dcase2024"),
    (["section_00_source_train_normal_0000_noAttribute.wav"], "ToothBrush", "dcase2024"),
    (["section_00_source_train_normal_0000_spd_1.wav"], "ToyDrone", "dcase2023"),
    (["section_00_source_train_normal_0000_car_B1_spd_1_mic_2_mic_1.wav"], "ToyDrone", "dcase2026"),
    (["section_00_source_train_normal_0000_pro_A.wav"], "gearboxEmu", "dcase2026"),
    (["section_00_0000.wav"], "BlowerDustCollector", "dcase2026"),
    (["section_00_test_0000.wav"], "SewingMachine", "dcase2026"),
    (["section_00_source_train_normal_0000_noAttribute.wav"], "ToyCar", "dcase2026"),
])
def test_edition_detection(names, machine_type, expected):
    edition, reason = dcase.detect_edition(names, machine_type)
    assert edition == expected and reason


def test_2021_and_2022_told_apart_by_target_training_clips():
    def names(target_per_section):
        return [f"section_{s:02d}_{d}_train_normal_{i:04d}_a_1.wav" for s in (0, 1)
                for d, count in (("source", 5), ("target", target_per_section)) for i in range(count)]

    assert dcase.detect_edition(names(3), "fan")[0] == "dcase2021"
    assert dcase.detect_edition(names(10), "fan")[0] == "dcase2022"
    edition, reason = dcase.detect_edition(names(0), "fan")
    assert edition == "dcase2022" and "best guess" in reason


def test_only_section_00_is_a_documented_guess():
    edition, reason = dcase.detect_edition(["section_00_source_train_normal_0000_vel_1.wav"], "slider")
    assert edition == "dcase2023" and "best guess" in reason and "dcase2022" in reason


@pytest.mark.parametrize("names, match", [
    (["normal_id_00_00000000.wav", "section_00_source_train_normal_0000.wav"], "mix DCASE editions"),
    (["section_03_source_test_0000.wav", "section_03_0000.wav"], "mix DCASE editions"),
    (["section_03_source_test_0000.wav", "section_03_test_0000.wav"], "mix DCASE editions"),
    (["section_00_0000.wav", "section_00_source_train_normal_0000_noAttribute.wav"], None),
])
def test_mixed_editions_are_errors(names, match):
    if match is None:  # 2022+ eval names and a 2024 noAttribute name agree: 2024
        assert dcase.detect_edition(names, "slider")[0] == "dcase2024"
        return
    with pytest.raises(dcase.DatasetError, match=match):
        dcase.detect_edition(names, "slider")


def test_conflicting_hints_are_an_error():
    with pytest.raises(dcase.EditionConflict, match="fit no single DCASE edition.*pass the edition"):
        dcase.detect_edition(["section_01_0000.wav"], "bandsaw")  # 2023 type, but 2023 has only section 00
    with pytest.raises(dcase.EditionConflict, match="two-channel clips are DCASE 2026's"):
        dcase.detect_edition(["section_00_0000.wav"], "AutoTrash", channels=2)  # a 2025 type, but two channels


def test_files_add_channel_and_supplemental_hints():
    names = ["section_00_source_train_normal_0000_vel_1.wav"]
    assert dcase.detect_edition(names, "fan")[0] == "dcase2023"
    assert dcase.detect_edition(names, "fan", channels=2)[0] == "dcase2026"
    assert dcase.detect_edition(names, "fan", supplemental=True)[0] == "dcase2025"
    # a hint that contradicts firmer evidence is set aside, and the reason says so
    edition, reason = dcase.detect_edition(names, "fan", channels=2, supplemental=True)
    assert edition == "dcase2026" and "supplemental/ folder" in reason and "set aside" in reason
    edition, reason = dcase.detect_edition(["section_00_source_train_normal_0000_noAttribute.wav"], "ToyCar",
                                           channels=1)
    assert edition == "dcase2024" and "set aside" in reason and "best guess" in reason


def test_section_test_eval_names():
    clip = dcase.parse_name("x/section_00_test_0042.wav", "Sander", None)
    assert (clip.section, clip.domain, clip.split, clip.label) == ("00", None, "test", dcase.UNKNOWN)
    edition, reason = dcase.detect_edition(["section_00_test_0000.wav"], "fan")
    assert edition == "dcase2025" and "dcase2025, dcase2026 apart" in reason


def test_repeated_attribute_keys_keep_every_value():
    assert dcase.parse_attributes("car_D2_spd_5_mic_2_mic_1") == {"car": "D2", "spd": "5", "mic": "2", "mic.2": "1"}
    assert dcase.parse_attributes("a_1_a_2_a_3") == {"a": "1", "a.2": "2", "a.3": "3"}


def test_find_clips_sets_edition_and_accepts_an_override(tmp_path):
    root = str(tmp_path)
    _touch(root, "slider/train/section_00_source_train_normal_0000_vel_500_ac_0.30.wav",
           "slider/test/section_00_target_test_anomaly_0001_vel_620_ac_0.08.wav")
    found = dcase.find_clips(root, "slider")
    assert (found.edition, found.layout) == ("dcase2023", "dcase")
    forced = dcase.find_clips(root, "slider", edition="2022")
    assert forced.edition == "dcase2022" and "passed in" in forced.edition_reason
    with pytest.raises(dcase.DatasetError, match="edition dcase2020 was asked for"):
        dcase.find_clips(root, "slider", edition="dcase2020")
    _touch(root, "slider/test/anomaly_id_00_00000000.wav")
    with pytest.raises(dcase.DatasetError, match="mix DCASE editions"):
        dcase.find_clips(root, "slider")


def test_find_clips_reads_one_type(tmp_path):
    with pytest.raises(dcase.DatasetError, match="list_machine_types"):
        dcase.find_clips(str(tmp_path), "all")
    with pytest.raises(dcase.DatasetError, match="list_machine_types"):
        dcase.find_clips(str(tmp_path), "fan,valve")


# -------------------------------------------------------------------------------------------------- attributes


def test_attribute_csv_adds_to_name_attributes(tmp_path):
    root = str(tmp_path)
    _touch(root, "fan/train/section_00_source_train_normal_0000_m-n_W.wav", "fan/test/section_00_0000.wav")
    _write(tmp_path / "fan" / "attributes_00.csv",
           "file_name,d1p,d1v,d2p,d2v\n"
           "fan/train/section_00_source_train_normal_0000_m-n_W.wav,m-n,W,,\n"
           "fan/test/section_00_0000.wav,m-n,Y,noise,2\n")
    clips = {c.name: c for c in dcase.find_clips(root, "fan").clips}
    assert clips["section_00_source_train_normal_0000_m-n_W.wav"].attributes == {"m-n": "W"}
    assert clips["section_00_0000.wav"].attributes == {"m-n": "Y", "noise": "2"}


def test_attribute_csv_without_file_column_is_an_error(tmp_path):
    _touch(str(tmp_path), "fan/train/section_00_source_train_normal_0000_m-n_W.wav")
    _write(tmp_path / "fan" / "attributes_00.csv", "name_of_file,d1p,d1v\nx.wav,a,1\n")
    with pytest.raises(dcase.DatasetError, match="no file_name column"):
        dcase.find_clips(str(tmp_path), "fan")


# ------------------------------------------------------------------------------------------------ ground truth


def test_2023_evaluator_ground_truth_folders(tmp_path):
    """The official 2023/2024 layout: ground_truth_{data,domain,attributes}/ground_truth_<type>_section_00_test.csv
    without headers."""
    root = str(tmp_path / "eval")
    _touch(root, "bandsaw/test/section_00_0000.wav", "bandsaw/test/section_00_0001.wav",
           "bandsaw/test/section_00_0002.wav", "grinder/test/section_00_0000.wav")
    truth = tmp_path / "truth"
    _write(truth / "ground_truth_data" / "ground_truth_bandsaw_section_00_test.csv",
           "section_00_0000.wav,0\nsection_00_0001.wav,1\nsection_00_0002.wav,0\n")
    _write(truth / "ground_truth_domain" / "ground_truth_bandsaw_section_00_test.csv",
           "section_00_0000.wav,1\nsection_00_0001.wav,1\nsection_00_0002.wav,0\n")
    _write(truth / "ground_truth_attributes" / "ground_truth_bandsaw_section_00_test.csv",
           "section_00_0000.wav,section_00_target_test_normal_0000_vel_12\n"
           "section_00_0001.wav,section_00_target_test_anomaly_0001_vel_12\n")
    _write(truth / "ground_truth_data" / "ground_truth_grinder_section_00_test.csv", "section_00_0000.wav,1\n")
    found = dcase.find_clips(root, "bandsaw", ground_truth_csv=str(truth))
    assert found.edition == "dcase2023"
    got = [(c.name, c.label, c.domain, c.attributes) for c in found.clips]
    assert got == [("section_00_0000.wav", dcase.NORMAL, "target", {"vel": "12"}),
                   ("section_00_0001.wav", dcase.ANOMALY, "target", {"vel": "12"}),
                   ("section_00_0002.wav", dcase.NORMAL, "source", {})]
    # the grinder file labels grinder's section_00_0000.wav only
    assert [c.label for c in dcase.find_clips(root, "grinder", ground_truth_csv=str(truth)).clips] == [dcase.ANOMALY]


def test_2021_ground_truth_files_label_eval_names(tmp_path):
    root = str(tmp_path)
    _touch(root, "fan/test/section_03_source_test_0000.wav", "fan/test/section_03_target_test_0000.wav")
    source = _write(tmp_path / "gt" / "ground_truth_fan_section_03_source_test.csv",
                    "section_03_source_test_0000.wav,1\n")
    target = _write(tmp_path / "gt" / "ground_truth_fan_section_03_target_test.csv",
                    "section_03_target_test_0000.wav,0\n")
    found = dcase.find_clips(root, "fan", ground_truth_csv=f"{source},{target}")
    assert found.edition == "dcase2021"
    assert [(c.domain, c.label) for c in found.clips] == [("source", dcase.ANOMALY), ("target", dcase.NORMAL)]


def test_2020_eval_data_list_with_machine_type_rows(tmp_path):
    root = str(tmp_path)
    _touch(root, "fan/test/id_01_00000000.wav", "pump/test/id_01_00000000.wav")
    truth = _write(tmp_path / "eval_data_list.csv", "fan\nid_01_00000000.wav,anomaly_id_01_00000049.wav,1\n"
                                                     "pump\nid_01_00000000.wav,normal_id_01_00000003.wav,0\n")
    assert dcase.find_clips(root, "fan", ground_truth_csv=truth).clips[0].label == dcase.ANOMALY
    assert dcase.find_clips(root, "pump", ground_truth_csv=truth).clips[0].label == dcase.NORMAL


def test_ground_truth_with_header_and_domain_column(tmp_path):
    root = str(tmp_path)
    _touch(root, "valve/test/section_00_0000.wav", "valve/test/section_00_0001.wav")
    truth = _write(tmp_path / "gt.csv", "file_name,label,domain\nvalve/test/section_00_0000.wav,anomaly,source\n"
                                        "section_00_0001,0,target\n")
    clips = dcase.find_clips(root, "valve", ground_truth_csv=truth).clips
    assert [(c.label, c.domain) for c in clips] == [(dcase.ANOMALY, "source"), (dcase.NORMAL, "target")]
    headerless = _write(tmp_path / "plain.csv", "section_00_0000.wav,1,1\n")
    assert dcase.find_clips(root, "valve", ground_truth_csv=headerless).clips[0].domain == "target"


def test_bad_and_conflicting_ground_truth_are_errors(tmp_path):
    _touch(str(tmp_path), "valve/test/section_00_0000.wav")
    bad_domain = _write(tmp_path / "ground_truth_domain" / "d.csv", "section_00_0000.wav,2\n")
    with pytest.raises(dcase.DatasetError, match="d.csv, row 1: domain '2'"):
        dcase.find_clips(str(tmp_path), "valve", ground_truth_csv=bad_domain)
    one = _write(tmp_path / "a.csv", "section_00_0000.wav,0\n")
    two = _write(tmp_path / "b.csv", "section_00_0000.wav,1\n")
    with pytest.raises(dcase.DatasetError, match="label"):
        dcase.find_clips(str(tmp_path), "valve", ground_truth_csv=[one, two])
    with pytest.raises(dcase.DatasetError, match="does not exist"):
        dcase.find_clips(str(tmp_path), "valve", ground_truth_csv=str(tmp_path / "missing.csv"))


# --------------------------------------------------------------------------------------------------- raw MIMII


@pytest.mark.parametrize("normals, anomalies, override, expected", [
    (10, 10, None, 5), (968, 356, None, 356), (10, 3, None, 3), (1, 5, None, 0), (10, 10, 2, 2), (10, 10, 10, 10)])
def test_mimii_test_normal_count(normals, anomalies, override, expected):
    assert dcase.mimii_test_normal_count(normals, anomalies, override) == expected


def test_mimii_layout_split_is_seeded_and_overridable(tmp_path):
    root = str(tmp_path)
    _touch(root, *[f"fan/id_00/normal/{i:08d}.wav" for i in range(8)],
           *[f"fan/id_00/abnormal/{i:08d}.wav" for i in range(3)], *[f"fan/id_04/normal/{i:08d}.wav" for i in range(4)],
           *[f"fan/id_04/abnormal/{i:08d}.wav" for i in range(4)])
    found = dcase.find_clips(root, "fan")
    assert (found.layout, found.edition) == ("mimii", "dcase2020") and not found.unmatched
    counts = collections.Counter((c.machine_id, c.split, c.label) for c in found.clips)
    assert counts == {("00", "train", 0): 5, ("00", "test", 0): 3, ("00", "test", 1): 3,
                      ("04", "train", 0): 2, ("04", "test", 0): 2, ("04", "test", 1): 4}
    assert all(c.domain is None and c.section == c.machine_id for c in found.clips)

    def tested(**kw):
        return sorted(c.name for c in dcase.find_clips(root, "fan", **kw).select("test", ["00"]) if c.label == 0)

    assert tested() == tested(split_seed=0) and len({tuple(tested(split_seed=s)) for s in range(6)}) > 1
    assert len(tested(mimii_test_normals=1)) == 1
    with pytest.raises(dcase.DatasetError, match="mimii_test_normals"):
        dcase.find_clips(root, "fan", mimii_test_normals=9)


def test_mimii_snr_folders(tmp_path):
    root = str(tmp_path)
    _touch(root, "6_dB_valve/valve/id_00/normal/00000000.wav", "6_dB_valve/valve/id_00/abnormal/00000000.wav",
           "6_dB_valve/valve/id_00/normal/00000001.wav")
    assert dcase.list_machine_types(root) == ["valve"]
    found = dcase.find_clips(root, "valve")
    assert len(found.clips) == 3 and found.layout == "mimii"
    _touch(root, "-6_dB_valve/valve/id_00/normal/00000000.wav")
    with pytest.raises(dcase.DatasetError, match="2 versions of 'valve'"):
        dcase.find_clips(root, "valve")


def test_list_machine_types(tmp_path):
    root = str(tmp_path)
    _touch(root, "slider/train/normal_id_00_00000000.wav", "ToyCar/test/section_00_0000.wav",
           "fan/id_02/normal/00000000.wav", "pump/normal_id_00_00000000.wav", "notes/readme.wav", ".hidden/train/x.wav")
    assert dcase.list_machine_types(root) == ["fan", "pump", "slider", "ToyCar"]
    assert dcase.list_machine_types(os.path.join(root, "slider")) == ["slider"]


# --------------------------------------------------------------------------------------------------- real data


def test_real_2023_minchala_every_type(realdata):
    root = os.path.join(realdata, "dcase2023t2_dev_minchala")
    types = dcase.list_machine_types(root)
    assert types == ["bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"]
    for machine_type in types:
        found = dcase.find_clips(root, machine_type)
        assert found.edition == "dcase2023" and not found.unmatched and len(found.clips) == 4
        assert {c.section for c in found.clips} == {"00"} and all(c.attributes for c in found.clips)
    slider = {c.name: c for c in dcase.find_clips(root, "slider").clips}
    clip = slider["section_00_target_test_normal_0013_vel_620_ac_0.08.wav"]
    assert (clip.domain, clip.split, clip.label, clip.attributes) == ("target", "test", dcase.NORMAL,
                                                                       {"vel": "620", "ac": "0.08"})
    toycar = dcase.find_clips(root, "ToyCar").select("train")
    assert [c.attributes for c in toycar] == [{"car": "C2", "spd": "31V", "mic": "1"},
                                              {"car": "D2", "spd": "34V", "mic": "1"}]
    valve = dcase.find_clips(root, "valve").select("test")
    assert [(c.label, c.attributes) for c in valve] == [(dcase.ANOMALY, {"pat": "03"}), (dcase.NORMAL, {"pat": "03"})]


def test_real_2020_dev_names(realdata):
    root = os.path.join(realdata, "dcase2020t2_dev_mamisoa")
    assert dcase.list_machine_types(root) == ["fan", "pump", "slider", "ToyCar", "ToyConveyor", "valve"]
    found = dcase.find_clips(root, "ToyConveyor")
    assert found.edition == "dcase2020" and found.layout == "flat"
    assert {c.section for c in found.clips} == {"01", "02", "03"} and all(c.domain is None for c in found.clips)


def test_real_raw_mimii_fan_is_split_by_the_rule(realdata):
    root = os.path.join(realdata, "mimii_8ch_arlene14ko")
    assert dcase.list_machine_types(root) == ["fan"]
    found = dcase.find_clips(root, "fan")
    assert found.layout == "mimii" and found.edition == "dcase2020" and not found.unmatched
    counts = collections.Counter((c.split, c.label) for c in found.clips)
    # 10 normal + 10 abnormal: min(10 anomalies, 10 // 2) = 5 test normals, 5 train normals, all 10 anomalies test
    assert counts == {("train", dcase.NORMAL): 5, ("test", dcase.NORMAL): 5, ("test", dcase.ANOMALY): 10}
    assert {c.machine_id for c in found.clips} == {"02"}
    assert len(dcase.find_clips(root, "fan", mimii_test_normals=2).select("train")) == 8
    again = dcase.find_clips(root, "fan")
    assert [c.split for c in again.clips] == [c.split for c in found.clips]


def test_real_renamed_mimii_files_stay_unmatched(realdata):
    found = dcase.find_clips(os.path.join(realdata, "mimii_8ch_brmdv"), "slider")
    assert not found.clips and found.edition is None and len(found.unmatched) == 2
    assert np.all([os.path.exists(p) for p in found.unmatched])


def test_unit_of_a_path():
    assert dcase.unit_of("/x/normal_id_02_00000001.wav") == ("02", None)
    assert dcase.unit_of("id_04_00000001.wav") == ("04", None)
    assert dcase.unit_of("/x/section_01_target_test_normal_0003_vel_5.wav") == ("01", "target")
    assert dcase.unit_of("section_02_source_test_0003.wav") == ("02", "source")
    assert dcase.unit_of("section_03_0003.wav") == ("03", None)
    assert dcase.unit_of("/data/fan/id_06/abnormal/00000003.wav") == ("06", None)
    assert dcase.unit_of("/data/fan/id_06/00000003.wav") is None
    assert dcase.unit_of("/data/recording.wav") is None
