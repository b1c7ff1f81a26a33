"""The run-directory contract on tiny fake runs: results.json keys and values, scores.csv, report.md, plots."""

import csv
import json
import math
import os

import numpy as np
import pytest

from asd_jax.evaluate.metrics import classification_metrics, per_id_metrics
from asd_jax.evaluate.report import write_run_outputs
from asd_jax.evaluate.results import evaluate_run, load_results
from asd_jax.evaluate.tables import format_table
from asd_jax.evaluate.thresholds import Threshold, choose_threshold

TOP_LEVEL_KEYS = {
    "method", "machine_type", "data_dir", "num_seeds", "per_id", "mean", "std", "ensemble", "pooled",
    "members", "members_diverged", "threshold", "test_tuned", "skipped_files", "notes",
    "protocol", "per_section", "official_score", "official",
}
THRESHOLD_KEYS = {
    "policy", "value", "test_tuned", "quantile", "per_unit", "units", "accuracy", "precision_normal", "recall_normal",
    "f1_normal", "precision_anomaly", "recall_anomaly", "f1_anomaly", "confusion",
}
PER_ID_KEYS = {"auc", "pauc", "num_normal", "num_anomaly"}


def _fake_run(num_members: int, seed: int = 0):
    """Two ids with 4 normal and 4 anomalous clips each; member 0 separates perfectly, the others are noisy."""
    rng = np.random.default_rng(seed)
    machine_ids = ["00"] * 8 + ["02"] * 8
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 2)
    files = [f"{'anomaly' if y else 'normal'}_id_{i}_{n:08d}.wav" for n, (i, y) in enumerate(zip(machine_ids, labels))]
    perfect = labels + 0.1 * rng.random(16)
    noisy = [labels + rng.normal(0.0, 0.8, 16) for _ in range(num_members - 1)]
    return files, machine_ids, labels, np.stack([perfect, *noisy])


def _evaluate(files, machine_ids, labels, member_scores, threshold=None, **kwargs):
    threshold = threshold or choose_threshold("fixed", value=0.5)
    return evaluate_run(method="dense_ae", machine_type="slider", data_dir="/data/slider", files=files,
                        machine_ids=machine_ids, labels=labels, member_scores=member_scores, threshold=threshold, **kwargs)


def _write(run_dir, results, files, machine_ids, labels, member_scores, **kwargs):
    write_run_outputs(str(run_dir), results, files=files, machine_ids=machine_ids, labels=labels,
                      member_scores=member_scores, **kwargs)


def test_single_member_run(tmp_path):
    files, machine_ids, labels, member_scores = _fake_run(1)
    results = _evaluate(files, machine_ids, labels, member_scores, skipped_files=["broken.wav"], extra={"epochs": 3})
    _write(tmp_path, results, files, machine_ids, labels, member_scores)

    saved = load_results(tmp_path)
    assert set(saved) == TOP_LEVEL_KEYS | {"epochs"}
    assert saved["epochs"] == 3
    assert (saved["method"], saved["machine_type"], saved["data_dir"], saved["num_seeds"]) == ("dense_ae", "slider", "/data/slider", 1)
    assert set(saved["per_id"]) == {"00", "02"}
    for metrics in saved["per_id"].values():
        assert set(metrics) == PER_ID_KEYS
        assert metrics["auc"] == 1.0 and metrics["pauc"] == 1.0
        assert (metrics["num_normal"], metrics["num_anomaly"]) == (4, 4)
    assert saved["mean"] == {"auc": 1.0, "pauc": 1.0}
    assert saved["std"] == {"auc": 0.0, "pauc": 0.0}
    assert saved["ensemble"] == {"per_id": saved["per_id"], "mean": saved["mean"]}
    assert saved["pooled"] == {"auc": 1.0}
    assert [m["name"] for m in saved["members"]] == ["seed0"]
    assert set(saved["threshold"]) == THRESHOLD_KEYS
    assert saved["threshold"]["policy"] == "fixed" and saved["threshold"]["value"] == 0.5
    assert saved["threshold"]["accuracy"] == 1.0 and saved["threshold"]["f1_anomaly"] == 1.0
    assert saved["test_tuned"] is False and saved["threshold"]["test_tuned"] is False
    assert saved["skipped_files"] == [{"file": "broken.wav"}]

    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "machine_id", "section", "domain", "label", "score"]
    assert len(rows) == 1 + 16
    assert rows[1][:5] == [files[0], "00", "00", "", "0"]
    assert float(rows[5][5]) == pytest.approx(member_scores[0, 4])
    assert (saved["protocol"], saved["per_section"], saved["official_score"]) == ("dcase2020", None, None)
    assert saved["official"]["mean_auc"] == 1.0 and saved["members"][0]["official"]["mean_pauc"] == 1.0

    report = (tmp_path / "report.md").read_text()
    assert "TEST-TUNED" not in report
    assert "broken.wav" in report and "| Normal | 1.00 | 1.00 | 1.00 |" in report
    for plot in ("roc.png", "score_hist.png"):
        assert os.path.getsize(tmp_path / plot) > 1000


