"""The id classifier and the clip-vector kNN methods end to end on the tiny synthetic set, and their errors."""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd_jax import pipeline, scoring
from asd_jax.methods.knn import brute_force_scores
from tests.conftest import TINY_MACHINE_IDS, tiny_config

pytestmark = pytest.mark.usefixtures("jax_compile_cache")


def _scores_csv(run: str) -> list[dict]:
    import csv

    with open(os.path.join(run, "scores.csv")) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # over a minute each on 2 cores: `make test-slow` runs them
@pytest.mark.parametrize("backend", ["knn", "neg_log_prob"])
def test_id_classifier_trains_two_seeds_in_one_program_and_scores_new_clips(backend, tiny_dataset, tmp_path):
    run = str(tmp_path / "run")
    config = tiny_config("id_classifier", tiny_dataset, run, str(tmp_path / "cache"))
    config.num_seeds = 2
    config.id_classifier.backend = backend
    config.id_classifier.mixup_alpha, config.id_classifier.time_masks = 0.2, 1  # augmentation runs in the step
    results = pipeline.train_and_evaluate(config)
    assert results["method"] == "id_classifier" and set(results["per_id"]) == set(TINY_MACHINE_IDS)
    assert results["compiles"] == 1 and [m["name"] for m in results["members"]] == ["seed0", "seed1"]
    # classes=auto on 2020 names (no attributes): the machine ids
    assert results["classes"] == {"mode": "auto", "count": 2, "units": list(TINY_MACHINE_IDS), "joint": False}
    assert results["score_backend"] == backend
    with open(os.path.join(run, "classes.json")) as handle:
        assert json.load(handle)["classes"] == list(TINY_MACHINE_IDS)
    rows = _scores_csv(run)
    ensemble_scores = np.asarray([float(r["score"]) for r in rows])
    labels = np.asarray([int(r["label"]) for r in rows])
    for machine_id in TINY_MACHINE_IDS:  # the reported per-id AUC: the members' mean AUC of the written scores
        mine = np.asarray([r["machine_id"] == machine_id for r in rows])
        member_aucs = [roc_auc_score(labels[mine], np.asarray([float(r[f"score_seed{s}"]) for r in rows])[mine])
                       for s in (0, 1)]
        assert results["per_id"][machine_id]["auc"] == pytest.approx(np.mean(member_aucs))
    if backend == "knn":
        saved = np.load(os.path.join(run, "knn_train_embeddings.npz"))
        assert saved["embeddings"].shape[0] == 2 and sorted(set(saved["units"])) == list(TINY_MACHINE_IDS)
        np.testing.assert_allclose(np.linalg.norm(saved["embeddings"], axis=-1), 1.0, rtol=1e-5)
    else:
        assert (ensemble_scores >= 0).all()  # minus a log-probability
    test_dir = os.path.join(tiny_dataset, "slider", "test")
    clip = os.path.join(test_dir, sorted(os.listdir(test_dir))[0])
    scored = scoring.score_files(run, [clip], progress=False)  # restored from the run dir alone
    written = next(r for r in rows if os.path.basename(r["file"]) == os.path.basename(clip))
    assert scored[0]["score"] == pytest.approx(float(written["score"]), rel=1e-4)


@pytest.mark.parametrize("scale", ["mel", pytest.param("linear", marks=pytest.mark.slow)])
def test_id_classifier_knn_score_is_the_brute_force_nearest_training_embedding(scale, tiny_dataset, tmp_path):
    """Also on the reference systems' linear-frequency input (features.scale=linear, 200 Hz - 8 kHz: 500 bins)."""
    from asd_jax.methods import inference, registry
    from asd_jax.rundir import RunDir
    from asd_jax.train import ensemble

    run = str(tmp_path / "run")
    config = tiny_config("id_classifier", tiny_dataset, run, str(tmp_path / "cache"), epochs=1)
    config.id_classifier.backend = "knn"
    if scale == "linear":
        config.features.scale, config.features.fmin, config.features.fmax = "linear", 200.0, 8000.0
    pipeline.train_and_evaluate(config)
    detector = registry.get("id_classifier").restore_detector(config, RunDir(run), [ensemble.Member.create(0)])
    saved = np.load(os.path.join(run, "knn_train_embeddings.npz"))
    test_dir = os.path.join(tiny_dataset, "slider", "test")
    paths = [os.path.join(test_dir, name) for name in sorted(os.listdir(test_dir))]
    extracted = detector._extract(paths, "test")
    assert extracted.features.shape[-1] == (500 if scale == "linear" else 32)
    embeddings = inference.score_clips(detector.embed_fn, detector.states, extracted.features, detector.normalizer,
                                       labels=detector.score_labels(extracted.paths))  # with each clip's spectrum
    units = [os.path.basename(p).split("_")[2] for p in extracted.paths]  # normal_id_XX_... / anomaly_id_XX_...
    expected = brute_force_scores(saved["embeddings"][0], saved["units"], embeddings[0], units, 1)
    np.testing.assert_allclose(detector.score(paths).values[0], expected, rtol=1e-4, atol=1e-6)


