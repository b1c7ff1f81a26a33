"""The official DCASE Task 2 figures and scores of every edition (2020-2026), from per-clip arrays.

Pure numpy/scipy/sklearn. AUC is ``roc_auc_score(y, s)``, pAUC ``roc_auc_score(y, s, max_fpr=0.1)`` (sklearn's
McClish-standardised partial AUC), as in the official evaluators (y-kawagu/dcase2020_task2_evaluator,
y-kawagu/dcase2021_task2_evaluator, nttcslab/dcase2023_task2_evaluator, nttcslab/dcase2024_task2_evaluator; the
2025 and 2026 tasks keep the 2022-2024 protocol). Scores: higher is more anomalous. Labels 0 normal, 1 anomaly, -1
unknown (left out, and counted). Editions are named as :func:`asd_jax.data.dcase.normalise_edition` reads them.

======== ============ ==================================================== ===========================================
edition  unit         figures per unit                                     official score
======== ============ ==================================================== ===========================================
2020     machine id   AUC, pAUC on the id's clips                          none: mean AUC and mean pAUC over ids
2021     section      AUC and pAUC per domain, each on that domain's       hmean of AUC_s, AUC_t, pAUC_s, pAUC_t over
                      normal and anomalous clips                           all sections (and machine types)
2022-26  section      AUC_s: source normals vs all anomalies of the        hmean of AUC_s, AUC_t, pAUC over all
                      section; AUC_t: target normals vs all anomalies;     sections (and machine types)
                      pAUC: all clips of the section
======== ============ ==================================================== ===========================================

Harmonic means are ``scipy.stats.hmean`` of the figures clipped below at ``sys.float_info.epsilon``, exactly as the
evaluators do: a figure of 0 therefore gives a score of about 1e-16 (effectively 0) instead of an error.

A figure that the clips cannot define (a domain without normal clips, a section without anomalies) is None, left
out of every mean and named in ``notes``; the official evaluators would stop with an error instead. Clips of unknown
domain (None) count wherever the domain does not matter (2022+: as anomalies, and in pAUC), else they are left out
and counted in ``notes``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from asd_jax.data.dcase import EDITIONS, normalise_edition
from asd_jax.evaluate.metrics import (
    ANOMALY,
    DEFAULT_MAX_FPR,
    NORMAL,
    UNKNOWN,
    _as_labels,
    _as_scores,
    undefined_reason,
)

EPSILON = sys.float_info.epsilon
_FIGURES = {"dcase2021": ("auc_source", "auc_target", "pauc_source", "pauc_target"),
            "dcase2022": ("auc_source", "auc_target", "pauc")}


def _protocol(edition: str | int | None) -> str:
    """The edition whose protocol scores ("2023" -> "dcase2023"); ValueError for an unknown one or for none, since
    'auto' names a way to find data, not a protocol."""
    protocol = normalise_edition(edition)
    if protocol is None:
        raise ValueError(f"scoring needs a DCASE edition, got {edition!r}; pass one of {', '.join(EDITIONS)} (the "
                         "edition find_clips detected is in ClipList.edition)")
    return protocol


def unit_word(edition: str | None) -> str:
    """What an edition's unit is called: "machine id" (DCASE 2020, raw MIMII) or "section" (2021+)."""
    return "machine id" if (edition or "dcase2020") == "dcase2020" else "section"


def figure_keys(edition: str) -> tuple[str, ...]:
    """The per-unit figures whose harmonic mean is the official score (2020: its two per-id figures)."""
    edition = _protocol(edition)
    if edition == "dcase2020":
        return ("auc", "pauc")
    return _FIGURES["dcase2021" if edition == "dcase2021" else "dcase2022"]


