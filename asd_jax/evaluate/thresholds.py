"""Decision thresholds: a clip is called anomalous when its score is above the threshold.

Policies:

* ``normal_quantile`` (default): the ``quantile`` (0.9 by default) of the scores of held-out normal
  training clips, so about 10% of normal clips raise an alarm.
* ``gamma_fit``: fit a gamma distribution to those held-out normal scores and take its ``quantile``, as the
  DCASE baseline does. The fit keeps the location at 0 (the baseline lets it float, which is unstable on
  few clips). Gamma needs positive data, so when some score is <= 0 every score is first shifted by
  ``std - min`` (the smallest becomes one standard deviation above 0) and the shift is taken back off the
  quantile afterwards.
* ``fixed``: a value given by the caller.
* ``oracle_f1``: the threshold that maximises the anomaly-class F1 on the *test* labels. It peeks at the
  answers, so it is always flagged ``test_tuned`` and must be reported as such.

:func:`choose_unit_thresholds` applies a policy per unit (machine id or section, and domain) as well as over all
clips, and returns a :class:`ThresholdSet` that gives each clip its unit's threshold. :func:`run_thresholds` applies
a run's ``threshold`` settings, :func:`describe_thresholds` says where each threshold came from (and warns when one
rests on too few held-out clips: with 12 training clips and ``val_fraction`` 0.1 the held-out set is one clip, and
a "0.9 quantile" threshold is simply that clip's score), and :func:`member_classification` gives each member's F1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from asd_jax.evaluate.metrics import ANOMALY, UNKNOWN, _as_labels, classification_metrics

POLICIES = ("normal_quantile", "gamma_fit", "fixed", "oracle_f1")
NEEDS_HELDOUT = ("normal_quantile", "gamma_fit")  # the policies set on held-out normal scores
DEFAULT_POLICY = "normal_quantile"
DEFAULT_QUANTILE = 0.9


@dataclasses.dataclass
class Threshold:
    """A chosen threshold and how it was chosen; ``test_tuned`` marks one fitted on the test labels."""

    policy: str
    value: float
    test_tuned: bool
    quantile: float | None = None


def _normal_scores(policy: str, normal_scores: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if normal_scores is None:
        raise ValueError(f"policy '{policy}' needs the scores of held-out normal training clips (normal_scores)")
    normal_scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    if normal_scores.size == 0:
        raise ValueError(f"policy '{policy}' got no held-out normal scores (normal_scores is empty)")
    if not np.all(np.isfinite(normal_scores)):
        num_bad = int(np.sum(~np.isfinite(normal_scores)))
        raise ValueError(f"policy '{policy}': {num_bad} normal scores are NaN or infinite")
    return normal_scores


def _check_quantile(policy: str, quantile: float) -> float:
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"policy '{policy}' needs a quantile in [0, 1]; got {quantile}")
    return float(quantile)


def gamma_quantile(normal_scores: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of a gamma distribution (location 0) fitted to the scores, shifted if not all positive."""
    spread = float(np.std(normal_scores))
    if spread == 0.0:
        return float(normal_scores[0])
    minimum = float(np.min(normal_scores))
    shift = spread - minimum if minimum <= 0.0 else 0.0
    shape, _, scale = stats.gamma.fit(normal_scores + shift, floc=0.0)
    return float(stats.gamma.ppf(quantile, shape, loc=0.0, scale=scale)) - shift


def oracle_f1_threshold(test_labels: Sequence[int] | np.ndarray, test_scores: Sequence[float] | np.ndarray) -> float:
    """The threshold maximising anomaly-class F1 on labelled test clips (ties: the highest threshold).

    Only cuts between distinct scores matter; the value returned is the highest score still called normal,
    or just below the lowest score when calling every clip anomalous is best.
    """
    labels = _as_labels(test_labels)
    scores = np.asarray(test_scores, dtype=np.float64).ravel()
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(f"got {scores.shape[0]} test scores for {labels.shape[0]} test labels")
    known = labels != UNKNOWN
    labels, scores = labels[known], scores[known]
    if not np.all(np.isfinite(scores)):
        raise ValueError("policy 'oracle_f1': some test scores are NaN or infinite")
    num_anomaly = int(np.sum(labels == ANOMALY))
    if num_anomaly == 0:
        raise ValueError("policy 'oracle_f1' needs at least one labelled anomalous test clip")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_is_anomaly = scores[order], labels[order] == ANOMALY
    # Cut after position k (k = 1..N) in descending order: the top k clips are called anomalous. Only
    # cuts at the end of a run of equal scores are realisable with "score > threshold".
    true_positives = np.cumsum(sorted_is_anomaly)
    called = np.arange(1, scores.size + 1)
    realisable = np.append(sorted_scores[1:] < sorted_scores[:-1], True)
    f1 = 2 * true_positives / (called + num_anomaly)
    f1 = np.where(realisable, f1, -1.0)
    best = int(np.flatnonzero(f1 == f1.max())[0])
    if best == scores.size - 1:
        return float(np.nextafter(sorted_scores[-1], -math.inf))
    return float(sorted_scores[best + 1])


