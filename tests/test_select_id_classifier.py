"""The id classifier's selection script: every candidate is a valid config, and its flags are launch.py's."""

import importlib.util
import os

import pytest

from asd_jax import config as config_lib
from asd_jax.models import id_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def select():
    spec = importlib.util.spec_from_file_location(
        "select_id_classifier", os.path.join(REPO, "experiments", "select_id_classifier.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_candidate_is_a_config_the_method_accepts(select):
    """Each candidate's overrides name existing settings of the default config, and the section they make passes
    the method's own check (a typo in a path, or a combination the model refuses, fails here, not an hour into a
    selection)."""
    base = config_lib.get_config()
    with base.unlocked():
        base.method = "id_classifier"
    for name, overrides in select.candidates(2, 1):
        for path in overrides:
            section = base
            for part in path.split("."):
                assert part in section, f"candidate {name}: no setting {path}"
                section = section[part]
        config = select._configured(base, overrides, "/data", "/runs/" + name)
        id_classifier.check_section(config.id_classifier)
        config_lib.check(config)
        for path, value in overrides.items():
            section = config
            for part in path.split("."):
                section = section[part]
            assert section == value


def test_flags_are_the_candidates_overrides_as_launch_flags(select):
    assert select.flags("windows_64") == ("--config.id_classifier.frames=64 "
                                          "--config.id_classifier.train.windows_per_clip=8")
    assert select.flags("reference") == ""
    with pytest.raises(SystemExit, match="no candidate 'nope'"):
        select.flags("nope")


@pytest.mark.slow
def test_the_smoke_selection_trains_scores_and_rescores_the_backends(select, tmp_path):
    """A tiny world, 1 epoch: the reference recipe (whole clip, resolved from the data), its embeddings refitted
    with another backend from the run's own saved config, and the compact networks; selection.json lists all
    three."""
    import json

    select.main(["--smoke", "--dev_world", str(tmp_path / "world"), "--workdir", str(tmp_path / "runs"),
                 "--only", "reference,compact_body", "--backends", "knn"])
    with open(tmp_path / "runs" / "selection.json") as handle:
        selection = json.load(handle)
    rows = {row["name"]: row for row in selection["candidates"]}
    assert set(rows) == {"reference", "backend_knn", "compact_body"}
    assert selection["selected"] == max(rows.values(), key=lambda row: row["official_score"])["name"]
    for row in rows.values():
        assert 0.0 <= row["official_score"] <= 1.0 and set(row["per_type"]) == {"fan", "slider", "valve"}