def official_hmean(values: Sequence[float]) -> float | None:
    """DCASE's harmonic mean: ``hmean(max(values, epsilon))``; None for no values."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return float(hmean(np.maximum(values, EPSILON))) if values.size else None


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _as_domains(domains, num_clips: int) -> np.ndarray:
    """"source"/"target"/None per clip; 0/1 (DCASE's domain files) are source/target; None, "" and NaN unknown."""
    if domains is None:
        return np.full(num_clips, None, dtype=object)
    result = []
    for value in list(domains):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            result.append(None)
            continue
        text = str(value).strip().lower()
        mapped = {"source": "source", "target": "target", "0": "source", "1": "target", "": None,
                  "none": None, "unknown": None}.get(text, "bad")
        if mapped == "bad":
            raise ValueError(f"domain {value!r} is not source/target (or 0/1, or None for unknown)")
        result.append(mapped)
    if len(result) != num_clips:
        raise ValueError(f"got {len(result)} domains for {num_clips} labels")
    return np.asarray(result, dtype=object)


def _unknown(domains: np.ndarray) -> np.ndarray:
    return np.fromiter((d is None for d in domains), dtype=bool, count=len(domains))


def _auc_pauc(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> tuple[float | None, float | None, str | None]:
    """(AUC, pAUC, None) on labelled clips, or (None, None, why) when one class is missing."""
    reason = undefined_reason(labels)
    if reason is not None:
        return None, None, reason
    return float(roc_auc_score(labels, scores)), float(roc_auc_score(labels, scores, max_fpr=max_fpr)), None


def official_metrics(
    units: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    domains: Sequence[str | int | None] | None = None,
    edition: str = "dcase2023",
    max_fpr: float = DEFAULT_MAX_FPR,
) -> dict:
    """The per-unit figures and the official score of one machine type under ``edition``'s protocol.

    ``units``: the machine id (2020) or section (2021+) of each clip; ``domains``: "source"/"target"/None per clip
    (needed for 2021+). Returns, for 2020::

        {"protocol": "dcase2020", "unit": "machine_id", "per_id": {id: {"auc", "pauc", "num_normal",
         "num_anomaly"}}, "mean_auc", "mean_pauc", "official_score": None, "official_figures": ["mean_auc",
         "mean_pauc"], "notes": [...], "num_clips", "num_unlabelled"}

    and for 2021+ ``"unit": "section"``, ``"per_section": {section: {...figures..., "num_..." counts}}`` (figures:
    :func:`figure_keys`), ``"official_score"`` (harmonic mean of every defined figure of every section),
    ``"official_figures": ["official_score"]``, ``"mean_auc"`` / ``"mean_pauc"`` (arithmetic means of the AUC and
    pAUC figures), ``"hmean_auc_source"``, ``"hmean_auc_target"``, ``"hmean_pauc"``, ``"notes"``, ``"num_clips"``,
    ``"num_unlabelled"``. Undefined figures are None (module docstring).
    """
    edition = _protocol(edition)
    labels = _as_labels(labels)
    scores = _as_scores(scores, labels.shape[0])
    units = np.asarray([str(u) for u in units], dtype=object)
    if units.shape[0] != labels.shape[0]:
        raise ValueError(f"got {units.shape[0]} units for {labels.shape[0]} labels")
    domains = _as_domains(domains, labels.shape[0])
    known = labels != UNKNOWN
    notes = []
    if (~known).any():
        notes.append(f"{int((~known).sum())} unlabelled clips left out")
    base = {"protocol": edition, "notes": notes, "num_clips": int(labels.shape[0]),
            "num_unlabelled": int((~known).sum())}
    if edition == "dcase2020":
        return {**base, **_dcase2020(units, labels, scores, known, max_fpr, notes)}
    per_section = {}
    for section in sorted(set(units.tolist())):
        in_section = (units == section) & known
        if edition == "dcase2021":
            per_section[section] = _dcase2021_section(labels, scores, domains, in_section, max_fpr, section, notes)
        else:
            per_section[section] = _dcase2022_section(labels, scores, domains, in_section, max_fpr, section, notes)
    return {**base, "unit": "section", "per_section": per_section,
            **_section_summary(per_section, edition), "official_figures": ["official_score"]}


def _dcase2020(units, labels, scores, known, max_fpr, notes) -> dict:
    per_id = {}
    for machine_id in sorted(set(units.tolist())):
        selected = (units == machine_id) & known
        auc, pauc, reason = _auc_pauc(labels[selected], scores[selected], max_fpr)
        if reason is not None:
            notes.append(f"id {machine_id}: AUC and pAUC undefined ({reason}); left out of the means")
        per_id[machine_id] = {"auc": auc, "pauc": pauc, "num_normal": int((labels[selected] == NORMAL).sum()),
                              "num_anomaly": int((labels[selected] == ANOMALY).sum())}
    if per_id and all(m["auc"] is None for m in per_id.values()):
        notes.append("no id has both normal and anomalous clips: no mean")
    notes.append("DCASE 2020 has no single official score: it reports mean AUC and mean pAUC over machine ids")
    return {"unit": "machine_id", "per_id": per_id, "mean_auc": _mean([m["auc"] for m in per_id.values()]),
            "mean_pauc": _mean([m["pauc"] for m in per_id.values()]), "official_score": None,
            "official_figures": ["mean_auc", "mean_pauc"]}


def _dcase2021_section(labels, scores, domains, in_section, max_fpr, section, notes) -> dict:
    """2021: AUC and pAUC per domain on that domain's normal and anomalous clips."""
    figures = {}
    for domain in ("source", "target"):
        selected = in_section & (domains == domain)
        auc, pauc, reason = _auc_pauc(labels[selected], scores[selected], max_fpr)
        if reason is not None:
            notes.append(f"section {section}: auc_{domain} and pauc_{domain} undefined ({reason} in the {domain} "
                         "domain); left out of the means")
        figures[f"auc_{domain}"], figures[f"pauc_{domain}"] = auc, pauc
        figures[f"num_{domain}_normal"] = int((labels[selected] == NORMAL).sum())
        figures[f"num_{domain}_anomaly"] = int((labels[selected] == ANOMALY).sum())
    no_domain = int((in_section & _unknown(domains)).sum())
    if no_domain:
        notes.append(f"section {section}: {no_domain} labelled clips without a domain left out")
    return figures


def _dcase2022_section(labels, scores, domains, in_section, max_fpr, section, notes) -> dict:
    """2022+: AUC per domain on that domain's normals and all anomalies of the section; pAUC on all its clips."""
    anomalies = in_section & (labels == ANOMALY)
    figures = {}
    for domain in ("source", "target"):
        selected = (in_section & (labels == NORMAL) & (domains == domain)) | anomalies
        auc, _, reason = _auc_pauc(labels[selected], scores[selected], max_fpr)
        if reason is not None:
            what = f"no {domain} normal clips" if reason.startswith("no normal") else reason
            notes.append(f"section {section}: auc_{domain} undefined ({what}); left out of the means")
        figures[f"auc_{domain}"] = auc
    _, pauc, reason = _auc_pauc(labels[in_section], scores[in_section], max_fpr)
    if reason is not None:
        notes.append(f"section {section}: pauc undefined ({reason}); left out of the means")
    figures["pauc"] = pauc
    normals = in_section & (labels == NORMAL)
    for domain in ("source", "target"):
        figures[f"num_{domain}_normal"] = int((normals & (domains == domain)).sum())
        figures[f"num_{domain}_anomaly"] = int((anomalies & (domains == domain)).sum())
    figures["num_anomaly"] = int(anomalies.sum())
    unknown_normals = int((normals & _unknown(domains)).sum())
    if unknown_normals:
        notes.append(f"section {section}: {unknown_normals} normal clips without a domain count in pauc only")
    return figures


def _section_summary(per_section: Mapping[str, Mapping], edition: str) -> dict:
    """Official score and means over the sections of ``per_section`` (one type, or many flattened)."""
    keys = figure_keys(edition)
    values = {key: [s[key] for s in per_section.values() if s.get(key) is not None] for key in keys}
    every = [v for key in keys for v in values[key]]
    aucs = values["auc_source"] + values["auc_target"]
    paucs = [v for key in keys if key.startswith("pauc") for v in values[key]]
    return {"official_score": official_hmean(every), "mean_auc": _mean(aucs), "mean_pauc": _mean(paucs),
            "hmean_auc_source": official_hmean(values["auc_source"]),
            "hmean_auc_target": official_hmean(values["auc_target"]), "hmean_pauc": official_hmean(paucs)}


def summary_across_types(per_type: Mapping[str, Mapping], edition: str) -> dict:
    """One figure set over several machine types, from their :func:`official_metrics` results.

    2020: per type its mean AUC and pAUC; overall ``mean_auc``/``mean_pauc`` are the arithmetic means over types
    of the per-type means (DCASE 2020 reported per type and ranked by averaging ranks over types, so this overall
    mean is a summary, not an official score; ``official_score`` is None). 2021+: the official score is the
    harmonic mean of every figure of every section of every type (as the evaluators compute it: all figures
    flattened, not a mean of per-type scores); ``mean_auc``/``mean_pauc`` are arithmetic means of the same figures.
    Returns ``{"protocol", "per_type": {type: {"official_score", "mean_auc", "mean_pauc"}}, "official_score",
    "mean_auc", "mean_pauc", ..., "notes"}``; types whose figures are all undefined are left out with a note.
    """
    edition = _protocol(edition)
    for machine_type, result in per_type.items():
        if result.get("protocol") != edition:
            raise ValueError(f"{machine_type}: result of protocol {result.get('protocol')!r}, not {edition}")
    notes = [f"{machine_type}: {note}" for machine_type, result in per_type.items() for note in result["notes"]]
    summary = {machine_type: {"official_score": r["official_score"], "mean_auc": r["mean_auc"],
                              "mean_pauc": r["mean_pauc"]} for machine_type, r in per_type.items()}
    for machine_type, figures in summary.items():
        if figures["mean_auc"] is None and figures["mean_pauc"] is None:
            notes.append(f"{machine_type}: no defined figure; left out of the summary")
    base = {"protocol": edition, "per_type": summary, "num_types": len(per_type), "notes": notes}
    if edition == "dcase2020":
        return {**base, "official_score": None, "official_figures": ["mean_auc", "mean_pauc"],
                "mean_auc": _mean([f["mean_auc"] for f in summary.values()]),
                "mean_pauc": _mean([f["mean_pauc"] for f in summary.values()])}
    flat = {(machine_type, section): figures for machine_type, result in per_type.items()
            for section, figures in result["per_section"].items()}
    return {**base, **_section_summary(flat, edition), "official_figures": ["official_score"]}