def choose_threshold(
    policy: str = DEFAULT_POLICY,
    *,
    normal_scores: Sequence[float] | np.ndarray | None = None,
    quantile: float = DEFAULT_QUANTILE,
    value: float | None = None,
    test_labels: Sequence[int] | np.ndarray | None = None,
    test_scores: Sequence[float] | np.ndarray | None = None,
) -> Threshold:
    """Pick a threshold by ``policy`` (see the module docstring); raises ValueError naming any missing input."""
    if policy == "normal_quantile":
        scores = _normal_scores(policy, normal_scores)
        quantile = _check_quantile(policy, quantile)
        return Threshold(policy, float(np.quantile(scores, quantile)), test_tuned=False, quantile=quantile)
    if policy == "gamma_fit":
        scores = _normal_scores(policy, normal_scores)
        quantile = _check_quantile(policy, quantile)
        return Threshold(policy, gamma_quantile(scores, quantile), test_tuned=False, quantile=quantile)
    if policy == "fixed":
        if value is None:
            raise ValueError("policy 'fixed' needs a threshold value (value=...)")
        if not math.isfinite(value):
            raise ValueError(f"policy 'fixed' needs a finite threshold value; got {value}")
        return Threshold(policy, float(value), test_tuned=False)
    if policy == "oracle_f1":
        if test_labels is None or test_scores is None:
            raise ValueError("policy 'oracle_f1' needs the test labels and test scores (test_labels=, test_scores=)")
        return Threshold(policy, oracle_f1_threshold(test_labels, test_scores), test_tuned=True)
    raise ValueError(f"unknown threshold policy '{policy}'; choose one of {', '.join(POLICIES)}")


# ----------------------------------------------------------------------------------------------------------------------
# One threshold per unit (machine id / section), and per (unit, domain).