def test_three_member_run(tmp_path):
    files, machine_ids, labels, member_scores = _fake_run(3)
    names = ["s0", "s1", "s2"]
    results = _evaluate(files, machine_ids, labels, member_scores, member_names=names)
    _write(tmp_path, results, files, machine_ids, labels, member_scores)
    assert results["num_seeds"] == 3

    members = [per_id_metrics(machine_ids, labels, row) for row in member_scores]
    for machine_id in ("00", "02"):
        expected = np.mean([m["per_id"][machine_id]["auc"] for m in members])
        assert results["per_id"][machine_id]["auc"] == pytest.approx(expected)
    member_means = [m["mean"]["auc"] for m in members]
    assert results["mean"]["auc"] == pytest.approx(np.mean(member_means))
    assert results["std"]["auc"] == pytest.approx(np.std(member_means))
    assert results["std"]["auc"] > 0  # the noisy members differ from the perfect one
    assert [m["name"] for m in results["members"]] == names
    assert results["members"][1]["per_id"] == members[1]["per_id"]

    ensemble_score = member_scores.mean(axis=0)
    assert results["ensemble"] == per_id_metrics(machine_ids, labels, ensemble_score)
    table = classification_metrics(labels, ensemble_score, 0.5)
    assert results["threshold"]["f1_normal"] == pytest.approx(table["f1_normal"])
    assert results["threshold"]["confusion"] == {key: table[key] for key in ("tp", "fp", "tn", "fn")}

    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "machine_id", "section", "domain", "label", "score", "score_s0", "score_s1",
                             "score_s2"]
    assert len(rows) == 16
    assert [float(r["score"]) for r in rows] == pytest.approx(ensemble_score)
    assert [float(r["score_s2"]) for r in rows] == pytest.approx(member_scores[2])

    table_text = format_table(results)
    assert "±" in table_text and "ensemble mean score" in table_text
    assert "| Class | Precision | Recall | F1-score |" in table_text
    report = (tmp_path / "report.md").read_text()
    assert "±" in report and "ensemble mean score" in report


def test_test_tuned_threshold_is_flagged_everywhere(tmp_path):
    files, machine_ids, labels, member_scores = _fake_run(3)
    threshold = choose_threshold("oracle_f1", test_labels=labels, test_scores=member_scores.mean(axis=0))
    results = _evaluate(files, machine_ids, labels, member_scores, threshold=threshold)
    _write(tmp_path, results, files, machine_ids, labels, member_scores)
    saved = load_results(tmp_path)
    assert saved["test_tuned"] is True and saved["threshold"]["test_tuned"] is True
    assert "TEST-TUNED" in (tmp_path / "report.md").read_text()
    assert "TEST-TUNED" in format_table(results)
    assert "TEST-TUNED" not in format_table(_evaluate(files, machine_ids, labels, member_scores))


def test_format_table_rows():
    files, machine_ids, labels, member_scores = _fake_run(1)
    text = format_table(_evaluate(files, machine_ids, labels, member_scores, threshold=Threshold("normal_quantile", 0.5, False, 0.9)))
    lines = text.splitlines()
    assert any(line.split()[:3] == ["00", "1.0000", "1.0000"] for line in lines)
    assert any(line.startswith("mean over ids") for line in lines)
    assert "| Normal | 1.00 | 1.00 | 1.00 |" in lines and "| Anomalous | 1.00 | 1.00 | 1.00 |" in lines
    assert "normal_quantile (q=0.9)" in text
    assert "±" not in text and "ensemble mean score" not in text


