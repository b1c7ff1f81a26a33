"""Say how a decision threshold was obtained, and warn when it rests on too few held-out clips.

With 12 training clips and ``val_fraction`` 0.1 the held-out set is one clip, and a "0.9 quantile" threshold is
simply that clip's score. Nothing fails, so without a warning nobody notices.
"""

from __future__ import annotations

import math

from asd_jax.evaluate.thresholds import DEFAULT_QUANTILE, POLICIES

MIN_HELDOUT = 20
"""Fewest held-out normal clips for a trustworthy quantile threshold.

An empirical q-quantile of n scores is resolved in steps of 1/n and rests on the clips above it. At n = 20 and
q = 0.9 that is steps of 5% and 2 clips above the threshold; the fraction of new normal clips above it (the false-alarm
rate) then has a mean of about 14% and a standard deviation of 7% (the exceedance of the 18th of 20 order statistics
follows Beta(3, 18)). With one clip the threshold is that clip's score and the false-alarm rate is uniform on
[0, 1]: 50% +- 29%. Fewer than 20 clips leave the threshold resting on the top one or two scores.
"""

_MIN_TAIL_CLIPS = 2  # clips above the quantile for it to be more than the single highest score


def required_heldout(quantile: float | None, minimum: int = MIN_HELDOUT) -> int:
    """Held-out clips needed: ``minimum``, or more for a high quantile so that at least two clips lie above it
    (e.g. 200 for a 0.99 quantile). A quantile of 0 or 1 (the min or max score) only needs ``minimum``."""
    if quantile is None or not 0.0 < quantile < 1.0:
        return minimum
    return max(minimum, math.ceil(_MIN_TAIL_CLIPS / (1.0 - quantile) - 1e-9))


def _clips(count: int) -> str:
    return f"{count} held-out normal training clip{'' if count == 1 else 's'}"


def describe_threshold_source(num_heldout: int, policy: str, quantile: float | None,
                              minimum: int = MIN_HELDOUT) -> tuple[str, str | None]:
    """(how the threshold was obtained, a warning or None).

    ``normal_quantile`` and ``gamma_fit`` warn when ``num_heldout`` is below :func:`required_heldout` (``minimum``,
    see :data:`MIN_HELDOUT`, raised for high quantiles); ``fixed`` uses no held-out clips and never warns;
    ``oracle_f1`` is tuned on the test labels, which the sentence says (it needs no held-out clips either).
    ``quantile`` None means the policies' default (0.9).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown threshold policy '{policy}'; choose one of {', '.join(POLICIES)}")
    if num_heldout < 0:
        raise ValueError(f"num_heldout must be >= 0; got {num_heldout}")
    if policy == "fixed":
        return "fixed value from the config (no held-out clips used)", None
    if policy == "oracle_f1":
        return ("tuned on the test labels to maximise F1 (oracle_f1: test-tuned, so its F1 is optimistic and not "
                "a deployable threshold)"), None

    quantile = DEFAULT_QUANTILE if quantile is None else float(quantile)
    if policy == "normal_quantile":
        sentence = f"{quantile:g} quantile of {_clips(num_heldout)}"
    else:
        sentence = f"{quantile:g} quantile of a gamma distribution fitted to the scores of {_clips(num_heldout)}"
    needed = required_heldout(quantile, minimum)
    if num_heldout >= needed:
        return sentence, None
    fix = "use more training clips or a larger --config.val_fraction"
    if num_heldout == 0:
        return sentence, f"no held-out normal training clips: policy '{policy}' cannot set a threshold; {fix}"
    if num_heldout == 1:
        detail = "it is that one clip's score" if policy == "normal_quantile" else \
            "a gamma fit to one score is arbitrary"
    elif policy == "gamma_fit":
        detail = f"the tail of a gamma fit to {num_heldout} scores is poorly determined"
    else:
        above = num_heldout - 1 - math.floor(quantile * (num_heldout - 1) + 1e-9)
        detail = (f"the {quantile:g} quantile is resolved in steps of 1/{num_heldout} and about {above} "
                  f"clip{' lies' if above == 1 else 's lie'} above it")
    return sentence, (f"threshold from only {_clips(num_heldout)} (fewer than {needed}): {detail}, so the false-alarm "
                      f"rate it gives on new normal clips is unreliable; {fix} to hold out at least {needed}")
