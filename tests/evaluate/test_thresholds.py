"""Threshold policies: known values, a gamma fit that recovers its quantile, an oracle checked by brute force, and
thresholds per unit and domain."""

import json

import numpy as np
import pytest
from scipy import stats

from asd_jax.evaluate.metrics import classification_metrics
from asd_jax.evaluate.thresholds import (
    Threshold,
    ThresholdSet,
    choose_threshold,
    choose_unit_thresholds,
    oracle_f1_threshold,
)


def test_normal_quantile_on_a_known_array():
    threshold = choose_threshold("normal_quantile", normal_scores=np.arange(11.0))
    assert threshold == Threshold("normal_quantile", pytest.approx(9.0), test_tuned=False, quantile=0.9)
    assert choose_threshold(normal_scores=np.arange(11.0), quantile=0.5).value == pytest.approx(5.0)


def test_gamma_fit_recovers_a_known_quantile():
    samples = stats.gamma.rvs(3.0, scale=2.0, size=20_000, random_state=np.random.default_rng(0))
    threshold = choose_threshold("gamma_fit", normal_scores=samples, quantile=0.9)
    assert threshold.value == pytest.approx(stats.gamma.ppf(0.9, 3.0, scale=2.0), rel=0.02)
    assert not threshold.test_tuned and threshold.quantile == 0.9


def test_gamma_fit_handles_scores_that_are_not_all_positive():
    samples = np.random.default_rng(1).normal(-5.0, 1.0, size=5_000)
    threshold = choose_threshold("gamma_fit", normal_scores=samples, quantile=0.9)
    assert threshold.value == pytest.approx(np.quantile(samples, 0.9), abs=0.2)
    assert choose_threshold("gamma_fit", normal_scores=[2.0, 2.0, 2.0]).value == 2.0


def test_fixed():
    assert choose_threshold("fixed", value=1.5) == Threshold("fixed", 1.5, test_tuned=False)


def _best_f1_by_brute_force(labels, scores):
    unique = np.unique(scores)
    candidates = np.concatenate([[unique[0] - 1.0], unique, (unique[1:] + unique[:-1]) / 2])
    return max(classification_metrics(labels, scores, t)["f1_anomaly"] for t in candidates)


@pytest.mark.parametrize("seed", range(5))
def test_oracle_f1_maximises_f1_and_is_test_tuned(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=15)
    labels[0] = 1
    scores = np.round(rng.normal(size=15) + labels, 1)  # rounding makes ties
    threshold = choose_threshold("oracle_f1", test_labels=labels, test_scores=scores)
    assert threshold.test_tuned and threshold.policy == "oracle_f1"
    achieved = classification_metrics(labels, scores, threshold.value)["f1_anomaly"]
    assert achieved == pytest.approx(_best_f1_by_brute_force(labels, scores))


def test_oracle_f1_small_case():
    # Calling only the top clip (0.9) anomalous gives F1 2/3; calling the top three gives 2*2/(3+2) = 0.8;
    # calling all four gives 2*2/(4+2) = 2/3. Best: threshold at the highest score still called normal, 0.1.
    threshold = choose_threshold("oracle_f1", test_labels=[0, 0, 1, 1], test_scores=[0.1, 0.5, 0.4, 0.9])
    assert threshold.value == 0.1
    assert classification_metrics([0, 0, 1, 1], [0.1, 0.5, 0.4, 0.9], threshold.value)["f1_anomaly"] == pytest.approx(0.8)


def test_oracle_f1_can_call_every_clip_anomalous():
    threshold = choose_threshold("oracle_f1", test_labels=[1, 1, 0], test_scores=[0.1, 0.2, 0.3])
    assert threshold.value < 0.1
    assert classification_metrics([1, 1, 0], [0.1, 0.2, 0.3], threshold.value)["recall_anomaly"] == 1.0