def test_missing_class_and_unknown_labels_become_null(tmp_path):
    machine_ids = ["00"] * 4 + ["02"] * 2 + ["04"]
    labels = np.array([0, 0, 1, 1, 0, 0, -1])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.4, 0.5])
    files = [f"clip{n}.wav" for n in range(7)]
    results = _evaluate(files, machine_ids, labels, scores)
    assert math.isnan(results["per_id"]["02"]["auc"])
    _write(tmp_path, results, files, machine_ids, labels, scores)

    raw = (tmp_path / "results.json").read_text()
    assert "NaN" not in raw
    saved = json.loads(raw)
    assert saved["per_id"]["02"]["auc"] is None and saved["per_id"]["04"]["pauc"] is None
    assert saved["mean"]["auc"] == 1.0
    assert any("02" in note and "no anomalous clips" in note for note in saved["notes"])
    assert saved["threshold"]["confusion"]["tn"] + saved["threshold"]["confusion"]["fp"] == 4  # unknown clip left out
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["label"] == "-1" and len(rows) == 7
    assert "n/a" in format_table(saved)
    for plot in ("roc.png", "score_hist.png"):
        assert os.path.getsize(tmp_path / plot) > 1000


def test_plots_survive_a_single_clip(tmp_path):
    results = _evaluate(["a.wav"], ["00"], np.array([0]), np.array([[0.3]]))
    _write(tmp_path, results, ["a.wav"], ["00"], np.array([0]), np.array([[0.3]]))
    assert (tmp_path / "roc.png").exists() and (tmp_path / "score_hist.png").exists()


def test_bad_inputs_raise():
    files, machine_ids, labels, member_scores = _fake_run(2)
    with pytest.raises(ValueError, match="shape"):
        _evaluate(files, machine_ids, labels, member_scores[:, :5])
    with pytest.raises(ValueError, match="member names"):
        _evaluate(files, machine_ids, labels, member_scores, member_names=["only_one"])
    with pytest.raises(ValueError, match="clash"):
        _evaluate(files, machine_ids, labels, member_scores, extra={"mean": 0})
    broken = member_scores.copy()
    broken[1, 3] = np.nan
    with pytest.raises(ValueError, match="member 'seed1' has 1 NaN"):
        _evaluate(files, machine_ids, labels, broken)


