"""Small folders run to the end: too few training normals to hold any out still gives AUC and pAUC, no threshold,
one line that says why, and scores without decisions from --mode=score (never a crash)."""

import json
import os

import pytest

from asd_jax import pipeline, scoring
from asd_jax.methods import registry
from tests.conftest import tiny_config, write_wav

pytestmark = pytest.mark.usefixtures("jax_compile_cache")

# the methods that need no pretrained weights (VGGish cannot be had offline) and no second class
SMALL_FOLDER_METHODS = [m for m in registry.names() if registry.get(m).vector_source != "vggish" and
                        not registry.get(m).labels]


@pytest.fixture(scope="module")
def raw_mimii_folder(tmp_path_factory) -> str:
    """A raw MIMII layout with one id of 10 normal and 10 abnormal 2-channel clips: 5 normals train, none spare."""
    root = tmp_path_factory.mktemp("mimii")
    for label, offset in (("normal", 0), ("abnormal", 100)):
        for index in range(10):
            write_wav(str(root / "fan" / "id_02" / label / f"{index:08d}.wav"), seconds=1.0, channels=2,
                      seed=offset + index, amplitude=0.1 if label == "normal" else 0.3)
    return str(root)


def test_a_folder_too_small_to_hold_out_normals_runs_without_a_threshold(raw_mimii_folder, tmp_path):
    run = str(tmp_path / "run")
    config = tiny_config("lstm", raw_mimii_folder, run, str(tmp_path / "cache"), epochs=1)
    config.machine_type = "fan"
    results = pipeline.train_and_evaluate(config)
    assert results["per_id"]["02"]["num_normal"] == 5 and results["per_id"]["02"]["num_anomaly"] == 10
    assert 0.0 <= results["mean"]["auc"] <= 1.0 and 0.0 <= results["mean"]["pauc"] <= 1.0
    threshold = results["threshold"]
    assert threshold["policy"] is None and threshold["value"] is None and threshold["f1_anomaly"] is None
    assert "needs held-out normal training clips" in threshold["source"] and "val_fraction" in threshold["source"]
    assert sum("no decision threshold" in note for note in results["notes"]) == 1
    with open(os.path.join(run, "threshold.json")) as handle:
        assert json.load(handle)["reason"] == threshold["source"]
    with open(os.path.join(run, "report.md")) as handle:
        assert "threshold: none" in handle.read()
    clip = os.path.join(raw_mimii_folder, "fan", "id_02", "abnormal", "00000000.wav")
    rows = scoring.score_files(run, [clip], progress=False)
    assert rows[0]["decision"] is None and rows[0]["score"] == pytest.approx(rows[0]["score"])


@pytest.mark.slow
@pytest.mark.parametrize("method", SMALL_FOLDER_METHODS)
def test_the_real_raw_mimii_fan_folder_runs_for_every_method(method, realdata, tmp_path):
    """``../shared/realdata/mimii_8ch_arlene14ko``: 10 normal + 10 abnormal real 8-channel fan clips of one id."""
    config = tiny_config(method, os.path.join(realdata, "mimii_8ch_arlene14ko"), str(tmp_path / "run"),
                         str(tmp_path / "cache"), epochs=1)
    config.machine_type = "fan"
    results = pipeline.train_and_evaluate(config)
    assert results["per_id"]["02"]["num_normal"] == 5 and results["per_id"]["02"]["num_anomaly"] == 10
    assert 0.0 <= results["mean"]["auc"] <= 1.0
    assert results["threshold"]["policy"] is None


def test_a_classifier_on_one_machine_id_names_the_ways_out(raw_mimii_folder, tmp_path):
    config = tiny_config("id_classifier", raw_mimii_folder, str(tmp_path / "run"), str(tmp_path / "cache"), epochs=1)
    config.machine_type = "fan"
    with pytest.raises(ValueError, match="only one machine id.*--method=dense_ae"):
        pipeline.train_and_evaluate(config)
