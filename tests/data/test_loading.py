"""The clips and settings of a run from its config: the channel rule, the comma lists, the held-out split."""

import pytest

from asd_jax.config import get_config
from asd_jax.data import dcase, loading


@pytest.mark.parametrize("setting, edition, expected", [
    ("auto", "dcase2026", "0"), ("auto", "dcase2025", "mean"), ("auto", "dcase2020", "mean"),
    ("1", "dcase2026", "1"), ("mean", "dcase2026", "mean")])
def test_the_auto_channel_follows_the_edition_and_an_explicit_one_is_kept(setting, edition, expected):
    config = get_config()
    config.features.channel = setting
    loading.resolve_channel(config, edition)
    assert config.features.channel == expected


def test_feature_config_reads_an_unresolved_auto_channel_as_the_average():
    config = get_config()
    assert config.features.channel == "auto" and loading.feature_config(config).channel == "mean"
    config.features.channel = "1"
    assert loading.feature_config(config).channel == 1


def test_the_auto_duration_is_the_longest_training_clip_and_an_explicit_one_is_kept(tmp_path):
    from tests.conftest import write_wav
    clips = []
    for i, seconds in enumerate((1.0, 1.5, 1.0)):
        path = str(tmp_path / f"section_00_source_train_normal_{i:04d}.wav")
        write_wav(path, seconds=seconds, rate=32_000 if i else 16_000)  # the length counts, not the rate
        clips.append(dcase.Clip(path, "fan", "00", "train", dcase.NORMAL, "source"))
    config = get_config()
    assert config.features.duration_s == loading.AUTO_DURATION
    assert loading.feature_config(config).duration_s == 10.0  # no data seen (the benchmark): DCASE's 10 s
    loading.resolve_duration(config, clips)
    assert config.features.duration_s == pytest.approx(1.5) and loading.feature_config(config).num_frames == 47
    config.features.duration_s = 2.0
    loading.resolve_duration(config, clips)
    assert config.features.duration_s == 2.0
    assert loading.duration_for(0.0, []) == 10.0


def test_split_list():
    assert loading.split_list(" a, b,,c ") == ["a", "b", "c"] and loading.split_list("") == []


def test_holdout_takes_a_seeded_fraction_of_each_unit_and_domain():
    clips = [dcase.Clip(f"/d/section_00_{domain}_train_normal_{i:04d}.wav", "fan", "00", "train", dcase.NORMAL, domain)
             for domain, count in (("source", 20), ("target", 10)) for i in range(count)]
    fit, validation = loading.holdout(clips, 0.1, seed=0)
    assert len(validation) == 4 and len(fit) == 26  # 20 source clips: 3 (a sixth); 10 target clips: 1
    assert sorted(c.domain for c in validation) == ["source", "source", "source", "target"]
    assert loading.holdout(clips, 0.1, seed=0) == (fit, validation)


def test_holdout_count_reaches_the_clips_a_threshold_wants_while_five_sixths_train():
    from asd_jax.evaluate import thresholds
    assert loading.HELDOUT_WANTED == thresholds.MIN_HELDOUT
    assert [loading.holdout_count(n, 0.1) for n in (1, 2, 10, 20, 60, 120, 200, 990)] == [0, 0, 1, 3, 10, 20, 20, 99]
    assert loading.holdout_count(120, 0.0 + 0.25) == 30  # a larger fraction still wins