def test_training_curve_plot_from_jsonl(tmp_path):
    from asd_jax.evaluate.plots import plot_training_curve

    assert plot_training_curve(str(tmp_path)) is None
    records = [{"epoch": e, "loss": [1.0 / e, 2.0 / e], "members": ["seed0", "seed1"]} for e in (1, 2, 3)]
    (tmp_path / "train_curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    path = plot_training_curve(str(tmp_path))
    assert path == str(tmp_path / "train_curve.png") and os.path.getsize(path) > 1000


# ----------------------------------------------------------------------------------------------------------------------
# DCASE 2021+ layouts, per-unit thresholds and the summary across machine types.


def _fake_2023_run(seed: int = 0, shift: float = 0.0):
    """Sections 00 and 01; per section and domain 4 normal and 3 anomalous clips; two members."""
    rng = np.random.default_rng(seed)
    sections, domains, labels = [], [], []
    for section in ("00", "01"):
        for domain in ("source", "target"):
            for label, count in ((0, 4), (1, 3)):
                sections += [section] * count
                domains += [domain] * count
                labels += [label] * count
    labels = np.array(labels)
    files = [f"section_{s}_{d}_test_{'anomaly' if y else 'normal'}_{n:04d}.wav"
             for n, (s, d, y) in enumerate(zip(sections, domains, labels))]
    scores = np.stack([labels + shift + rng.normal(0.0, 0.6, labels.size) for _ in range(2)])
    return files, sections, domains, labels, scores


def test_a_2023_run_reports_per_section_figures_and_the_official_score(tmp_path):
    from scipy.stats import hmean
    from sklearn.metrics import roc_auc_score

    from asd_jax.evaluate.thresholds import choose_unit_thresholds

    files, sections, domains, labels, scores = _fake_2023_run()
    normal_units, normal_domains = ["00", "00", "01", "01"], ["source", "target", "source", "source"]
    thresholds = choose_unit_thresholds("normal_quantile", normal_scores=np.array([0.2, 0.9, 0.4, 0.6]),
                                        normal_units=normal_units, normal_domains=normal_domains,
                                        test_units=sections, test_domains=domains)
    results = _evaluate(files, sections, labels, scores, threshold=thresholds, domains=domains, edition="2023")
    _write(tmp_path, results, files, sections, labels, scores, domains=domains)
    saved = load_results(tmp_path)
    assert saved["protocol"] == "dcase2023" and set(saved["per_section"]) == {"00", "01"}

    ensemble = scores.mean(axis=0)
    sections, domains = np.array(sections), np.array(domains)
    figures = []
    for section in ("00", "01"):
        ours = saved["per_section"][section]
        in_section = sections == section
        for domain in ("source", "target"):
            chosen = in_section & ((labels == 1) | (domains == domain))
            assert ours[f"auc_{domain}"] == pytest.approx(roc_auc_score(labels[chosen], ensemble[chosen]))
            figures.append(ours[f"auc_{domain}"])
        assert ours["pauc"] == pytest.approx(roc_auc_score(labels[in_section], ensemble[in_section], max_fpr=0.1))
        figures.append(ours["pauc"])
        assert (ours["num_source_normal"], ours["num_target_normal"], ours["num_anomaly"]) == (4, 4, 6)
    assert saved["official_score"] == pytest.approx(hmean(figures))
    for member, row in zip(saved["members"], scores):
        in_00 = sections == "00"
        chosen = in_00 & ((labels == 1) | (domains == "source"))
        assert member["official"]["per_section"]["00"]["auc_source"] == pytest.approx(
            roc_auc_score(labels[chosen], row[chosen]))

    # each clip judged by its unit's threshold: its domain's where the domain had held-out normals
    expected = np.array([thresholds.units[s]["domains"].get(d, thresholds.units[s])["value"]
                         for s, d in zip(sections, domains)])
    assert expected[(sections == "01") & (domains == "target")][0] == thresholds.units["01"]["value"]
    table = classification_metrics(labels, ensemble > expected, 0.5)
    assert saved["threshold"]["confusion"] == {key: table[key] for key in ("tp", "fp", "tn", "fn")}
    assert saved["threshold"]["per_unit"] and set(saved["threshold"]["units"]) == {"00", "01"}
    assert json.load(open(tmp_path / "threshold.json"))["units"] == saved["threshold"]["units"]

    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["section"], r["domain"]) for r in rows] == list(zip(sections, domains))
    text = format_table(results)
    assert "AUC source" in text and "official score" in text and "dcase2023" in text
    assert "id  AUC" not in text and "00 = " in text  # the per-section layout, the per-section thresholds
    report = (tmp_path / "report.md").read_text()
    assert "## Official figures per section, dcase2023" in report and "| official score |" in report


def test_a_2021_run_has_per_domain_pauc():
    files, sections, domains, labels, scores = _fake_2023_run()
    results = _evaluate(files, sections, labels, scores, domains=domains, edition="dcase2021")
    assert set(results["per_section"]["00"]) >= {"auc_source", "auc_target", "pauc_source", "pauc_target"}
    assert "pAUC target" in format_table(results)


def test_summary_across_types(tmp_path):
    from scipy.stats import hmean

    from asd_jax.every_type import summarise_types, write_type_summary

    per_type = {}
    for machine_type, shift in (("fan", 0.0), ("valve", 0.3)):
        files, sections, domains, labels, scores = _fake_2023_run(seed=len(per_type), shift=shift)
        per_type[machine_type] = evaluate_run(method="lstm", machine_type=machine_type, data_dir="/d", files=files,
                                              machine_ids=sections, labels=labels, member_scores=scores,
                                              threshold=choose_threshold("fixed", value=0.5), domains=domains,
                                              edition="dcase2023")
    summary = summarise_types(per_type, {t: str(tmp_path / t) for t in per_type})
    every = [per_type[t]["per_section"][s][k] for t in per_type for s in ("00", "01")
             for k in ("auc_source", "auc_target", "pauc")]
    assert summary["official_score"] == pytest.approx(hmean(every))
    for machine_type, results in per_type.items():
        assert summary["per_type"][machine_type]["official_score"] == pytest.approx(results["official_score"])
    write_type_summary(str(tmp_path), summary)
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["machine_type"] for r in rows] == ["fan", "valve", "all"]
    assert float(rows[-1]["official_score"]) == pytest.approx(hmean(every))
    assert json.load(open(tmp_path / "summary.json"))["protocol"] == "dcase2023"
    assert "| all types |" in (tmp_path / "summary.md").read_text()

    per_type["pump"] = _evaluate(*_fake_run(1))  # a 2020 result cannot join a 2023 summary
    with pytest.raises(ValueError, match="different DCASE editions"):
        summarise_types(per_type)
