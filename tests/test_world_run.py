"""The DCASE-like synthetic world end to end: --mode=synth writes it, one command runs every machine type, and the
official score per type and over all types recomputes from each type's scores.csv with sklearn and scipy."""

import csv
import json
import os

import numpy as np
import pytest
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from asd_jax import pipeline
from asd_jax.config import get_config
from asd_jax.data import loading
from asd_jax.data import synthetic_world as W
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("jax_compile_cache")

TINY_WORLD = W.WorldConfig(num_train=4, num_train_target=4, num_test_normal=3, num_test_anomaly=3,
                           num_supplemental_machine=1, num_supplemental_noise=1, duration_s=1.0)


def _official(rows: list[dict]) -> tuple[list[float], float]:
    """The 2022-2026 figures of one section from its scores.csv rows: AUC of each domain's normals against all
    anomalies, pAUC (FPR <= 0.1) on every clip; and their harmonic mean."""
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    domains = np.array([r["domain"] for r in rows])
    figures = []
    for domain in ("source", "target"):
        chosen = (labels == 1) | (domains == domain)
        figures.append(roc_auc_score(labels[chosen], scores[chosen]))
    figures.append(roc_auc_score(labels, scores, max_fpr=0.1))
    return figures, float(hmean(figures))


def test_synth_mode_writes_the_world(tmp_path):
    config = get_config()
    config.synthetic.layout, config.data_dir, config.progress, config.num_workers = "dcase2025", str(tmp_path), False, 1
    assert loading.synth_config(config) == W.WorldConfig()
    config.synthetic.size = "dcase_dev"
    assert loading.synth_config(config).num_train == 990
    config.synthetic.size = "huge"
    with pytest.raises(ValueError, match="synthetic.size='huge'"):
        loading.synth_config(config)


def test_every_type_of_the_world_in_one_run_and_its_official_scores_recompute(tmp_path):
    root = str(tmp_path / "world")
    W.generate_world(root, TINY_WORLD, num_workers=1, progress=False)
    workdir = str(tmp_path / "run")
    config = tiny_config("dense_ae", root, workdir, str(tmp_path / "cache"), epochs=1)
    config.machine_type = "all"
    config.val_fraction = 0.25  # one held-out normal per domain
    summary = pipeline.train_and_evaluate(config)
    _check_recomputes(workdir, summary)


def _check_recomputes(workdir: str, summary: dict) -> None:
    """Each type's official score, and the one over all types, recompute from each type's scores.csv."""
    assert summary["protocol"] == "dcase2025" and summary["machine_types"] == ["fan", "slider", "valve"]
    every_figure = []
    for machine_type in ("fan", "slider", "valve"):
        with open(os.path.join(workdir, machine_type, "scores.csv"), newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert {r["section"] for r in rows} == {"00"} and {r["domain"] for r in rows} == {"source", "target"}
        keys = [key for key, _, _ in W.MACHINE_TYPES[machine_type].attributes]
        assert all(sorted(cell.split("=")[0] for cell in r["attributes"].split(";")) == sorted(keys) for r in rows)
        figures, score = _official(rows)
        every_figure += figures
        assert summary["per_type"][machine_type]["official_score"] == pytest.approx(score, abs=1e-9)
        with open(os.path.join(workdir, machine_type, "results.json")) as handle:
            assert json.load(handle)["official_score"] == pytest.approx(score, abs=1e-9)
    assert summary["official_score"] == pytest.approx(float(hmean(every_figure)), abs=1e-9)
    with open(os.path.join(workdir, "summary.json")) as handle:
        assert json.load(handle)["official_score"] == pytest.approx(summary["official_score"])


def test_one_id_classifier_over_every_type_reports_each_types_figures_that_recompute(tmp_path):
    """types=joint: one model (one compiled program, one set of checkpoints in the work directory) whose classes are
    type x section x attributes over every type; each type's figures in its own folder recompute from its
    scores.csv, and the supplemental clips (clean and noise mixtures) are trained on."""
    root = str(tmp_path / "world")
    W.generate_world(root, TINY_WORLD, num_workers=1, progress=False)
    workdir = str(tmp_path / "run")
    config = tiny_config("id_classifier", root, workdir, str(tmp_path / "cache"), epochs=1)
    config.machine_type = "all"
    config.val_fraction = 0.25
    summary = pipeline.train_and_evaluate(config)
    assert summary["joint"]
    _check_recomputes(workdir, summary)
    with open(os.path.join(workdir, "classes.json")) as handle:
        saved = json.load(handle)
    assert saved["joint"] and saved["units"] == ["fan/00", "slider/00", "valve/00"]
    assert {c.split("/")[0] for c in saved["classes"]} == {"fan", "slider", "valve"}
    assert all("|" in c for c in saved["classes"]) and len(saved["classes"]) > 3  # attribute combinations
    assert os.path.isdir(os.path.join(workdir, "checkpoints"))
    for machine_type in ("fan", "slider", "valve"):
        assert not os.path.exists(os.path.join(workdir, machine_type, "checkpoints"))
        with open(os.path.join(workdir, machine_type, "results.json")) as handle:
            results = json.load(handle)
        assert results["compiles"] == 1 and results["classes"]["joint"]
        assert results["supplemental"]["used"] == {"machine": 3, "noise": 3}  # every type's, in the one model
    with open(os.path.join(workdir, "summary.md")) as handle:
        assert "One detector over every machine type" in handle.read()


def test_supplemental_clips_are_counted_and_added_for_a_method_that_declares_them(tmp_path):
    import dataclasses

    from asd_jax.methods import registry

    root = str(tmp_path / "world")
    W.generate_world(root, dataclasses.replace(TINY_WORLD, machine_types=("valve",), num_supplemental_machine=2),
                     num_workers=1, progress=False)
    config = tiny_config("dense_ae", root, str(tmp_path / "plain"), str(tmp_path / "cache"), epochs=1)
    config.machine_type = "valve"
    plain = pipeline.train_and_evaluate(config)
    assert plain["supplemental"] == {"found": {"machine": 2, "noise": 1}, "used": {"machine": 0, "noise": 0},
                                     "setting": "auto"}
    taker = registry.register(dataclasses.replace(registry.get("dense_ae"), name="dense_ae_supplemental",
                                                  supplemental=("machine",)))
    try:
        config.method, config.workdir = taker.name, str(tmp_path / "taker")
        taken = pipeline.train_and_evaluate(config)
        assert taken["supplemental"]["used"] == {"machine": 2, "noise": 0}
        assert taken["train_clips"] == plain["train_clips"] + 2
        config.supplemental, config.workdir = "none", str(tmp_path / "none")
        assert pipeline.train_and_evaluate(config)["train_clips"] == plain["train_clips"]
    finally:
        registry.unregister(taker.name)
