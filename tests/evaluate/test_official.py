"""Official DCASE figures per edition, checked against an independent sklearn + scipy.stats.hmean computation."""

import sys

import numpy as np
import pytest
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from asd_jax.data import dcase
from asd_jax.evaluate import official as O

EPS = sys.float_info.epsilon


def _auc(y, s):
    return roc_auc_score(y, s)


def _pauc(y, s):
    return roc_auc_score(y, s, max_fpr=0.1)


def _tiny_set(seed=0):
    """Two sections; per section and domain 6 normal and 4 anomalous clips; target normals score higher."""
    rng = np.random.default_rng(seed)
    units, domains, labels, scores = [], [], [], []
    for section, shift in (("00", 0.0), ("01", 0.5)):
        for domain, offset in (("source", 0.0), ("target", 0.8)):
            for label, count in ((0, 6), (1, 4)):
                units += [section] * count
                domains += [domain] * count
                labels += [label] * count
                scores += list(rng.normal(shift + offset * (1 - label) + 1.2 * label, 0.7, count))
    return np.array(units), np.array(domains, dtype=object), np.array(labels), np.array(scores)


def test_dcase2020_per_id_and_arithmetic_means():
    # id 00: anomalies 2, 3 beat both normals -> 1.0; id 02: anomaly 1 beats one of two normals, 3 both -> 0.75.
    units = ["00"] * 4 + ["02"] * 4
    labels = [0, 0, 1, 1, 0, 0, 1, 1]
    scores = [0, 1, 2, 3, 0, 2, 1, 3]
    result = O.official_metrics(units, labels, scores, edition="dcase2020")
    assert result["protocol"] == "dcase2020" and result["unit"] == "machine_id"
    assert result["per_id"]["02"]["auc"] == pytest.approx(0.75)
    assert result["mean_auc"] == pytest.approx((1.0 + 0.75) / 2)
    expected_pauc = np.mean([_pauc(labels[:4], scores[:4]), _pauc(labels[4:], scores[4:])])
    assert result["mean_pauc"] == pytest.approx(expected_pauc)
    assert result["official_score"] is None and result["official_figures"] == ["mean_auc", "mean_pauc"]
    assert result["per_id"]["00"] == {"auc": 1.0, "pauc": 1.0, "num_normal": 2, "num_anomaly": 2}


def test_dcase2021_per_domain_figures_on_that_domains_clips():
    units, domains, labels, scores = _tiny_set()
    result = O.official_metrics(units, labels, scores, domains, edition="dcase2021")
    figures = []
    for section in ("00", "01"):
        got = result["per_section"][section]
        for domain in ("source", "target"):
            selected = (units == section) & (domains == domain)
            auc, pauc = _auc(labels[selected], scores[selected]), _pauc(labels[selected], scores[selected])
            assert got[f"auc_{domain}"] == pytest.approx(auc) and got[f"pauc_{domain}"] == pytest.approx(pauc)
            assert (got[f"num_{domain}_normal"], got[f"num_{domain}_anomaly"]) == (6, 4)
            figures += [auc, pauc]
    assert result["official_score"] == pytest.approx(hmean(figures))
    assert result["mean_auc"] == pytest.approx(np.mean(figures[0::2]))
    assert result["mean_pauc"] == pytest.approx(np.mean(figures[1::2]))


@pytest.mark.parametrize("edition", ["dcase2022", "dcase2023", "dcase2024", "dcase2025", "dcase2026"])
def test_dcase2022_plus_auc_against_all_anomalies_and_pauc_on_all_clips(edition):
    units, domains, labels, scores = _tiny_set(1)
    result = O.official_metrics(units, labels, scores, domains, edition=edition)
    figures = []
    for section in ("00", "01"):
        in_section = units == section
        anomalies = in_section & (labels == 1)
        got = result["per_section"][section]
        for domain in ("source", "target"):
            selected = (in_section & (labels == 0) & (domains == domain)) | anomalies
            expected = _auc(labels[selected], scores[selected])
            assert got[f"auc_{domain}"] == pytest.approx(expected)
            figures.append(expected)
        pauc = _pauc(labels[in_section], scores[in_section])
        assert got["pauc"] == pytest.approx(pauc)
        figures.append(pauc)
        assert (got["num_source_normal"], got["num_target_normal"], got["num_anomaly"]) == (6, 6, 8)
    assert result["protocol"] == edition and result["unit"] == "section"
    assert result["official_score"] == pytest.approx(hmean(figures))
    assert result["hmean_auc_source"] == pytest.approx(hmean(figures[0::3]))
    assert result["hmean_auc_target"] == pytest.approx(hmean(figures[1::3]))
    # the 2021 protocol gives other figures on the same clips
    assert O.official_metrics(units, labels, scores, domains, edition="dcase2021")["official_score"] != \
        pytest.approx(result["official_score"])


def test_hand_computed_2023_section():
    # source normals 0.1, 0.2; target normals 0.6, 0.9; anomalies (source 0.5, target 0.8).
    # AUC_s: both anomalies beat both source normals -> 1. AUC_t: 0.5 beats none, 0.8 beats 0.6 -> 1/4.
    domains = ["source", "source", "target", "target", "source", "target"]
    labels = [0, 0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.9, 0.5, 0.8]
    result = O.official_metrics(["00"] * 6, labels, scores, domains, edition="dcase2023")
    section = result["per_section"]["00"]
    assert section["auc_source"] == 1.0 and section["auc_target"] == pytest.approx(0.25)
    assert section["pauc"] == pytest.approx(_pauc(labels, scores))
    assert result["official_score"] == pytest.approx(hmean([1.0, 0.25, section["pauc"]]))


