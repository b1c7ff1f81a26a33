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
clips, and returns a :class:`ThresholdSet` that gives each clip its unit's threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from asd_jax.evaluate.metrics import ANOMALY, UNKNOWN, _as_labels

POLICIES = ("normal_quantile", "gamma_fit", "fixed", "oracle_f1")
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
