"""The results dict of a run: built once, here, from its scores; every file and table is written from it.

:func:`run_results` is what a run calls: thresholds (:mod:`asd_jax.evaluate.thresholds`), per-unit metrics, the
edition's official figures, each member's figures and the per-setting means. :func:`evaluate_run` is its core:
test scores -> per-id AUC/pAUC per member and their mean/std, the ensemble and the threshold table.

With E ensemble members (one per seed) the headline ``per_id``/``mean`` figures are the mean over members
of each member's metrics, ``std`` is their spread, and ``ensemble`` scores the mean of the members' scores,
which is also what the threshold table is computed on (that is the score a deployed detector would use).

Every run is also scored by its DCASE edition's own protocol (:mod:`asd_jax.evaluate.official`) on the
ensemble-mean score: ``protocol``, ``per_section`` (2021+: source/target AUC and pAUC per section; None for 2020),
``official_score`` (2021+: the harmonic mean; None for 2020, which has none) and ``official`` (the means and notes);
each member's own figures are in its ``members`` entry under ``official``. For 2021+ the unit of ``per_id`` is the
section (all domains pooled), which is what :attr:`asd_jax.data.dcase.Clip.machine_id` holds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np

from asd_jax.evaluate import official
from asd_jax.evaluate.metrics import (
    DEFAULT_MAX_FPR,
    UNKNOWN,
    classification_metrics,
    per_id_metrics,
    pooled_auc,
    undefined_reason,
)
from asd_jax.evaluate.thresholds import (
    NEEDS_HELDOUT,
    Threshold,
    ThresholdSet,
    describe_thresholds,
    member_classification,
    run_thresholds,
)
from asd_jax.rundir import RunDir

log = logging.getLogger(__name__)

CONTRACT_KEYS = (
    "method", "machine_type", "data_dir", "num_seeds", "per_id", "mean", "std", "ensemble", "pooled",
    "members", "members_diverged", "threshold", "test_tuned", "skipped_files", "notes",
    "protocol", "per_section", "official_score", "official",
)


_CLASSIFICATION_KEYS = (
    "accuracy", "precision_normal", "recall_normal", "f1_normal",
    "precision_anomaly", "recall_anomaly", "f1_anomaly",
)


def member_matrix(member_scores: np.ndarray | Sequence, num_clips: int) -> np.ndarray:
    matrix = np.asarray(member_scores, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] != num_clips:
        raise ValueError(f"member_scores must have shape [E >= 1, {num_clips}]; got {np.shape(member_scores)}")
    return matrix


def member_names_of(member_names: Sequence[str] | None, num_members: int) -> list[str]:
    names = [f"seed{i}" for i in range(num_members)] if member_names is None else [str(n) for n in member_names]
    if len(names) != num_members:
        raise ValueError(f"got {len(names)} member names for {num_members} ensemble members")
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be distinct; got {names}")
    return names


def check_clips(files: Sequence[str], machine_ids: Sequence[str], labels: np.ndarray | Sequence[int]) -> int:
    num_clips = len(files)
    if num_clips == 0:
        raise ValueError("no test clips to evaluate")
    if len(machine_ids) != num_clips or len(labels) != num_clips:
        raise ValueError(
            f"files, machine_ids and labels differ in length: {num_clips}, {len(machine_ids)}, {len(labels)}"
        )
    return num_clips


def _skipped(skipped_files: Sequence[dict] | Sequence[str]) -> list[dict]:
    return [dict(entry) if isinstance(entry, dict) else {"file": str(entry)} for entry in skipped_files]


def evaluate_run(
    *,
    method: str,
    machine_type: str,
    data_dir: str,
    files: list[str],
    machine_ids: list[str],
    labels: np.ndarray,
    member_scores: np.ndarray,
    threshold: Threshold | ThresholdSet | None,
    skipped_files: list[dict] | list[str] = (),
    extra: dict | None = None,
    member_names: list[str] | None = None,
    excluded: Sequence[str] = (),
    domains: Sequence[str | None] | None = None,
    edition: str = "dcase2020",
) -> dict:
    """Score one run: per-id AUC/pAUC per member and their mean/std, the ensemble, the official figures of
    ``edition`` and the threshold table.

    ``machine_ids`` are the units (2021+: sections) and ``domains`` each clip's "source"/"target"/None. With a
    :class:`~asd_jax.evaluate.thresholds.ThresholdSet` of per-unit thresholds each clip of the classification
    table is judged by its unit's (and domain's) threshold; a plain :class:`Threshold` is one for all clips; None
    (no threshold could be set) leaves the classification figures None.

    Members named in ``excluded`` (diverged) keep their own entry in ``members`` (marked ``"diverged": true``) but
    are left out of the headline ``per_id``/``mean``/``std``, the ensemble score and the pooled AUC.

    ``member_scores`` is ``[E, N]`` (one row per ensemble member; a 1-D array counts as E = 1). Unknown
    labels (-1) are left out of every metric. ``pooled`` (one AUC over all ids' clips) is, like ``mean``, the
    mean over members; ``members`` holds each member's own ``per_id`` and ``mean``. ``extra`` keys are added
    at top level and may not reuse a contract key. NaN stays NaN here; :func:`write_run_outputs` writes it as JSON null.
    """
    num_clips = check_clips(files, machine_ids, labels)
    labels = np.asarray(labels).astype(int)
    matrix = member_matrix(member_scores, num_clips)
    names = member_names_of(member_names, matrix.shape[0])
    for name, row in zip(names, matrix):
        if name not in excluded and not np.all(np.isfinite(row)):
            raise ValueError(f"member '{name}' has {int(np.sum(~np.isfinite(row)))} NaN or infinite scores")
    extra = dict(extra or {})
    clashes = sorted(set(extra) & set(CONTRACT_KEYS))
    if clashes:
        raise ValueError(f"extra keys clash with the results contract: {clashes}")

    unknown = sorted(set(excluded) - set(names))
    if unknown:
        raise ValueError(f"excluded members {unknown} are not among {names}")
    all_members = [
        {"name": name, **(per_id_metrics(machine_ids, labels, row, DEFAULT_MAX_FPR) if np.all(np.isfinite(row))
                          else {"per_id": None, "mean": None, "note": "non-finite scores"}),
         **({"diverged": True} if name in excluded else {})} for name, row in zip(names, matrix)
    ]
    kept = [index for index, name in enumerate(names) if name not in excluded]
    if not kept:
        raise ValueError("every member diverged: there is no healthy member to evaluate")
    members = [all_members[index] for index in kept]
    matrix = matrix[kept]
    ids = list(members[0]["per_id"])
    per_id = {
        machine_id: {
            "auc": float(np.mean([m["per_id"][machine_id]["auc"] for m in members])),
            "pauc": float(np.mean([m["per_id"][machine_id]["pauc"] for m in members])),
            "num_normal": members[0]["per_id"][machine_id]["num_normal"],
            "num_anomaly": members[0]["per_id"][machine_id]["num_anomaly"],
        }
        for machine_id in ids
    }
    member_means = {key: np.array([m["mean"][key] for m in members]) for key in ("auc", "pauc")}
    ensemble_score = matrix.mean(axis=0)
    pooled = math.nan
    if undefined_reason(labels) is None:
        pooled = float(np.mean([pooled_auc(labels, row) for row in matrix]))
    if threshold is None:  # no threshold could be set: AUC and pAUC stand, the classification table is empty
        thresholds, table = None, dict.fromkeys((*_CLASSIFICATION_KEYS, "tp", "fp", "tn", "fn"))
        threshold_entry = {"policy": None, "value": None, "test_tuned": False, "per_unit": False, "units": {}}
    else:
        thresholds = threshold if isinstance(threshold, ThresholdSet) else ThresholdSet(threshold)
        if thresholds.per_unit:  # score > its clip's threshold  <=>  score - threshold > 0
            table = classification_metrics(labels, ensemble_score - thresholds.clip_values(machine_ids, domains), 0.0)
        else:
            table = classification_metrics(labels, ensemble_score, thresholds.value)
        threshold_entry = thresholds.to_json()
    edition = official.normalise_edition(edition)
    domain_list = None if domains is None else list(domains)
    headline = official.official_metrics(machine_ids, labels, ensemble_score, domain_list, edition)
    for entry, row in zip(all_members, member_matrix(member_scores, num_clips)):
        entry["official"] = _official_figures(official.official_metrics(machine_ids, labels, row, domain_list,
                                                                         edition)) \
            if np.all(np.isfinite(row)) else None

    id_array = np.asarray([str(i) for i in machine_ids])
    notes = []
    for machine_id in ids:
        reason = undefined_reason(labels[id_array == machine_id])
        if reason is not None:
            notes.append(f"id {machine_id}: AUC/pAUC undefined ({reason})")
    num_unknown = int(np.sum(labels == UNKNOWN))
    if num_unknown:
        notes.append(f"{num_unknown} clips with unknown label (-1) are left out of every metric")
    notes += [note for note in headline["notes"] if note.startswith("section ")]

    results = {
        "method": method,
        "machine_type": machine_type,
        "data_dir": data_dir,
        "num_seeds": int(matrix.shape[0]),
        "members_diverged": list(excluded),
        "per_id": per_id,
        "mean": {key: float(np.mean(values)) for key, values in member_means.items()},
        "std": {key: float(np.std(values)) for key, values in member_means.items()},
        "ensemble": per_id_metrics(machine_ids, labels, ensemble_score, DEFAULT_MAX_FPR),
        "pooled": {"auc": pooled},
        "members": all_members,
        "threshold": {
            **threshold_entry,
            **{key: table[key] for key in _CLASSIFICATION_KEYS},
            "confusion": {key: table[key] for key in ("tp", "fp", "tn", "fn")},
        },
        "test_tuned": bool(thresholds is not None and thresholds.test_tuned),
        "skipped_files": _skipped(skipped_files),
        "notes": notes,
        "protocol": edition,
        "per_section": headline.get("per_section"),
        "official_score": headline["official_score"],
        "official": {key: value for key, value in headline.items()
                     if key not in ("protocol", "per_section", "per_id", "official_score")},
    }
    results.update(extra)
    return results


def _official_figures(result: dict) -> dict:
    """A member's official figures: its score, means and, for 2021+, its per-section figures."""
    keys = ("official_score", "mean_auc", "mean_pauc", "hmean_auc_source", "hmean_auc_target", "hmean_pauc")
    return {**{key: result[key] for key in keys if key in result}, "per_section": result.get("per_section")}


def official_result(results: dict) -> dict:
    """A run's official figures in the form of :func:`asd_jax.evaluate.official.official_metrics` (ensemble-mean
    score), as :func:`asd_jax.evaluate.official.summary_across_types` takes them."""
    figures = results["official"]
    result = {"protocol": results["protocol"], "official_score": results["official_score"],
              "notes": list(figures.get("notes", [])), "mean_auc": figures.get("mean_auc"),
              "mean_pauc": figures.get("mean_pauc")}
    if results.get("per_section") is not None:
        result["per_section"] = results["per_section"]
    return result


def jsonable(value):
    """Plain JSON types, with NaN and infinities as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def load_results(run_dir: str) -> dict:
    """Read ``results.json`` back (undefined metrics come back as None)."""
    with open(os.path.join(run_dir, RunDir.RESULTS)) as handle:
        return json.load(handle)


def run_results(*, method: str, machine_type: str, data_dir: str, edition: str, threshold_settings,
                test_clips: Sequence, test_scores: np.ndarray, validation_clips: Sequence,
                validation_scores: np.ndarray, members: Sequence, member_names: list[str],
                diverged: Sequence[str] = (), skipped_files: Sequence[dict] = (), test_tuned_note: str = "",
                extra: dict | None = None) -> dict:
    """The whole results dict of one run, built once.

    ``test_clips`` / ``validation_clips`` (``path``, ``machine_id``, ``domain``, ``section``, ``label``) are the
    clips whose scores [E, n] are ``test_scores`` / ``validation_scores`` (the held-out normals, never trained on),
    in the same order; ``members`` are the run's member specs (``name``, ``seed``, ``setting``,
    ``setting_label``, aligned with ``member_names``). Diverged members are left out of the ensemble score, the
    threshold and the headline figures. The thresholds follow ``threshold_settings`` (a run's ``threshold``
    config section) on the healthy members' mean held-out score; warnings about them are logged and kept in
    ``notes``. ``test_tuned_note`` marks a run whose hyper-parameters were chosen on the test labels. ``extra``
    (method-specific figures, timings) is added at top level; its ``quiet_clips`` are also named in ``notes``."""
    healthy = np.array([name not in diverged for name in member_names])
    labels = np.array([c.label for c in test_clips], dtype=int)
    normal_scores = validation_scores[healthy].mean(axis=0) if validation_scores.size else None
    unit = official.unit_word(edition)
    if normal_scores is None and threshold_settings.policy in NEEDS_HELDOUT:  # a folder too small to hold out any
        threshold = None
        source = (f"none: policy '{threshold_settings.policy}' needs held-out normal training clips and every "
                  f"{unit} has too few training normals to hold one out (AUC and pAUC need no threshold); for "
                  "decisions use more training clips, a larger --config.val_fraction, or --threshold_policy=fixed "
                  "with --config.threshold.value")
        warnings = [f"no decision threshold: {source[6:]}"]
    else:
        threshold = run_thresholds(threshold_settings, normal_scores, validation_clips, labels,
                                   test_scores[healthy].mean(axis=0), test_clips)
        source, warnings = describe_thresholds(threshold, threshold_settings, len(validation_clips), unit)
    validation_errors = ([float(e) for e in validation_scores.mean(axis=1)] if validation_scores.size
                         else [None] * len(members))  # plain floats: equal after a JSON round trip
    results = evaluate_run(
        method=method, machine_type=machine_type, data_dir=data_dir, files=[c.path for c in test_clips],
        machine_ids=[c.machine_id for c in test_clips], labels=labels, member_scores=test_scores,
        threshold=threshold, skipped_files=skipped_files, extra=extra,
        member_names=member_names, excluded=list(diverged), domains=[c.domain for c in test_clips], edition=edition)
    results["threshold"]["source"] = source
    for warning in warnings:
        log.warning("%s", warning)
        results["notes"].append(warning)
    for entry in results.get("quiet_clips", []):
        results["notes"].append(f"{entry['file']}: {entry['problem']}: check the microphone (the clip was used)")
    classification = member_classification(threshold_settings, labels, test_scores, validation_scores,
                                           validation_clips, test_clips)
    for entry, spec, error, figures in zip(results["members"], members, validation_errors, classification):
        entry.update(seed=spec.seed, setting=spec.setting, validation_error=error, **figures)
    results["settings"] = setting_figures(results["members"], members)
    if len(results["settings"]) > 1:
        results["notes"].append("the members differ in more than their seed: the headline figures and the threshold "
                                "mix settings; see the per-setting figures")
    if test_tuned_note:
        results["test_tuned"] = True
        results["notes"].append(test_tuned_note)
    return results


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def setting_figures(members: Sequence[dict], specs: Sequence) -> list[dict]:
    """Per setting: its members and seeds, mean and sample std over seeds of each member's per-id AUC/pAUC and of
    their mean over ids, and of the anomaly-class F1 at the honest and at the test-tuned threshold, and the mean
    held-out normal error. Diverged members are listed under ``diverged`` and
    left out of the figures (a setting whose every member diverged has none).

    ``members`` are the ``results["members"]`` entries (``name``, ``per_id``, ``mean``, ``validation_error``) of
    every member of ``specs`` (member specs: ``name``, ``seed``, ``setting``, ``setting_label``; any order; members a
    run skipped are left out)."""
    by_name = {m["name"]: m for m in members}
    settings = []
    for setting in unique([s.setting for s in specs]):
        chosen = [s for s in specs if s.setting == setting and s.name in by_name]
        if not chosen:
            continue
        diverged = [s.name for s in chosen if by_name[s.name].get("diverged")]
        healthy = [s for s in chosen if s.name not in diverged]
        results = [by_name[s.name] for s in healthy]
        figure = {"setting": setting, "name": chosen[0].setting_label,
                  "members": [s.name for s in healthy], "seeds": [s.seed for s in healthy], "diverged": diverged}
        if not results:
            figure.update({key: None for key in ("auc_mean", "auc_std", "pauc_mean", "pauc_std",
                                                 "validation_error_mean", "f1_anomaly_mean", "f1_anomaly_std",
                                                 "f1_anomaly_test_tuned_mean", "f1_anomaly_test_tuned_std")},
                          per_id={})
            settings.append(figure)
            continue
        for key in ("auc", "pauc"):
            figure[f"{key}_mean"], figure[f"{key}_std"] = _mean_std([r["mean"][key] for r in results])
        figure["per_id"] = {}
        for machine_id in results[0]["per_id"]:
            entry = {}
            for key in ("auc", "pauc"):
                entry[f"{key}_mean"], entry[f"{key}_std"] = _mean_std(
                    [r["per_id"][machine_id][key] for r in results])
            figure["per_id"][machine_id] = entry
        figure["validation_error_mean"] = _mean_std([r.get("validation_error") for r in results])[0]
        for key in ("f1_anomaly", "f1_anomaly_test_tuned"):
            figure[f"{key}_mean"], figure[f"{key}_std"] = _mean_std([r.get(key) for r in results])
        settings.append(figure)
    return settings


def unique(items: Sequence[dict]) -> list[dict]:
    """The distinct dicts (settings, shapes), in order of first appearance."""
    seen, out = set(), []
    for item in items:
        key = json.dumps(item, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out