@pytest.mark.parametrize(
    "policy, kwargs, message",
    [
        ("normal_quantile", {}, "policy 'normal_quantile' needs the scores of held-out normal training clips"),
        ("gamma_fit", {}, "policy 'gamma_fit' needs the scores of held-out normal training clips"),
        ("normal_quantile", {"normal_scores": []}, "got no held-out normal scores"),
        ("normal_quantile", {"normal_scores": [1.0], "quantile": 1.5}, "quantile in \\[0, 1\\]"),
        ("fixed", {}, "policy 'fixed' needs a threshold value"),
        ("oracle_f1", {"test_scores": [0.1]}, "policy 'oracle_f1' needs the test labels and test scores"),
        ("oracle_f1", {"test_labels": [0, 0], "test_scores": [0.1, 0.2]}, "at least one labelled anomalous"),
        ("median", {}, "unknown threshold policy 'median'"),
    ],
)
def test_missing_inputs_give_clear_errors(policy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        choose_threshold(policy, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Per unit (machine id / section) and per domain.


def _units_set():
    """Unit 00 scores around 1, unit 02 around 10; unit 02's target normals sit higher than its source ones."""
    rng = np.random.default_rng(0)
    normal_scores = np.concatenate([rng.normal(1.0, 0.1, 20), rng.normal(10.0, 1.0, 10), rng.normal(14.0, 1.0, 4)])
    normal_units = ["00"] * 20 + ["02"] * 14
    normal_domains = ["source"] * 20 + ["source"] * 10 + ["target"] * 4
    return normal_scores, normal_units, normal_domains


def test_unit_thresholds_are_each_units_own_quantile():
    scores, units, domains = _units_set()
    chosen = choose_unit_thresholds("normal_quantile", normal_scores=scores, normal_units=units, quantile=0.9,
                                    test_units=["00", "02", "04"])
    assert chosen.per_unit and chosen.value == pytest.approx(np.quantile(scores, 0.9))
    assert chosen.units["00"]["value"] == pytest.approx(np.quantile(scores[:20], 0.9))
    assert chosen.units["02"]["value"] == pytest.approx(np.quantile(scores[20:], 0.9))
    assert (chosen.units["00"]["num_heldout"], chosen.units["02"]["num_heldout"]) == (20, 14)
    assert chosen.units["04"] == {"value": chosen.value, "num_heldout": 0, "from": "global", "domains": {}}
    values = chosen.clip_values(["00", "02", "04", "99"])
    assert values.tolist() == [chosen.units["00"]["value"], chosen.units["02"]["value"], chosen.value, chosen.value]
    assert chosen.lookup("04") == (chosen.value, None, None) and chosen.lookup("00")[1:] == ("00", None)


def test_domain_thresholds_where_the_domain_has_held_out_normals():
    scores, units, domains = _units_set()
    chosen = choose_unit_thresholds("normal_quantile", normal_scores=scores, normal_units=units,
                                    normal_domains=domains, quantile=0.5, test_units=["00", "02"],
                                    test_domains=["target", "target"])
    assert set(chosen.units["00"]["domains"]) == {"source"}  # unit 00 has no held-out target normals
    assert chosen.units["02"]["domains"]["target"]["value"] == pytest.approx(np.median(scores[30:]))
    assert chosen.units["02"]["domains"]["source"]["num_heldout"] == 10
    assert chosen.lookup("00", "target") == (chosen.units["00"]["value"], "00", None)  # falls back to the unit's
    assert chosen.lookup("02", "target") == (chosen.units["02"]["domains"]["target"]["value"], "02", "target")
    again = ThresholdSet.from_json(json.loads(json.dumps(chosen.to_json())))
    assert again == chosen


def test_global_only_when_asked_and_for_fixed():
    scores, units, _ = _units_set()
    overall = choose_unit_thresholds("normal_quantile", normal_scores=scores, normal_units=units, per_unit=False)
    assert not overall.per_unit and overall.units == {} and overall.lookup("00") == (overall.value, None, None)
    assert overall.overall == choose_threshold("normal_quantile", normal_scores=scores)
    fixed = choose_unit_thresholds("fixed", value=2.0, normal_scores=None, normal_units=[])
    assert not fixed.per_unit and fixed.clip_values(["00"]).tolist() == [2.0]
    old = ThresholdSet.from_json({"policy": "fixed", "value": 2.0, "test_tuned": False, "quantile": None})
    assert not old.per_unit and old.lookup("00", "source") == (2.0, None, None)


def test_oracle_per_unit_is_test_tuned_on_each_units_test_clips():
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0])
    units = ["00"] * 4 + ["02"] * 4
    chosen = choose_unit_thresholds("oracle_f1", normal_scores=None, normal_units=[], test_labels=labels,
                                    test_scores=scores, test_units=units)
    assert chosen.test_tuned
    assert chosen.units["00"]["value"] == oracle_f1_threshold(labels[:4], scores[:4]) == 0.2
    assert chosen.units["02"]["value"] == oracle_f1_threshold(labels[4:], scores[4:]) == 6.0
    assert np.all((scores > chosen.clip_values(units)) == labels.astype(bool))


def test_member_classification_without_anomalies_gives_no_test_tuned_f1_instead_of_failing():
    """One type of a joint run on a small real folder may have only normal test clips: its test-tuned F1 is
    undefined (None), and the run goes on."""
    from types import SimpleNamespace

    from asd_jax.config import get_config
    from asd_jax.evaluate.thresholds import member_classification

    clips = [SimpleNamespace(machine_id="00", domain="source", section="00", label=0) for _ in range(3)]
    settings = get_config().threshold
    figures = member_classification(settings, np.zeros(3, int), np.asarray([[0.1, 0.2, 0.3]]),
                                    np.asarray([[0.1, 0.2]]), clips[:2], clips)
    assert figures[0]["f1_anomaly_test_tuned"] is None
    with_anomaly = member_classification(settings, np.asarray([0, 0, 1]), np.asarray([[0.1, 0.2, 0.3]]),
                                         np.asarray([[0.1, 0.2]]), clips[:2], clips)
    assert with_anomaly[0]["f1_anomaly_test_tuned"] == 1.0