def test_zero_figure_is_clipped_like_the_dcase_evaluator():
    # every anomaly below every normal: AUC 0 and pAUC 0 -> hmean of the eps-clipped figures, about 1e-16
    result = O.official_metrics(["00"] * 4, [0, 0, 1, 1], [3, 4, 1, 2], ["source", "target", "source", "target"],
                                edition="dcase2023")
    assert result["per_section"]["00"]["auc_source"] == 0.0
    assert result["official_score"] == pytest.approx(hmean([EPS, EPS, EPS]), rel=1e-9)
    assert 0.0 < result["official_score"] < 1e-15


def test_undefined_domain_is_none_left_out_with_a_note():
    # section 01 has no target normals: its auc_target is undefined and the score uses the five other figures
    units = ["00"] * 6 + ["01"] * 4
    domains = ["source", "source", "target", "target", "source", "target", "source", "source", "source", "target"]
    labels = [0, 0, 0, 0, 1, 1, 0, 0, 1, 1]
    scores = [0.1, 0.4, 0.2, 0.5, 0.45, 0.3, 0.2, 0.6, 0.7, 0.1]
    result = O.official_metrics(units, labels, scores, domains, edition="dcase2022")
    assert result["per_section"]["01"]["auc_target"] is None
    assert any("section 01: auc_target undefined (no target normal clips)" in note for note in result["notes"])
    defined = [v for s in result["per_section"].values() for k, v in s.items() if k in O.figure_keys("dcase2022")
               and v is not None]
    assert len(defined) == 5 and result["official_score"] == pytest.approx(hmean(defined))

    no_anomalies = O.official_metrics(["00"] * 3, [0, 0, 0], [1, 2, 3], ["source"] * 3, edition="dcase2021")
    assert no_anomalies["official_score"] is None and no_anomalies["per_section"]["00"]["auc_source"] is None
    assert O.official_metrics(["00"] * 2, [0, 0], [1, 2], edition="dcase2020")["mean_auc"] is None


def test_unlabelled_and_domainless_clips():
    result = O.official_metrics(["00"] * 6, [0, 1, -1, 0, 1, 0], [0.1, 0.9, 5.0, 0.2, 0.8, 0.3],
                                ["source", "source", "target", "target", None, None], edition="dcase2023")
    section = result["per_section"]["00"]
    # the domainless anomaly counts in both AUCs, the domainless normal only in pAUC
    assert section["num_anomaly"] == 2 and section["num_source_normal"] == 1 and section["num_target_normal"] == 1
    assert section["pauc"] == pytest.approx(_pauc([0, 1, 0, 1, 0], [0.1, 0.9, 0.2, 0.8, 0.3]))
    assert result["num_unlabelled"] == 1 and any("without a domain count in pauc only" in n for n in result["notes"])
    legacy = O.official_metrics(["00"] * 4, [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], [0, 0, 1, 1], edition="2021")
    assert legacy["per_section"]["00"]["auc_target"] == 1.0
    with pytest.raises(ValueError, match="domain"):
        O.official_metrics(["00"], [0], [0.1], ["elsewhere"], edition="dcase2023")
    with pytest.raises(ValueError, match="unknown DCASE edition"):
        O.official_metrics(["00"], [0], [0.1], edition="dcase2019")
    with pytest.raises(ValueError, match="scoring needs a DCASE edition, got 'auto'"):
        O.official_metrics(["00"], [0], [0.1], edition="auto")


def test_editions_are_the_data_layers():
    assert O.EDITIONS is dcase.EDITIONS and O.normalise_edition is dcase.normalise_edition
    assert O.figure_keys("2026") == O.figure_keys("dcase2022") and O.figure_keys(2021) == O.figure_keys("dcase2021")


def test_summary_across_types_flattens_sections_for_2021_plus():
    per_type, figures = {}, []
    for seed, machine_type in enumerate(("fan", "valve")):
        units, domains, labels, scores = _tiny_set(seed)
        per_type[machine_type] = O.official_metrics(units, labels, scores, domains, edition="dcase2023")
        for section in per_type[machine_type]["per_section"].values():
            figures += [section["auc_source"], section["auc_target"], section["pauc"]]
    summary = O.summary_across_types(per_type, "dcase2023")
    assert summary["official_score"] == pytest.approx(hmean(figures))
    assert summary["per_type"]["fan"]["official_score"] == per_type["fan"]["official_score"]
    assert summary["mean_auc"] == pytest.approx(np.mean([f for i, f in enumerate(figures) if i % 3 != 2]))
    with pytest.raises(ValueError, match="protocol"):
        O.summary_across_types(per_type, "dcase2021")


def test_summary_across_types_2020_is_the_mean_of_type_means():
    fan = O.official_metrics(["00"] * 4 + ["02"] * 4, [0, 0, 1, 1] * 2, [0, 1, 2, 3, 0, 2, 1, 3], edition="dcase2020")
    pump = O.official_metrics(["01"] * 4, [0, 1, 0, 1], [0, 1, 2, 3], edition="dcase2020")
    summary = O.summary_across_types({"fan": fan, "pump": pump}, "dcase2020")
    assert fan["mean_auc"] == pytest.approx(0.875) and pump["mean_auc"] == pytest.approx(0.75)
    assert summary["mean_auc"] == pytest.approx((0.875 + 0.75) / 2)
    assert summary["official_score"] is None and summary["per_type"]["pump"]["mean_auc"] == pytest.approx(0.75)