@dataclasses.dataclass
class ThresholdSet:
    """The global threshold and, when ``per_unit``, one per unit (machine id or section) and per (unit, domain).

    Scores of different machines sit on different scales, so one threshold over all of them raises most alarms on
    the noisiest machine; the DCASE baselines set one per unit. ``units`` maps a unit to ``{"value",
    "num_heldout", "from": "unit" | "global", "domains": {domain: {"value", "num_heldout"}}}``: ``from`` is
    "global" when the unit's own clips could not set one (no held-out normals), and ``domains`` holds only the
    domains whose own clips set one. A clip is judged by its domain's threshold, else its unit's, else the global
    one (:meth:`lookup`).
    """

    overall: Threshold
    per_unit: bool = False
    units: dict[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def policy(self) -> str:
        return self.overall.policy

    @property
    def value(self) -> float:
        return self.overall.value

    @property
    def test_tuned(self) -> bool:
        return self.overall.test_tuned

    @property
    def quantile(self) -> float | None:
        return self.overall.quantile

    def lookup(self, unit: str | None, domain: str | None = None) -> tuple[float, str | None, str | None]:
        """(threshold, unit, domain) for a clip: the unit and domain whose threshold it gets (None: global)."""
        entry = self.units.get(str(unit)) if self.per_unit and unit is not None else None
        if entry is None or entry.get("from") == "global":
            return self.overall.value, None, None
        if domain is not None and domain in entry.get("domains", {}):
            return float(entry["domains"][domain]["value"]), str(unit), domain
        return float(entry["value"]), str(unit), None

    def clip_values(self, units: Sequence[str], domains: Sequence[str | None] | None = None) -> np.ndarray:
        """The threshold of each clip (see :meth:`lookup`)."""
        domains = [None] * len(units) if domains is None else list(domains)
        return np.array([self.lookup(u, d)[0] for u, d in zip(units, domains)], dtype=np.float64)

    def to_json(self) -> dict:
        return {"policy": self.policy, "value": float(self.value), "test_tuned": bool(self.test_tuned),
                "quantile": self.quantile, "per_unit": bool(self.per_unit), "units": self.units}

    @classmethod
    def from_json(cls, data: dict) -> ThresholdSet:
        """From ``threshold.json`` (one written before per-unit thresholds existed gives a global-only set)."""
        overall = Threshold(data["policy"], float(data["value"]), bool(data["test_tuned"]), data.get("quantile"))
        return cls(overall, bool(data.get("per_unit", False)), dict(data.get("units") or {}))


def _subset(values, mask):
    return None if values is None else np.asarray(values)[mask]


def choose_unit_thresholds(
    policy: str = DEFAULT_POLICY,
    *,
    normal_scores: Sequence[float] | np.ndarray | None,
    normal_units: Sequence[str],
    normal_domains: Sequence[str | None] | None = None,
    quantile: float = DEFAULT_QUANTILE,
    value: float | None = None,
    test_labels: Sequence[int] | np.ndarray | None = None,
    test_scores: Sequence[float] | np.ndarray | None = None,
    test_units: Sequence[str] = (),
    test_domains: Sequence[str | None] | None = None,
    per_unit: bool = True,
) -> ThresholdSet:
    """The global threshold over every clip (as :func:`choose_threshold`) and, with ``per_unit``, one per unit
    from that unit's clips only: its held-out normals (``normal_*``), or its test clips for ``oracle_f1``.

    Where clips carry a domain, a (unit, domain) whose own clips can set a threshold gets its own; the others use
    the unit's. A unit whose clips cannot set one (no held-out normals) uses the global threshold. ``fixed`` is
    one value for every clip, so it is never per unit. Raises ValueError as :func:`choose_threshold` for the
    global threshold.
    """
    overall = choose_threshold(policy, normal_scores=normal_scores, quantile=quantile, value=value,
                               test_labels=test_labels, test_scores=test_scores)
    if not per_unit or policy == "fixed":
        return ThresholdSet(overall)
    normal_units = np.asarray([str(u) for u in normal_units], dtype=object)
    test_units = np.asarray([str(u) for u in test_units], dtype=object)
    normal_domains = np.asarray(list(normal_domains) if normal_domains is not None else [None] * len(normal_units),
                                dtype=object)
    test_domains = np.asarray(list(test_domains) if test_domains is not None else [None] * len(test_units),
                              dtype=object)
    has_domains = any(d is not None for d in (*normal_domains, *test_domains))
    normal_scores = None if normal_scores is None else np.asarray(normal_scores, dtype=np.float64).ravel()

    def fit(normal_mask, test_mask) -> Threshold | None:
        try:
            return choose_threshold(policy, normal_scores=_subset(normal_scores, normal_mask), quantile=quantile,
                                    value=value, test_labels=_subset(test_labels, test_mask),
                                    test_scores=_subset(test_scores, test_mask))
        except ValueError:  # the unit's clips cannot set one (e.g. no held-out normals): the fallback is used
            return None

    units = {}
    for unit in sorted({*normal_units.tolist(), *test_units.tolist()}):
        in_normal, in_test = normal_units == unit, test_units == unit
        own = fit(in_normal, in_test)
        entry = {"value": float(own.value if own is not None else overall.value),
                 "num_heldout": int(in_normal.sum()), "from": "unit" if own is not None else "global",
                 "domains": {}}
        if has_domains and own is not None:
            for domain in ("source", "target"):
                normal_mask, test_mask = in_normal & (normal_domains == domain), in_test & (test_domains == domain)
                if policy != "oracle_f1" and not normal_mask.any():
                    continue
                domain_threshold = fit(normal_mask, test_mask)
                if domain_threshold is not None:
                    entry["domains"][domain] = {"value": float(domain_threshold.value),
                                                "num_heldout": int(normal_mask.sum())}
        units[unit] = entry
    return ThresholdSet(overall, True, units)


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


def run_thresholds(settings, normal_scores: np.ndarray | None, normal_clips: Sequence, labels: np.ndarray,
                   test_scores: np.ndarray, test_clips: Sequence) -> ThresholdSet:
    """A run's ``threshold`` settings (policy, quantile, value, per_unit) on these scores: the global threshold and,
    with ``per_unit``, one per machine id / section (and domain) from its own held-out normals
    (:func:`choose_unit_thresholds`). Clips are anything with ``machine_id`` and ``domain``."""
    return choose_unit_thresholds(
        settings.policy, normal_scores=normal_scores, normal_units=[c.machine_id for c in normal_clips],
        normal_domains=[c.domain for c in normal_clips], quantile=settings.quantile, value=settings.value,
        test_labels=labels, test_scores=test_scores, test_units=[c.machine_id for c in test_clips],
        test_domains=[c.domain for c in test_clips], per_unit=settings.get("per_unit", True))


def describe_thresholds(thresholds: ThresholdSet, settings, num_heldout: int, unit: str) -> tuple[str, list[str]]:
    """(where the thresholds come from, warnings): each unit's (and domain's) source is written into its entry, and
    a unit or domain resting on too few held-out clips is warned about by name (:func:`describe_threshold_source`).
    The global threshold's own warning is kept only where some clips are judged by it."""
    policy, quantile = settings.policy, settings.quantile
    overall, overall_warning = describe_threshold_source(num_heldout, policy, quantile)
    if not thresholds.per_unit:
        return overall, [overall_warning] if overall_warning else []
    by_warning, parts = {}, []  # warning -> the units (and domains) it is about, so each is said once
    for name, entry in thresholds.units.items():
        if entry["from"] == "global":
            entry["source"] = f"global threshold (no held-out normal clips of {unit} {name})"
            by_warning.setdefault("no held-out normal clips, so their clips are judged by the global threshold",
                                  []).append(name)
            parts.append(f"{name}: global")
            continue
        entry["source"], warning = describe_threshold_source(entry["num_heldout"], policy, quantile)
        if warning and set(entry["domains"]) != {"source", "target"}:  # else no clip is judged by it
            by_warning.setdefault(warning, []).append(name)
        for domain, figures in entry["domains"].items():
            figures["source"], warning = describe_threshold_source(figures["num_heldout"], policy, quantile)
            if warning:
                by_warning.setdefault(warning, []).append(f"{name} ({domain} domain)")
        counts = ", ".join(f"{d} {f['num_heldout']}" for d, f in entry["domains"].items())
        parts.append(f"{name}: {entry['num_heldout']}" + (f" ({counts})" if counts else ""))
    warnings = [f"{unit}{'s' if len(names) > 1 else ''} {', '.join(names)}: {warning}"
                for warning, names in by_warning.items()]
    uses_global = any(entry["from"] == "global" for entry in thresholds.units.values())
    if overall_warning and uses_global:
        warnings.insert(0, f"global threshold: {overall_warning}")
    domains = " and domain" if any(entry["domains"] for entry in thresholds.units.values()) else ""
    basis = "test labels" if policy == "oracle_f1" else "held-out normal training clips"
    text = (f"{policy} per {unit}{domains}, each on its own {basis} ({'; '.join(parts)}); global (for clips of no "
            f"known {unit}): {overall}")
    return text, warnings


def member_classification(settings, labels: np.ndarray, test_scores: np.ndarray, validation_scores: np.ndarray,
                          validation_clips: Sequence, test_clips: Sequence) -> list[dict]:
    """Per member, on its own scores: the anomaly-class F1 at the run's threshold policy (set on the member's own
    held-out normal scores, no test labels; per unit as the run's) and at the F1-best threshold on the test labels
    (TEST-TUNED)."""
    figures = []
    units, domains = [c.machine_id for c in test_clips], [c.domain for c in test_clips]
    for index, scores in enumerate(test_scores):
        entry = {"f1_anomaly": None}
        try:
            honest = run_thresholds(settings, validation_scores[index] if validation_scores.size else None,
                                    validation_clips, labels, scores, test_clips)
            if not honest.test_tuned:
                margin = scores - honest.clip_values(units, domains) if honest.per_unit else scores
                entry["f1_anomaly"] = classification_metrics(labels, margin, 0.0 if honest.per_unit
                                                             else honest.value)["f1_anomaly"]
        except ValueError:  # e.g. no held-out clips: no honest threshold
            pass
        if np.all(np.isfinite(scores)) and np.any(labels == 1) and np.any(labels == 0):  # F1 needs both classes
            tuned = oracle_f1_threshold(labels, scores)
            entry["f1_anomaly_test_tuned"] = classification_metrics(labels, scores, tuned)["f1_anomaly"]
        else:
            entry["f1_anomaly_test_tuned"] = None
        figures.append(entry)
    return figures
