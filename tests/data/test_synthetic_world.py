"""The synthetic world in the DCASE 2025 layout: names parse back, attributes agree, determinism, caching."""

import csv
import dataclasses
import filecmp
import json
import os

import numpy as np
import pytest
import soundfile as sf

from asd_jax.data import synthetic_world as W
from asd_jax.data.dcase import ANOMALY, NORMAL, find_clips, find_supplemental, parse_attributes

# 4 training clips per domain cover every attribute combination (2 x 2) of each type.
TINY = W.WorldConfig(num_train=4, num_train_target=4, num_test_normal=2, num_test_anomaly=4,
                     num_supplemental_machine=2, num_supplemental_noise=1, duration_s=1.0)


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if f.endswith(".wav"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("world"))
    W.generate_world(root, TINY, num_workers=1, progress=False)
    return root


def test_layout_parses_with_sections_domains_labels_and_attributes(world):
    assert len(_files(world)) == len(W.clip_plan(TINY)) == 3 * (4 + 4 + 2 * (2 + 4) + 2 + 1)
    for machine_type in TINY.machine_types:
        clip_list = find_clips(world, machine_type)
        assert not clip_list.unmatched and clip_list.sections == ["00"]
        assert clip_list.edition == "dcase2025"
        assert {(d, len(clip_list.select("train", domain=d))) for d in W.DOMAINS} == {("source", 4), ("target", 4)}
        for domain in W.DOMAINS:
            test = clip_list.select("test", domain=domain)
            assert sorted(c.label for c in test) == [NORMAL] * 2 + [ANOMALY] * 4
        assert {c.label for c in clip_list.select("train")} == {NORMAL}
        keys = [a[0] for a in W.MACHINE_TYPES[machine_type].attributes]
        for clip in clip_list.clips:
            assert list(clip.attributes) == keys, clip.name
            info = sf.info(clip.path)
            assert (info.samplerate, info.channels, info.subtype, info.frames) == (16_000, 1, "PCM_16", 16_000)


