"""The pipeline under each DCASE edition's protocol: official per-section figures on a tiny 2023-layout set
(recomputed from scores.csv with sklearn and scipy), thresholds per machine id / section / domain (in the run and in
--mode=score), one detector per machine type with the summary across types, and raw 8-channel MIMII with channel 0."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from asd_jax import experiment, pipeline, scoring
from asd_jax import workdir as workdir_lib
from asd_jax.data import loading
from asd_jax.evaluate import tables
from asd_jax.config import get_config
from asd_jax.data import dcase, synthetic
from asd_jax.evaluate.metrics import classification_metrics
from tests.conftest import TINY_MACHINE_IDS, tiny_config

pytestmark = pytest.mark.usefixtures("jax_compile_cache")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("editions_cache"))


@pytest.fixture(scope="module")
def dcase2023_dataset(tmp_path_factory) -> str:
    """A tiny dcase2023-layout slider set: section 00, 6 source + 2 target training clips, 3 + 3 test clips per
    domain, 1 s clips."""
    root = str(tmp_path_factory.mktemp("tiny_2023"))
    synthetic.generate_dataset(root, synthetic.SynthConfig(
        layout="dcase2023", machine_ids=("00",), num_train=6, num_train_target=2, num_test_normal=3,
        num_test_anomaly=3, duration_s=1.0), num_workers=1, progress=False)
    return root


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def clip_threshold(threshold: dict, row: dict) -> float:
    """The threshold a clip of scores.csv is judged by, read from threshold.json."""
    entry = threshold["units"].get(row["machine_id"])
    if not threshold["per_unit"] or entry is None or entry["from"] == "global":
        return threshold["value"]
    return entry["domains"].get(row["domain"], entry)["value"]


def check_classification(workdir: str, results: dict) -> None:
    """The confusion counts in results.json are those of scores.csv with each clip judged by its unit's
    threshold from threshold.json."""
    rows = read_csv(os.path.join(workdir, "scores.csv"))
    threshold = read_json(os.path.join(workdir, "threshold.json"))
    labels = np.array([int(r["label"]) for r in rows])
    called = np.array([float(r["score"]) > clip_threshold(threshold, r) for r in rows])
    table = classification_metrics(labels, called.astype(float), 0.5)
    assert results["threshold"]["confusion"] == {key: table[key] for key in ("tp", "fp", "tn", "fn")}


# ----------------------------------------------------------------------------------------------------------------------
# DCASE 2023: per-section source/target figures and the official score.


def test_dense_ae_on_a_2023_set_reports_the_official_figures(dcase2023_dataset, cache_dir, tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config("dense_ae", dcase2023_dataset, workdir, cache_dir, epochs=2)
    config.val_fraction = 0.5  # hold out target normals too (1 of 2), so the target domain gets its own threshold
    results = pipeline.train_and_evaluate(config)
    saved = read_json(os.path.join(workdir, "results.json"))
    assert saved["protocol"] == "dcase2023" and "best guess dcase2023" in saved["protocol_reason"]
    assert list(saved["per_section"]) == ["00"] and saved["per_id"]["00"]["num_normal"] == 6

    rows = read_csv(os.path.join(workdir, "scores.csv"))
    assert list(rows[0])[:7] == ["file", "machine_id", "section", "domain", "attributes", "label", "score"]
    # each clip's attributes, as its name and the attribute file give them (the synthetic set: speed and SNR)
    assert {r["attributes"] for r in rows} == {"snr=0;vel=100", "snr=-3;vel=130"}
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    domains = np.array([r["domain"] for r in rows])
    assert sorted(set(domains)) == ["source", "target"] and {r["section"] for r in rows} == {"00"}
    for row in rows:
        assert dcase.unit_of(row["file"]) == (row["section"], row["domain"])
    figures = saved["per_section"]["00"]
    expected = {}
    for domain in ("source", "target"):
        chosen = (labels == 1) | (domains == domain)  # the domain's normals against every anomaly of the section
        expected[f"auc_{domain}"] = roc_auc_score(labels[chosen], scores[chosen])
    expected["pauc"] = roc_auc_score(labels, scores, max_fpr=0.1)
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value, rel=1e-6), key
    assert saved["official_score"] == pytest.approx(hmean(list(expected.values())), rel=1e-6)
    assert saved["members"][0]["official"]["official_score"] == pytest.approx(saved["official_score"])
    assert (figures["num_source_normal"], figures["num_target_normal"], figures["num_anomaly"]) == (3, 3, 6)
    assert results["official_score"] == saved["official_score"]

    held_out = read_csv(os.path.join(workdir, "validation_scores.csv"))
    assert sorted(r["domain"] for r in held_out) == ["source"] * 3 + ["target"]  # held out per domain
    threshold = read_json(os.path.join(workdir, "threshold.json"))
    section = threshold["units"]["00"]
    for domain in ("source", "target"):
        domain_scores = [float(r["score"]) for r in held_out if r["domain"] == domain]
        assert section["domains"][domain]["value"] == pytest.approx(np.quantile(domain_scores, 0.9))
    check_classification(workdir, saved)

    report = open(os.path.join(workdir, "report.md")).read()
    assert "## Official figures per section, dcase2023" in report and "AUC target" in report
    text = tables.format_table(saved)
    assert "official score" in text and "AUC source" in text

    target_clip = next(r["file"] for r in rows if r["domain"] == "target")
    scored = scoring.score_files(workdir, [target_clip], progress=False)[0]
    assert scored["threshold"] == section["domains"]["target"]["value"]
    assert scored["threshold_scope"] == "section 00, target domain"


def test_the_edition_can_be_passed_in(dcase2023_dataset):
    config = get_config()
    config.data_dir, config.dcase_edition = dcase2023_dataset, "2022"
    _, _, edition, reason = loading.find_data(config)
    assert edition == "dcase2022" and reason.startswith("passed in")
    config.dcase_edition = "dcase2020"  # section names are not 2020's
    with pytest.raises(dcase.DatasetError, match="section"):
        loading.find_data(config)


# ----------------------------------------------------------------------------------------------------------------------
# Thresholds per machine id.


def test_thresholds_per_machine_id_in_the_run_and_in_score_mode(tiny_dataset, cache_dir, tmp_path):
    workdir = str(tmp_path / "per_unit")
    results = pipeline.train_and_evaluate(tiny_config("lstm", tiny_dataset, workdir, cache_dir, epochs=1))
    threshold = read_json(os.path.join(workdir, "threshold.json"))
    assert threshold["per_unit"] and set(threshold["units"]) == set(TINY_MACHINE_IDS)
    held_out = read_csv(os.path.join(workdir, "validation_scores.csv"))
    for machine_id in TINY_MACHINE_IDS:
        own = [float(r["score"]) for r in held_out if r["machine_id"] == machine_id]
        assert threshold["units"][machine_id]["value"] == pytest.approx(np.quantile(own, 0.9))
        assert threshold["units"][machine_id]["num_heldout"] == len(own) == 1
    assert threshold["units"]["00"]["value"] != threshold["units"]["02"]["value"]
    assert threshold["value"] == pytest.approx(np.quantile([float(r["score"]) for r in held_out], 0.9))
    check_classification(workdir, results)
    assert results["threshold"]["units"] == threshold["units"]
    assert sum(note.startswith("machine ids 00, 02: threshold from only 1") for note in results["notes"]) == 1  # one line

    rows = read_csv(os.path.join(workdir, "scores.csv"))
    clip = next(r["file"] for r in rows if r["machine_id"] == "02")
    renamed = str(tmp_path / "recording.wav")
    other_id = str(tmp_path / "normal_id_07_00000000.wav")
    for copy in (renamed, other_id):
        shutil.copyfile(clip, copy)
    output = str(tmp_path / "decisions.json")
    scored = {r["file"]: r for r in scoring.score_files(workdir, [clip, renamed, other_id], output, progress=False)}
    assert scored[clip]["threshold"] == threshold["units"]["02"]["value"] and scored[clip]["threshold_unit"] == "02"
    assert scored[clip]["threshold_scope"] == "machine id 02"
    for copy, why in ((renamed, "the file name gives no machine id"), (other_id, "machine id 07 has no threshold")):
        assert scored[copy]["threshold"] == threshold["value"] and scored[copy]["threshold_unit"] is None
        assert why in scored[copy]["threshold_scope"]
        assert scored[copy]["score"] == pytest.approx(scored[clip]["score"])
    assert read_json(output)["threshold"]["units"] == threshold["units"]

    global_dir = str(tmp_path / "global")
    config = tiny_config("lstm", tiny_dataset, global_dir, cache_dir, epochs=1)
    config.threshold.per_unit = False
    overall = pipeline.train_and_evaluate(config)
    assert overall["threshold"]["per_unit"] is False and overall["threshold"]["units"] == {}
    assert overall["threshold"]["value"] == pytest.approx(threshold["value"])
    check_classification(global_dir, overall)
    assert scoring.score_files(global_dir, [clip], progress=False)[0]["threshold_scope"] == "global"


# ----------------------------------------------------------------------------------------------------------------------
# One detector per machine type.


def test_machine_type_all_trains_one_detector_per_type_and_summarises(tiny_dataset, cache_dir, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(os.path.join(tiny_dataset, "slider"), os.path.join(data, "slider"))
    shutil.copytree(os.path.join(tiny_dataset, "slider"), os.path.join(data, "fan"))
    for name in ("anomaly_id_00_00000000.wav", "normal_id_02_00000001.wav"):  # make the two types' figures differ
        os.remove(os.path.join(data, "fan", "test", name))
    workdir = str(tmp_path / "all")
    config = tiny_config("lstm", data, workdir, cache_dir, epochs=1)
    config.machine_type = "all"
    summary = pipeline.train_and_evaluate(config)

    assert summary["protocol"] == "dcase2020" and summary["machine_types"] == ["fan", "slider"]
    assert read_json(os.path.join(workdir, "summary.json")) == json.loads(json.dumps(summary))
    type_means = {}
    for machine_type in ("fan", "slider"):
        run_dir = os.path.join(workdir, machine_type)
        results = read_json(os.path.join(run_dir, "results.json"))  # an ordinary run directory per type
        assert results["machine_type"] == machine_type
        rows = read_csv(os.path.join(run_dir, "scores.csv"))
        assert all(f"{os.sep}{machine_type}{os.sep}" in r["file"] for r in rows)
        aucs, paucs = [], []
        for machine_id in sorted({r["machine_id"] for r in rows}):
            chosen = [r for r in rows if r["machine_id"] == machine_id]
            labels, scores = [int(r["label"]) for r in chosen], [float(r["score"]) for r in chosen]
            aucs.append(roc_auc_score(labels, scores))
            paucs.append(roc_auc_score(labels, scores, max_fpr=0.1))
        type_means[machine_type] = (np.mean(aucs), np.mean(paucs))
        figures = summary["per_type"][machine_type]
        assert (figures["mean_auc"], figures["mean_pauc"]) == pytest.approx(type_means[machine_type])
        assert figures["run_dir"] == run_dir and figures["num_units"] == 2
    assert len(read_csv(os.path.join(workdir, "fan", "scores.csv"))) == len(
        read_csv(os.path.join(workdir, "slider", "scores.csv"))) - 2
    assert summary["mean_auc"] == pytest.approx(np.mean([m[0] for m in type_means.values()]))
    assert summary["mean_pauc"] == pytest.approx(np.mean([m[1] for m in type_means.values()]))
    table = read_csv(os.path.join(workdir, "summary.csv"))
    assert [r["machine_type"] for r in table] == ["fan", "slider", "all"]
    assert float(table[-1]["mean_auc"]) == pytest.approx(summary["mean_auc"])
    assert "| all types |" in open(os.path.join(workdir, "summary.md")).read()

    listed = tiny_config("lstm", data, str(tmp_path / "listed"), cache_dir, epochs=1)
    listed.machine_type = "slider,fan"
    assert loading.machine_types(listed) == ["slider", "fan"]
    assert workdir_lib.default_workdir(get_config().copy_and_resolve_references()) == os.path.join("runs",
                                                                                                 "gru_ae_slider")


def test_machine_type_is_a_sweep_axis_with_one_group_per_type():
    base = get_config()
    base.method = "lstm"
    groups = experiment.group(experiment.expand(base, experiment.product({"machine_type": ["slider", "fan"],
                                                                           "seed": [0, 1]})))
    assert [g.name for g in groups] == ["slider", "fan"] and [len(g.members) for g in groups] == [2, 2]
    assert [g.config.machine_type for g in groups] == ["slider", "fan"]
    assert loading.data_key(groups[0].config) != loading.data_key(groups[1].config)
    base.machine_type = "all"
    with pytest.raises(dcase.DatasetError, match="make machine_type an axis"):
        loading.find_data(base)


# ----------------------------------------------------------------------------------------------------------------------
# Raw 8-channel MIMII, channel 0 as DCASE 2020 took it.


def test_raw_mimii_fan_end_to_end_with_channel_0(realdata, cache_dir, tmp_path):
    root = os.path.join(realdata, "mimii_8ch_arlene14ko")
    if not os.path.isdir(os.path.join(root, "fan")):
        pytest.skip("the raw MIMII fan clips are not there")
    workdir = str(tmp_path / "run")
    feature_cache = str(tmp_path / "cache")
    config = tiny_config("lstm", root, workdir, feature_cache, epochs=1)
    config.machine_type = "fan"
    config.features.duration_s, config.features.channel = 10.0, "0"
    config.val_fraction = 0.2  # 1 of the 5 training normals held out for the threshold
    results = pipeline.train_and_evaluate(config)

    assert results["protocol"] == "dcase2020" and "raw MIMII" in results["protocol_reason"]
    assert results["per_id"]["02"]["num_normal"] == 5 and results["per_id"]["02"]["num_anomaly"] == 10
    assert results["skipped_files"] == [] and 0.0 <= results["per_id"]["02"]["auc"] <= 1.0
    resolved = read_json(os.path.join(workdir, "config.json"))
    assert resolved["config"]["features"]["channel"] == "0"
    assert (resolved["resolved"]["num_fit_clips"], resolved["resolved"]["num_validation_clips"]) == (4, 1)
    indexes = [os.path.join(d, "index.json") for d, _, names in os.walk(feature_cache) if "index.json" in names]
    assert indexes and all(read_json(path)["config"]["channel"] == 0 for path in indexes)  # features of channel 0

    test_clip = read_csv(os.path.join(workdir, "scores.csv"))[0]["file"]
    scored = scoring.score_files(workdir, [test_clip], progress=False)[0]
    assert scored["threshold_unit"] == "02"  # the id_02 folder names the unit
    assert scored["threshold"] == read_json(os.path.join(workdir, "threshold.json"))["units"]["02"]["value"]
