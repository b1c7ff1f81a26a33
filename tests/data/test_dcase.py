import os

import pytest

from asd_jax.data import dcase


def _touch(root, *names):
    for name in names:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()


def test_parse_2020_dev_names():
    clip = dcase.parse_name("/d/slider/test/anomaly_id_04_00000170.wav", "slider", "test")
    assert (clip.machine_id, clip.split, clip.label, clip.domain) == ("04", "test", dcase.ANOMALY, None)
    clip = dcase.parse_name("/d/slider/train/normal_id_00_00000000.wav", "slider", "train")
    assert (clip.machine_id, clip.split, clip.label) == ("00", "train", dcase.NORMAL)


def test_parse_2020_eval_name_has_unknown_label():
    clip = dcase.parse_name("/d/slider/test/id_01_00000123.wav", "slider", "test")
    assert (clip.machine_id, clip.label) == ("01", dcase.UNKNOWN)


def test_parse_2021_names_carry_split_domain_and_label():
    clip = dcase.parse_name("x/section_02_target_test_anomaly_0013_vel_620.wav", "slider", None)
    assert (clip.machine_id, clip.split, clip.label, clip.domain) == ("02", "test", dcase.ANOMALY, "target")
    clip = dcase.parse_name("x/section_00_source_train_normal_0853_vel_500_ac_0.30.wav", "slider", None)
    assert (clip.split, clip.label, clip.domain) == ("train", dcase.NORMAL, "source")


@pytest.mark.parametrize("name", ["slider_normal.wav", "normal_00_1.wav", "id_x_01.wav", "noise.wav"])
def test_names_that_fit_no_pattern_are_not_parsed(name):
    assert dcase.parse_name(name, "slider", "test") is None


def test_find_clips_dev_layout_filters_and_reports_unmatched(tmp_path):
    root = str(tmp_path)
    _touch(root, "slider/train/normal_id_00_00000000.wav", "slider/train/normal_id_02_00000000.wav",
           "slider/test/normal_id_00_00000001.wav", "slider/test/anomaly_id_02_00000000.wav",
           "slider/test/recording.wav", "fan/train/normal_id_00_00000000.wav")
    found = dcase.find_clips(root, "slider")
    assert len(found.clips) == 4 and all(c.machine_type == "slider" for c in found.clips)
    assert [os.path.basename(p) for p in found.unmatched] == ["recording.wav"]
    assert len(found.select("train")) == 2 and len(found.select("test", ["2"])) == 1
    assert [c.machine_id for c in dcase.find_clips(root, "slider", machine_ids=["id_02"]).clips] == ["02", "02"]
    # the machine-type folder itself works as a root too
    assert len(dcase.find_clips(os.path.join(root, "slider"), "slider").clips) == 4


def test_eval_names_labelled_by_ground_truth_csv(tmp_path):
    _touch(str(tmp_path), "slider/test/id_01_00000000.wav", "slider/test/id_01_00000001.wav")
    csv_path = tmp_path / "gt.csv"
    csv_path.write_text("file,label\nid_01_00000000.wav,1\nid_01_00000001.wav,normal\n")
    clips = dcase.find_clips(str(tmp_path), "slider", ground_truth_csv=str(csv_path)).clips
    assert [c.label for c in clips] == [dcase.ANOMALY, dcase.NORMAL]
    csv_path.write_text("id_01_00000000.wav,broken\n")
    with pytest.raises(dcase.DatasetError, match="gt.csv"):
        dcase.find_clips(str(tmp_path), "slider", ground_truth_csv=str(csv_path))


def test_missing_folder_and_empty_train_give_clear_errors(tmp_path):
    with pytest.raises(dcase.DatasetError, match="does not exist"):
        dcase.find_clips(str(tmp_path / "nowhere"))
    with pytest.raises(dcase.DatasetError, match="no 'slider' clips"):
        dcase.find_clips(str(tmp_path))
    _touch(str(tmp_path), "slider/test/normal_id_00_00000000.wav")
    (tmp_path / "slider" / "train").mkdir()
    found = dcase.find_clips(str(tmp_path))
    with pytest.raises(dcase.DatasetError, match=r"slider/train"):
        dcase.require_split(found, "train", str(tmp_path), "slider")


def test_real_flat_folder_mamisoa(realdata):
    found = dcase.find_clips(os.path.join(realdata, "dcase2020t2_dev_mamisoa"), "slider")
    assert len(found.clips) == 16 and not found.unmatched
    assert {c.machine_id for c in found.clips} == {"00", "02", "04", "06"}
    assert all(c.split == "test" for c in found.clips)
    assert sum(c.label == dcase.ANOMALY for c in found.clips) == 8


def test_real_dev_layout_zyy438(realdata):
    found = dcase.find_clips(os.path.join(realdata, "dcase2020t2_dev_zyy438"), "slider")
    assert len(found.select("train")) == 75 and len(found.select("test")) == 1
    assert all(c.machine_id == "00" and c.label == dcase.NORMAL for c in found.select("train"))


def test_real_2023_layout(realdata):
    found = dcase.find_clips(os.path.join(realdata, "dcase2023t2_dev_minchala"), "slider")
    assert len(found.select("train")) == 2 and len(found.select("test")) == 2
    assert {c.domain for c in found.clips} == {"source", "target"}


def test_real_raw_mimii_names_are_reported_not_guessed(realdata):
    found = dcase.find_clips(os.path.join(realdata, "mimii_8ch_brmdv"), "slider")
    assert not found.clips and len(found.unmatched) == 2
