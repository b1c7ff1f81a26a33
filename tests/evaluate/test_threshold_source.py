"""Threshold provenance: a sentence for every policy, and a warning when the held-out set is too small."""

import numpy as np
import pytest
from scipy import stats

from asd_jax.evaluate.thresholds import MIN_HELDOUT, describe_threshold_source, required_heldout


def test_enough_clips_give_a_sentence_and_no_warning():
    assert describe_threshold_source(48, "normal_quantile", 0.9) == (
        "0.9 quantile of 48 held-out normal training clips", None)
    sentence, warning = describe_threshold_source(MIN_HELDOUT, "gamma_fit", 0.9)
    assert sentence == "0.9 quantile of a gamma distribution fitted to the scores of 20 held-out normal training clips"
    assert warning is None


def test_one_clip_warns_that_the_threshold_is_its_score():
    sentence, warning = describe_threshold_source(1, "normal_quantile", 0.9)
    assert sentence == "0.9 quantile of 1 held-out normal training clip"
    assert "only 1 held-out normal training clip" in warning and "that one clip's score" in warning
    assert "unreliable" in warning and "--config.val_fraction" in warning and "more training clips" in warning


@pytest.mark.parametrize("policy", ["normal_quantile", "gamma_fit"])
def test_warning_below_the_minimum_only(policy):
    assert describe_threshold_source(MIN_HELDOUT - 1, policy, 0.9)[1] is not None
    assert describe_threshold_source(MIN_HELDOUT, policy, 0.9)[1] is None
    assert describe_threshold_source(9, policy, 0.5, minimum=10)[1] is not None
    assert describe_threshold_source(10, policy, 0.5, minimum=10)[1] is None
    # a lower minimum does not excuse a 0.9 quantile resting on a single clip above it
    assert "fewer than 20" in describe_threshold_source(10, policy, 0.9, minimum=10)[1]


def test_quantile_warning_counts_the_clips_above_it():
    warning = describe_threshold_source(5, "normal_quantile", 0.9)[1]
    assert "steps of 1/5" in warning and "about 1 clip lies above it" in warning
    scores = np.arange(5.0)
    assert (scores > np.quantile(scores, 0.9)).sum() == 1


def test_high_quantiles_need_more_clips():
    assert required_heldout(0.9) == 20 and required_heldout(0.5) == 20
    assert required_heldout(0.99) == 200 and required_heldout(0.95) == 40
    assert required_heldout(1.0) == required_heldout(None) == 20
    sentence, warning = describe_threshold_source(50, "normal_quantile", 0.99)
    assert sentence == "0.99 quantile of 50 held-out normal training clips" and "fewer than 200" in warning


def test_default_quantile_when_none():
    sentence = describe_threshold_source(48, "normal_quantile", None)[0]
    assert sentence == "0.9 quantile of 48 held-out normal training clips"


def test_no_clips_cannot_set_a_threshold():
    warning = describe_threshold_source(0, "normal_quantile", 0.9)[1]
    assert "no held-out normal training clips" in warning and "cannot set a threshold" in warning


@pytest.mark.parametrize("num_heldout", [0, 1, 100])
def test_fixed_needs_no_clips_and_oracle_says_it_is_test_tuned(num_heldout):
    sentence, warning = describe_threshold_source(num_heldout, "fixed", None)
    assert "fixed" in sentence and warning is None
    sentence, warning = describe_threshold_source(num_heldout, "oracle_f1", None)
    assert "test labels" in sentence and "test-tuned" in sentence and warning is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown threshold policy"):
        describe_threshold_source(10, "median", 0.5)
    with pytest.raises(ValueError, match="num_heldout"):
        describe_threshold_source(-1, "normal_quantile", 0.9)


def test_documented_false_alarm_spread_at_the_minimum():
    exceedance = stats.beta(3, 18)  # of the 18th of 20 order statistics, where the 0.9 quantile of 20 sits
    assert exceedance.mean() == pytest.approx(0.14, abs=0.005) and exceedance.std() == pytest.approx(0.07, abs=0.005)