def test_id_classifier_refuses_a_single_class_and_says_what_to_do(tiny_dataset, tmp_path):
    config = tiny_config("id_classifier", tiny_dataset, str(tmp_path / "run"), str(tmp_path / "cache"))
    config.machine_ids = "00"
    with pytest.raises(ValueError, match=r"only one machine id \(00\).*--machine_type=all.*--method=dense_ae"):
        pipeline.train_and_evaluate(config)


def test_auto_classes_are_attribute_combinations_where_clips_have_them():
    from asd_jax.data.dcase import NORMAL, Clip
    from asd_jax.methods.classifier import class_key, training_classes

    with_attributes = [Clip(f"/d/{i}.wav", "fan", "00", "train", NORMAL, "source", "00", {"spd": str(s)})
                       for i, s in enumerate((1470, 1500, 1470))]
    hidden = Clip("/d/h.wav", "fan", "01", "train", NORMAL, "source", "01", {})
    classes, units = training_classes(with_attributes + [hidden], "auto")
    assert classes == ["00|spd=1470", "00|spd=1500", "01"] and units == ["00", "01"]
    assert class_key(hidden, "auto") == "01" and class_key(with_attributes[0], "unit") == "00"
    with pytest.raises(ValueError, match="only one class"):
        training_classes(with_attributes[:1], "auto")


def test_unit_attributes_needs_attributes(tiny_dataset, tmp_path):
    config = tiny_config("id_classifier", tiny_dataset, str(tmp_path / "run"), str(tmp_path / "cache"))
    config.id_classifier.classes = "unit_attributes"
    with pytest.raises(ValueError, match="needs every training clip's attributes.*classes=unit"):
        pipeline.train_and_evaluate(config)


def test_logmel_knn_scores_equal_brute_force_on_standardised_statistics(tiny_dataset, tmp_path):
    from asd_jax.data.features import extract_features
    from asd_jax.data.loading import feature_config
    from asd_jax.methods.ocsvm import logmel_stats

    run = str(tmp_path / "run")
    config = tiny_config("logmel_knn", tiny_dataset, run, str(tmp_path / "cache"))
    results = pipeline.train_and_evaluate(config)
    assert results["knn"]["k"] == 1 and results["knn"]["standardize"]
    root = os.path.join(tiny_dataset, "slider")
    import csv

    with open(os.path.join(run, "validation_scores.csv")) as handle:
        held_out = {os.path.basename(r["file"]) for r in csv.DictReader(handle)}
    assert held_out  # the held-out normals are not part of the kNN's training clips
    train = [os.path.join(root, "train", n) for n in sorted(os.listdir(os.path.join(root, "train")))
             if n not in held_out]
    test = [os.path.join(root, "test", n) for n in sorted(os.listdir(os.path.join(root, "test")))]
    features = feature_config(config)
    train_v = logmel_stats(extract_features(train, features, None, 1, False).features)
    test_v = logmel_stats(extract_features(test, features, None, 1, False).features)
    mean, std = train_v.mean(axis=0), train_v.std(axis=0)
    std[std == 0] = 1.0
    unit = lambda path: os.path.basename(path).split("_")[2]
    expected = brute_force_scores((train_v - mean) / std, [unit(p) for p in train], (test_v - mean) / std,
                                  [unit(p) for p in test], 1)
    rows = {os.path.basename(r["file"]): float(r["score"]) for r in _scores_csv(run)}
    np.testing.assert_allclose([rows[os.path.basename(p)] for p in test], expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", ["knn_domain", "kmeans"])
def test_domain_aware_backends_score_a_2023_layout_and_restore_from_the_run(backend, tmp_path):
    """One section with source and target domains: classes=auto takes the attribute combinations, the backend gets
    the training clips' domains, and --mode=score refits it from the saved embeddings to the same scores."""
    from asd_jax.data import synthetic

    root = str(tmp_path / "data")
    synthetic.generate_dataset(root, synthetic.SynthConfig(layout="dcase2023", num_train=6, num_train_target=3,
                                                           num_test_normal=2, num_test_anomaly=2, duration_s=1.0),
                               num_workers=1, progress=False)
    run = str(tmp_path / "run")
    config = tiny_config("id_classifier", root, run, str(tmp_path / "cache"), epochs=1)
    config.id_classifier.backend, config.id_classifier.score_normalise = backend, True
    results = pipeline.train_and_evaluate(config)
    assert results["classes"]["count"] == 2 and results["score_backend"] == backend
    assert set(np.load(os.path.join(run, "knn_train_embeddings.npz"))["domains"]) == {"source", "target"}
    rows = _scores_csv(run)
    scored = scoring.score_files(run, [rows[0]["file"]], progress=False)
    assert scored[0]["score"] == pytest.approx(float(rows[0]["score"]), rel=1e-4, abs=1e-6)


def test_an_unknown_backend_is_refused_before_any_data_work(tmp_path):
    config = tiny_config("id_classifier", str(tmp_path / "nothing_here"), str(tmp_path / "run"), "", epochs=1)
    config.id_classifier.backend = "annoy"
    with pytest.raises(ValueError, match="backend='annoy'.*knn_domain"):
        pipeline.train_and_evaluate(config)