def test_attribute_csv_matches_the_names(world):
    for machine_type in TINY.machine_types:
        with open(os.path.join(world, machine_type, "attributes_00.csv"), newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["file_name", "d1p", "d1v", "d2p", "d2v"]
        listed = {row[0] for row in rows[1:]}
        on_disk = {path.replace(os.sep, "/") for path in _files(world)
                   if path.startswith(machine_type + os.sep) and os.sep + "supplemental" + os.sep not in path}
        assert listed == on_disk
        for row in rows[1:]:
            name = os.path.basename(row[0])
            number = name.split("_")[5]
            from_name = parse_attributes(name.removesuffix(".wav").split(f"_{number}_", 1)[1])
            assert from_name == dict(zip(row[1::2], row[2::2])), row


def test_each_attribute_value_appears_in_its_domain(world):
    for machine_type in TINY.machine_types:
        clips = find_clips(world, machine_type).clips
        for key, source_values, target_values in W.MACHINE_TYPES[machine_type].attributes:
            for domain, values in (("source", source_values), ("target", target_values)):
                seen = {c.attributes[key] for c in clips if c.domain == domain}
                assert seen == set(values), (machine_type, key, domain, seen)
        source = {tuple(sorted(c.attributes.items())) for c in clips if c.domain == "source"}
        target = {tuple(sorted(c.attributes.items())) for c in clips if c.domain == "target"}
        assert not source & target  # the target domain is another operating condition


def test_supplemental_clips_and_manifest(world):
    for machine_type in TINY.machine_types:
        supplemental = find_supplemental(world, machine_type)
        assert not supplemental.unmatched
        machine, noise = supplemental.select("machine"), supplemental.select("noise")
        assert len(machine) == 2 and len(noise) == 1
        sources = W.MACHINE_TYPES[machine_type].conditions("source")
        assert all(c.domain == "source" and c.attributes in sources for c in machine)
        assert noise[0].name == "section_00_noise_supplemental_normal_0000.wav" and not noise[0].attributes

    manifest = json.loads(open(os.path.join(world, W.MANIFEST)).read())
    assert "not dcase" in manifest["note"].lower() and manifest["config"] == TINY.to_json()
    tests = manifest["test_clips"]
    assert len(tests) == 3 * 2 * (2 + 4) and len(manifest["supplemental"]) == 3 * 3
    faults = [t for t in tests.values() if t["anomaly"]]
    assert all(TINY.severity[0] <= t["severity"] <= TINY.severity[1] and t["domain"] in W.DOMAINS
               and t["attributes"] for t in faults)
    kinds = {path.split(os.sep)[0]: set() for path in tests}
    for path, entry in tests.items():
        kinds[path.split(os.sep)[0]].add(entry["anomaly"])
    for machine_type, seen in kinds.items():
        assert seen == {None, *W.MACHINE_TYPES[machine_type].anomaly_kinds}


def test_same_config_gives_the_same_bytes_whatever_the_worker_count(world, tmp_path):
    W.generate_world(str(tmp_path), TINY, num_workers=2, progress=False)
    files = _files(world)
    assert files == _files(str(tmp_path))
    _, mismatch, errors = filecmp.cmpfiles(world, str(tmp_path), files, shallow=False)
    assert not mismatch and not errors
    for machine_type in TINY.machine_types:
        assert filecmp.cmp(os.path.join(world, machine_type, "attributes_00.csv"),
                           os.path.join(tmp_path, machine_type, "attributes_00.csv"), shallow=False)


def test_is_complete_until_a_file_goes_and_stale_files_are_removed(tmp_path):
    config = dataclasses.replace(TINY, machine_types=("valve",), num_train=2, num_test_anomaly=1)
    W.generate_world(str(tmp_path), config, num_workers=1, progress=False)
    assert W.is_complete(str(tmp_path), config)
    assert not W.is_complete(str(tmp_path), dataclasses.replace(config, seed=1))
    os.remove(os.path.join(tmp_path, W.clip_plan(config)[0].relpath))
    assert not W.is_complete(str(tmp_path), config)

    smaller = dataclasses.replace(config, num_train=1, num_supplemental_machine=0)
    W.generate_world(str(tmp_path), smaller, num_workers=1, progress=False)
    assert W.is_complete(str(tmp_path), smaller)
    assert _files(str(tmp_path)) == sorted(spec.relpath for spec in W.clip_plan(smaller))


def test_default_world_is_cached(monkeypatch):
    config = dataclasses.replace(TINY, machine_types=("fan",), num_train=1, num_train_target=1, num_test_normal=1,
                                 num_test_anomaly=1, num_supplemental_machine=0, num_supplemental_noise=0)
    root = W.default_world(config=config, num_workers=1, progress=False)
    assert root == os.path.join(os.environ["ASD_JAX_CACHE_DIR"], "synthetic_world", config.short_hash())
    assert W.is_complete(root, config)

    def fail(*args, **kwargs):
        raise AssertionError("a complete world was generated again")

    monkeypatch.setattr(W, "generate_world", fail)
    assert W.default_world(config=config) == root


@pytest.mark.parametrize("machine_type", W.MACHINE_TYPES)
def test_a_fault_changes_the_sound_but_not_the_level(machine_type):
    config = dataclasses.replace(TINY, duration_s=3.0)
    faulty_specs = {s.anomaly: s for s in reversed(W.clip_plan(config)) if s.machine_type == machine_type and s.anomaly}
    assert set(faulty_specs) == set(W.MACHINE_TYPES[machine_type].anomaly_kinds)
    for spec in faulty_specs.values():
        clean = W.render_clip(config, dataclasses.replace(spec, severity=0.0))
        faulty = W.render_clip(config, dataclasses.replace(spec, severity=1.0))
        level = 10 * np.log10(np.mean(faulty.astype(float) ** 2) / np.mean(clean.astype(float) ** 2))
        assert abs(level) < 0.2, (spec.anomaly, level)
        assert np.abs(faulty - clean).mean() > 0.01 * np.abs(clean).mean(), spec.anomaly


def test_a_clip_depends_on_its_identity_not_on_the_rest_of_the_world():
    spec = W.clip_plan(TINY)[1]
    clip = W.render_clip(TINY, spec)
    bigger = dataclasses.replace(TINY, num_train=40, machine_types=("valve", "fan", "slider"))
    np.testing.assert_array_equal(clip, W.render_clip(bigger, spec))
    reseeded = W.render_clip(dataclasses.replace(TINY, seed=1), spec)
    assert np.abs(reseeded - clip).mean() > 0.1 * np.abs(clip).mean()


def test_config_validates_and_dcase_dev_size():
    config = W.WorldConfig.dcase_dev_size(seed=3)
    assert (config.num_train, config.num_train_target, config.num_test_normal, config.num_test_anomaly) == \
        (990, 10, 50, 50) and config.seed == 3
    assert len([s for s in W.clip_plan(config) if s.kind == "clip"]) == 3 * (990 + 10 + 200)
    assert hash(config) == hash(W.WorldConfig(**json.loads(json.dumps(config.to_json()))))
    assert config.short_hash() != W.WorldConfig().short_hash()
    assert W.WorldConfig(machine_types="fan").machine_types == ("fan",)
    for bad in ({"machine_types": ("pump",)}, {"machine_types": ("fan", "fan")}, {"num_train": -1},
                {"severity": (0.0, 1.0)}, {"seed": -1}, {"sample_rate": 8_000}):
        with pytest.raises(ValueError):
            W.WorldConfig(**bad)
    with pytest.raises(ValueError, match="has no fault"):
        W.render_clip(TINY, dataclasses.replace(W.clip_plan(TINY)[0], anomaly="leak", severity=0.5))
    assert all(name in W.describe() for name in W.MACHINE_TYPES)
