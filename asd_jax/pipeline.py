"""The main job: data -> detector -> scores -> metrics -> run directory; and scoring new recordings with a run.

A run trains one group of members (:mod:`asd_jax.experiment`) in one compiled program; its directory
(:class:`asd_jax.rundir.RunDir`) is self-contained. Its figures follow the DCASE edition of its data (detected from
the file names, or ``config.dcase_edition``), and its decision threshold is set per machine id / section
(``threshold.per_unit``). ``machine_type="all"`` (or a comma list) trains one detector per machine type, as the
DCASE baselines do, each into its own run directory, and summarises them across types.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import logging
import os
import time

import numpy as np

from asd_jax import config as config_lib
from asd_jax import distributed, experiment
from asd_jax.config import RUN_LEVEL, split_list
from asd_jax.data import dcase
from asd_jax.evaluate import report
from asd_jax.evaluate.holdout_check import describe_threshold_source
from asd_jax.evaluate.metrics import classification_metrics
from asd_jax.evaluate.thresholds import ThresholdSet, choose_unit_thresholds, oracle_f1_threshold
from asd_jax.methods import registry
from asd_jax.methods.clip_vectors import OCSVMDetector, vector_source
from asd_jax.methods.sequence import SequenceDetector
from asd_jax.rundir import RunDir
from asd_jax.train import ensemble

log = logging.getLogger(__name__)


DETECTORS = {"ensemble": SequenceDetector, "clip_vector": OCSVMDetector}


def detector_class(method: str):
    """The detector that runs ``method``: its own (``Method.detector``, "module:Class") or its kind's."""
    entry = registry.get(method)
    if entry.detector:
        module, name = entry.detector.split(":")
        return getattr(importlib.import_module(module), name)
    return DETECTORS[entry.kind]


def resolve_data_dir(config) -> str:
    """``config.data_dir``, or the embedded synthetic slide-rail set (generated once, cached)."""
    if config.data_dir:
        return config.data_dir
    from asd_jax.data import synthetic

    root = synthetic.default_dataset(config.cache_dir or None, synth_config(config), progress=config.progress)
    print(f"using the synthetic slide-rail data set at {root} (not MIMII: see README)")
    return root


def resolve_workdir(config) -> str:
    machine_type = "-".join(split_list(config.machine_type)) or config.machine_type
    return config.workdir or os.path.join("runs", f"{config.method}_{machine_type}")


def holdout(clips: list[dcase.Clip], fraction: float, seed: int) -> tuple[list[dcase.Clip], list[dcase.Clip]]:
    """(fit, validation): a seeded ``fraction`` of each machine id's (section's) normal training clips is held out,
    per domain where clips have one, so that each domain can get its own threshold."""
    fit, validation = [], []
    rng = np.random.default_rng(seed)
    for machine_id, domain in sorted({(c.machine_id, c.domain or "") for c in clips}):
        group = [c for c in clips if c.machine_id == machine_id and (c.domain or "") == domain]
        count = int(round(fraction * len(group))) if len(group) > 1 else 0
        chosen = set(rng.permutation(len(group))[:count].tolist())
        for index, clip in enumerate(group):
            (validation if index in chosen else fit).append(clip)
    return fit, validation


@dataclasses.dataclass
class Data:
    """The clips of one run: normal training clips split into fit and held-out, and the test clips."""

    data_dir: str
    test_data_dir: str
    fit: list[dcase.Clip]
    validation: list[dcase.Clip]
    test: list[dcase.Clip]
    unmatched: list[str]
    edition: str = "dcase2020"  # the DCASE edition whose protocol scores the run
    edition_reason: str = ""
    key: str = ""  # data_key() of the config it was loaded for


DATA_SETTINGS = ("data_dir", "test_data_dir", "machine_type", "machine_ids", "ground_truth_csv", "val_fraction",
                 "data_seed", "dcase_edition", "mimii_test_normals")


def data_key(config) -> str:
    """The settings that decide which clips a run reads, as one string (runs with equal keys share data)."""
    return json.dumps({key: config.get(key) for key in DATA_SETTINGS}, sort_keys=True, default=str)


def _find(config, root: str, machine_type: str) -> dcase.ClipList:
    return dcase.find_clips(root, machine_type, split_list(config.machine_ids) or None,
                            config.ground_truth_csv or None, edition=config.get("dcase_edition") or None,
                            mimii_test_normals=config.get("mimii_test_normals"))


def find_data(config) -> tuple[dcase.ClipList, dcase.ClipList, str, str]:
    """(training-side clips, test-side clips, edition, why): with a separate ``test_data_dir`` the edition is
    detected from both folders' names together (or taken from ``dcase_edition``)."""
    if _several_types(config):
        raise dcase.DatasetError(
            f"machine_type={config.machine_type!r} names several machine types: --mode=train runs one detector per "
            "type; in a sweep make machine_type an axis (experiment.product({'machine_type': ['fan', 'valve']}))")
    data_dir = resolve_data_dir(config)
    found = _find(config, data_dir, config.machine_type)
    test_data_dir = config.get("test_data_dir") or data_dir
    test_found = found if test_data_dir == data_dir else _find(config, test_data_dir, config.machine_type)
    edition, reason = found.edition, found.edition_reason
    if test_found is not found and not config.get("dcase_edition"):
        if "mimii" in (found.layout, test_found.layout):
            if test_found.edition not in (None, edition):
                raise dcase.DatasetError(f"the training clips are {edition} ({reason}) but the test clips "
                                         f"{test_found.edition} ({test_found.edition_reason})")
        else:
            edition, reason = dcase.detect_edition([c.path for c in found.clips + test_found.clips],
                                                   config.machine_type)
    return found, test_found, edition or "dcase2020", reason


def load_data(config) -> Data:
    data_dir = resolve_data_dir(config)
    found, test_found, edition, reason = find_data(config)
    train_clips = dcase.require_split(found, "train", data_dir, config.machine_type)
    test_data_dir = config.get("test_data_dir") or data_dir
    test_clips = dcase.require_split(test_found, "test", test_data_dir, config.machine_type)
    unmatched = found.unmatched + (test_found.unmatched if test_found is not found else [])
    for path in unmatched:
        log.warning("ignoring %s: its name fits no DCASE pattern", path)
    anomalous_train = [c for c in train_clips if c.label != dcase.NORMAL]
    if anomalous_train:
        raise dcase.DatasetError(f"{anomalous_train[0].path}: training clips must be normal; move anomalies to test/")
    fit_clips, validation_clips = holdout(train_clips, config.val_fraction, config.data_seed)
    return Data(data_dir, test_data_dir, fit_clips, validation_clips, test_clips, unmatched, edition, reason,
                data_key(config))


def _comparable(config) -> dict:
    """What a resumed run must share with the one that started: the settings the run reads, without the run-level
    ones (sections of other methods do not matter)."""
    plain = config.to_dict()
    read = config_lib.sections_read(config)
    for key in list(plain):
        if key in RUN_LEVEL or (isinstance(plain[key], dict) and key not in read):
            plain.pop(key)
    return json.loads(json.dumps(plain, default=str))


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(run: RunDir, config, members: list[dict]) -> str:
    """A run directory with checkpoints or results may only be continued with the same settings and members, except
    for more epochs (constant schedule): the window stream is keyed by the step, so training on from the last
    checkpoint gives what a longer run from scratch gives. Returns a note when the run is extended, else ''."""
    if not os.path.exists(run.file(RunDir.CONFIG)) or not (run.has_checkpoints or run.finished):
        return ""
    previous, current = _flatten(_comparable(run.load_config())), _flatten(_comparable(config))
    changed = sorted(key for key in set(previous) | set(current) if previous.get(key) != current.get(key))
    method = registry.get(config.method)
    epochs = f"{method.section}.train.epochs"
    note = ""
    if epochs in changed and method.kind == "ensemble":
        before, after = previous.get(epochs), current.get(epochs)
        if isinstance(before, int) and isinstance(after, int) and after > before and \
                config[method.section].train.schedule == "constant":
            changed.remove(epochs)
            note = f"continuing the {before}-epoch run to {after} epochs"
    if run.load_resolved().get("members") != json.loads(json.dumps(members, default=str)):
        changed.append("members")
    if changed:
        shown = sorted({key.split(".")[0] for key in changed})
        raise ValueError(f"{run} holds a run with other settings ({', '.join(shown)}: {', '.join(changed[:5])}); "
                         "pass another --workdir, or delete that directory to start over (only more epochs, with a "
                         "constant schedule, continue a run)")
    return note


def plain_group(config, axes: dict | None = None) -> experiment.Group:
    """The members of a plain run: ``num_seeds`` seeds times the points of ``axes`` (e.g. several learning rates
    from ``--learning_rate=1e-3,3e-4``); they must form one group (else: ``--mode=sweep``)."""
    config_lib.check(config)
    members = experiment.expand(config, experiment.product(axes) if axes else None)
    groups = experiment.group(members)
    if len(groups) > 1:
        raise ValueError(f"these settings need {len(groups)} compiled programs ({', '.join(g.name for g in groups)}): "
                         "declare them as a sweep and run --mode=sweep")
    return groups[0]


def _several_types(config) -> bool:
    text = str(config.machine_type).strip()
    return text.lower() == "all" or "," in text


def machine_types(config) -> list[str] | None:
    """The machine types of a multi-type run (``machine_type="all"``: every type under the data folder; or a comma
    list), or None for a run of one type."""
    text = str(config.machine_type).strip()
    if not _several_types(config):
        return None
    if text.lower() == "all":
        root = resolve_data_dir(config)
        types = dcase.list_machine_types(root)
        if not types:
            raise dcase.DatasetError(f"machine_type='all': no machine type folders under {root!r}")
        return types
    types = split_list(text)
    if len(set(types)) != len(types) or any(t.lower() == "all" for t in types):
        raise ValueError(f"machine_type={text!r}: name each machine type once (or pass 'all' alone)")
    return types


def train_and_evaluate(config, axes: dict | None = None, stop_after_epoch: int | None = None) -> dict:
    """Train ``config.method`` on the normal training clips, score the test clips, write the run directory.

    With several machine types (:func:`machine_types`) one detector per type is trained into
    ``<workdir>/<type>/`` and the summary across types is returned (and written, see :func:`train_every_type`).
    """
    types = machine_types(config)
    if types is not None:
        return train_every_type(config, types, axes, stop_after_epoch)
    return run_group(plain_group(config, axes), RunDir(resolve_workdir(config)), stop_after_epoch)


def train_every_type(config, types: list[str], axes: dict | None = None,
                     stop_after_epoch: int | None = None) -> dict:
    """One ordinary run per machine type into ``<workdir>/<type>/``, then ``summary.md``, ``summary.csv`` and
    ``summary.json`` in ``<workdir>``: per type its mean AUC/pAUC (2020) or official score (2021+), and over all
    types their arithmetic mean (2020) or the harmonic mean of every section's figures (2021+). Returns the
    summary. The work directory is locked for the whole loop, and each type's run directory as any run's."""
    root = RunDir(resolve_workdir(config)).create()
    with distributed.primary_lock(root.path):
        edition = _common_edition(config, types)
        per_type, run_dirs = {}, {}
        for index, machine_type in enumerate(types):
            type_config = copy.deepcopy(config)
            with type_config.unlocked():
                type_config.machine_type = machine_type
                type_config.workdir = root.file(machine_type)
                if edition:
                    type_config.dcase_edition = edition
            print(f"\n== machine type {index + 1}/{len(types)}: {machine_type} ==")
            per_type[machine_type] = run_group(plain_group(type_config, axes), RunDir(type_config.workdir),
                                               stop_after_epoch)
            run_dirs[machine_type] = type_config.workdir
        summary = report.summarise_types(per_type, run_dirs)
        if distributed.is_primary():
            report.write_type_summary(root.path, summary)
    print("\n" + report.format_type_summary(summary))
    print(f"wrote {report.SUMMARY_MD}, {report.SUMMARY_CSV} and {report.SUMMARY_JSON} to {root}")
    return summary


def _common_edition(config, types: list[str]) -> str | None:
    """The edition to impose on every type when their names alone suggest different ones (None: no need).

    Detection is per type and a type whose names fit several editions gets a best guess; when exactly one
    edition was decided by a rule (not guessed), every type is scored under it. Otherwise: DatasetError."""
    if config.get("dcase_edition"):
        return None
    detected = {}
    for machine_type in types:
        type_config = copy.deepcopy(config)
        with type_config.unlocked():
            type_config.machine_type = machine_type
        _, _, edition, reason = find_data(type_config)
        detected[machine_type] = (edition, reason)
    editions = {edition for edition, _ in detected.values()}
    if len(editions) <= 1:
        return None
    decided = {edition for edition, reason in detected.values() if "best guess" not in reason}
    if len(decided) == 1:
        chosen = decided.pop()
        log.warning("the machine types' names suggest %s; scoring every type as %s (pass --config.dcase_edition "
                    "to choose)", ", ".join(f"{t}: {e}" for t, (e, _) in detected.items()), chosen)
        return chosen
    raise dcase.DatasetError("the machine types fit different DCASE editions (" + "; ".join(
        f"{t}: {e} ({r})" for t, (e, r) in detected.items()) + "); pass --config.dcase_edition to choose one")


def run_group(group: experiment.Group, run: RunDir, stop_after_epoch: int | None = None, data: Data | None = None,
              progress: bool | None = None) -> dict:
    """Train one group's members together, evaluate them, write ``run``; returns the results dict. The run
    directory is locked for the whole run (a second run on it stops at once)."""
    config = group.config
    if progress is not None:
        with config.unlocked():
            config.progress = progress
    method = registry.get(config.method)
    # fail at once, before any data work, when the pretrained VGGish cannot be had
    if method.kind == "clip_vector" and vector_source(config.method) == "vggish":
        if str(config.features.get("channel", "mean")).strip().lower() != "mean":
            raise ValueError(f"features.channel={config.features.channel!r} is not read by {config.method} (VGGish "
                             "decodes the audio itself and averages the channels); leave it 'mean'")
        from asd_jax.embeddings.vggish import resolve_source

        resolve_source(config.vggish.handle)
    if data is not None and data.key and data.key != data_key(config):
        data = None  # given for other data settings (e.g. another edition): read this group's own
    if distributed.multiprocess() and not issubclass(detector_class(config.method), SequenceDetector):
        raise ValueError("--distributed trains the methods whose members train together on log-mel windows "
                         f"(kind 'ensemble'); {config.method} runs on one process: drop --distributed")
    run.create()
    with distributed.primary_lock(run.path):  # several processes: process 0 locks and writes the run's files
        return _run_group_locked(group, run, config, stop_after_epoch, data)


def _run_group_locked(group: experiment.Group, run: RunDir, config, stop_after_epoch: int | None,
                      data: Data | None) -> dict:
    started = time.perf_counter()
    data = data or load_data(config)
    described = [m.describe() for m in group.members]
    continued = check_resumable(run, config, described)
    distributed.barrier("asd_jax: run checked")  # every process read the old config before process 0 replaces it
    if distributed.is_primary():
        run.save_config(config, data_dir=os.path.abspath(data.data_dir),
                        test_data_dir=os.path.abspath(data.test_data_dir), num_fit_clips=len(data.fit),
                        num_validation_clips=len(data.validation), num_test_clips=len(data.test), group=group.name,
                        members=described, protocol=data.edition, protocol_reason=data.edition_reason)
    members = [m.member() for m in group.members]
    print(f"{config.method} on {config.machine_type} ({data.edition}: {data.edition_reason}): {len(data.fit)} "
          f"training, {len(data.validation)} held-out normal and {len(data.test)} test clips from {data.data_dir}; "
          f"{_describe_members(group)}; run directory {run}" + (f" ({continued})" if continued else ""))

    detector = detector_class(config.method)(config, run, members, config.cache_dir or None)
    oracle = data.test if registry.get(config.method).section == "ocsvm" and config.ocsvm.select == "oracle" \
        else None
    kwargs = {"stop_after_epoch": stop_after_epoch} if stop_after_epoch is not None else {}
    skipped = detector.fit(data.fit, data.validation, oracle_clips=oracle, **kwargs)
    validation = detector.score([c.path for c in data.validation], "held-out normals")
    test = detector.score([c.path for c in data.test], "test")
    skipped = skipped + test.skipped + [{"file": p, "error": "name fits no DCASE pattern"} for p in data.unmatched]
    skipped = list({entry["file"]: entry for entry in skipped}.values())
    names = detector.member_names
    diverged = list(getattr(detector, "diverged", []))
    if len(diverged) == len(names):
        log.warning("every member diverged (%s): the figures below are theirs, kept only to show it",
                    ", ".join(diverged))
        diverged = []
    for name in diverged:
        log.warning("member %s diverged: it is left out of the ensemble score, the threshold and the headline "
                    "figures (its own scores stay in scores.csv)", name)
    healthy = np.array([name not in diverged for name in names])

    labels = _labels(test, data.test)
    by_path = {c.path: c for c in data.test}
    test_clips = [by_path[p] for p in test.paths]
    validation_by_path = {c.path: c for c in data.validation}
    validation_clips = [validation_by_path[p] for p in validation.paths]
    normal_scores = validation.values[healthy].mean(axis=0) if validation.values.size else None
    threshold = _choose_thresholds(config, normal_scores, validation_clips, labels,
                                   test.values[healthy].mean(axis=0), test_clips)
    unit = "machine id" if data.edition == "dcase2020" else "section"
    source, warnings = _describe_thresholds(threshold, config, len(validation.paths), unit)
    machine_ids = [c.machine_id for c in test_clips]
    domains = [c.domain for c in test_clips]
    validation_errors = ([float(e) for e in validation.values.mean(axis=1)] if validation.values.size
                         else [None] * len(members))  # plain floats: equal after a JSON round trip
    quiet = list({entry["file"]: entry for entry in getattr(detector, "quiet", [])}.values())
    extra = dict(detector.extra_results, group=group.name, compiles=detector.compiles,
                 validation={"num_clips": len(validation.paths),
                             "criterion": "mean score of the held-out normal training clips"},
                 quiet_clips=quiet, seconds=round(time.perf_counter() - started, 1),
                 protocol_reason=data.edition_reason)
    results = report.evaluate_run(
        method=config.method, machine_type=config.machine_type, data_dir=os.path.abspath(data.test_data_dir),
        files=test.paths, machine_ids=machine_ids, labels=labels, member_scores=test.values, threshold=threshold,
        skipped_files=skipped, extra=extra, member_names=names, excluded=diverged, domains=domains,
        edition=data.edition)
    results["threshold"]["source"] = source
    for warning in warnings:
        log.warning("%s", warning)
        results["notes"].append(warning)
    for entry in quiet:
        results["notes"].append(f"{entry['file']}: {entry['problem']}: check the microphone (the clip was used)")
    classification = _member_classification(config, labels, test.values, validation.values, validation_clips,
                                            test_clips)
    for entry, spec, error, figures in zip(results["members"], group.members, validation_errors, classification):
        entry.update(seed=spec.seed, setting=spec.setting, validation_error=error, **figures)
    results["settings"] = experiment.setting_figures(results["members"], group.members)
    if len(results["settings"]) > 1:
        results["notes"].append("the members differ in more than their seed: the headline figures and the threshold "
                                "mix settings; see the per-setting figures")
    if getattr(detector, "test_tuned", False):
        results["test_tuned"] = True
        results["notes"].append("hyper-parameters chosen by test AUC (--ocsvm_select=oracle): TEST-TUNED")
    if distributed.is_primary():
        report.write_run_outputs(run, results, files=test.paths, machine_ids=machine_ids, labels=labels,
                                 member_scores=test.values, member_names=names,
                                 validation=(validation.paths, [c.machine_id for c in validation_clips],
                                             validation.values, [c.domain for c in validation_clips]),
                                 sections=[c.section for c in test_clips], domains=domains)
    print(report.format_table(results))
    print(f"threshold: {source}")
    print(f"wrote results.json, scores.csv, report.md and plots to {run}")
    return results


def _choose_thresholds(config, normal_scores: np.ndarray | None, normal_clips: list[dcase.Clip],
                       labels: np.ndarray, test_scores: np.ndarray, test_clips: list[dcase.Clip]) -> ThresholdSet:
    """The run's threshold policy on these scores: the global threshold and, with ``threshold.per_unit``, one per
    machine id / section (and domain) from its own held-out normals (:func:`choose_unit_thresholds`)."""
    settings = config.threshold
    return choose_unit_thresholds(
        settings.policy, normal_scores=normal_scores, normal_units=[c.machine_id for c in normal_clips],
        normal_domains=[c.domain for c in normal_clips], quantile=settings.quantile, value=settings.value,
        test_labels=labels, test_scores=test_scores, test_units=[c.machine_id for c in test_clips],
        test_domains=[c.domain for c in test_clips], per_unit=settings.get("per_unit", True))


def _describe_thresholds(thresholds: ThresholdSet, config, num_heldout: int, unit: str) -> tuple[str, list[str]]:
    """(where the thresholds come from, warnings): each unit's (and domain's) source is written into its entry, and
    a unit or domain resting on too few held-out clips is warned about by name (:func:`describe_threshold_source`).
    The global threshold's own warning is kept only where some clips are judged by it."""
    policy, quantile = config.threshold.policy, config.threshold.quantile
    overall, overall_warning = describe_threshold_source(num_heldout, policy, quantile)
    if not thresholds.per_unit:
        return overall, [overall_warning] if overall_warning else []
    warnings, parts = [], []
    for name, entry in thresholds.units.items():
        if entry["from"] == "global":
            entry["source"] = f"global threshold (no held-out normal clips of {unit} {name})"
            warnings.append(f"{unit} {name}: no held-out normal clips, so its clips are judged by the global threshold")
            parts.append(f"{name}: global")
            continue
        entry["source"], warning = describe_threshold_source(entry["num_heldout"], policy, quantile)
        if warning and set(entry["domains"]) != {"source", "target"}:  # else no clip is judged by it
            warnings.append(f"{unit} {name}: {warning}")
        for domain, figures in entry["domains"].items():
            figures["source"], warning = describe_threshold_source(figures["num_heldout"], policy, quantile)
            if warning:
                warnings.append(f"{unit} {name}, {domain} domain: {warning}")
        counts = ", ".join(f"{d} {f['num_heldout']}" for d, f in entry["domains"].items())
        parts.append(f"{name}: {entry['num_heldout']}" + (f" ({counts})" if counts else ""))
    uses_global = any(entry["from"] == "global" for entry in thresholds.units.values())
    if overall_warning and uses_global:
        warnings.insert(0, f"global threshold: {overall_warning}")
    domains = " and domain" if any(entry["domains"] for entry in thresholds.units.values()) else ""
    basis = "test labels" if policy == "oracle_f1" else "held-out normal training clips"
    text = (f"{policy} per {unit}{domains}, each on its own {basis} ({'; '.join(parts)}); global (for clips of no "
            f"known {unit}): {overall}")
    return text, warnings


def _member_classification(config, labels: np.ndarray, test_scores: np.ndarray, validation_scores: np.ndarray,
                           validation_clips: list[dcase.Clip], test_clips: list[dcase.Clip]) -> list[dict]:
    """Per member, on its own scores: the anomaly-class F1 at the run's threshold policy (set on the member's own
    held-out normal scores, no test labels; per unit as the run's) and at the F1-best threshold on the test labels
    (TEST-TUNED)."""
    figures = []
    units, domains = [c.machine_id for c in test_clips], [c.domain for c in test_clips]
    for index, scores in enumerate(test_scores):
        entry = {"f1_anomaly": None}
        try:
            honest = _choose_thresholds(config, validation_scores[index] if validation_scores.size else None,
                                        validation_clips, labels, scores, test_clips)
            if not honest.test_tuned:
                margin = scores - honest.clip_values(units, domains) if honest.per_unit else scores
                entry["f1_anomaly"] = classification_metrics(labels, margin, 0.0 if honest.per_unit
                                                             else honest.value)["f1_anomaly"]
        except ValueError:  # e.g. no held-out clips: no honest threshold
            pass
        if np.all(np.isfinite(scores)):
            tuned = oracle_f1_threshold(labels, scores)
            entry["f1_anomaly_test_tuned"] = classification_metrics(labels, scores, tuned)["f1_anomaly"]
        else:
            entry["f1_anomaly_test_tuned"] = None
        figures.append(entry)
    return figures


def _describe_members(group: experiment.Group) -> str:
    text = report.members_text(len({m.seed for m in group.members}), len(group.settings))
    return text + (" in one compiled program" if len(group.members) > 1 else "")


def _labels(scores, clips: list[dcase.Clip]) -> np.ndarray:
    by_path = {c.path: c for c in clips}
    return np.array([by_path[p].label for p in scores.paths], dtype=int)


def score_files(workdir: str, paths: list[str], output: str = "", progress: bool = True) -> list[dict]:
    """Score new recordings with the trained run in ``workdir``: per file its score, the threshold and the decision.

    A clip whose name (or raw MIMII folder) gives its machine id / section is judged by that unit's threshold (its
    domain's, when the name gives one and the run has it), any other by the global threshold; each row says which
    (``threshold_scope``)."""
    if not paths:
        raise ValueError("give the wav files to score after the flags: "
                         "python launch.py --mode=score --workdir=RUN clip1.wav clip2.wav")
    run = RunDir(workdir)
    config = run.load_config()
    config.progress = progress
    threshold = ThresholdSet.from_json(run.read_json(RunDir.THRESHOLD))
    resolved = run.load_resolved()
    unit_name = "machine id" if resolved.get("protocol", "dcase2020") == "dcase2020" else "section"
    members = [ensemble.Member(m["name"], m["seed"], tuple(m["hparams"].items())) for m in resolved["members"]]
    detector = detector_class(config.method).restore(config, run, members)
    scores = detector.score(list(paths), "scoring")
    rows = []
    for path, member_scores in zip(scores.paths, scores.values.T):
        score = float(np.mean(member_scores))
        named = dcase.unit_of(path)
        value, unit, domain = threshold.lookup(*(named or (None, None)))
        if unit is not None:
            scope = f"{unit_name} {unit}" + (f", {domain} domain" if domain else "")
        elif not threshold.per_unit:
            scope = "global"
        elif named is None:
            scope = f"global: the file name gives no {unit_name}"
        else:
            scope = f"global: {unit_name} {named[0]} has no threshold of its own"
        rows.append({"file": path, "score": score, "threshold": value, "threshold_unit": unit,
                     "threshold_domain": domain, "threshold_scope": scope,
                     "decision": "anomaly" if score > value else "normal"})
    rows += [{"file": s["file"], "error": s["error"]} for s in scores.skipped]
    for row in rows:
        if "error" in row:
            print(f"{row['file']}: SKIPPED ({row['error']})")
        else:
            print(f"{row['file']}: score {row['score']:.6g}  threshold {row['threshold']:.6g} "
                  f"({threshold.policy}, {row['threshold_scope']}{', TEST-TUNED' if threshold.test_tuned else ''})"
                  f"  -> {row['decision']}")
    if output:
        with open(output, "w") as handle:
            json.dump({"workdir": workdir, "method": config.method, "threshold": threshold.to_json(),
                       "clips": rows}, handle, indent=2)
    return rows


def synthesize(config) -> dict:
    from asd_jax.data import synthetic

    if not config.data_dir:
        root = resolve_data_dir(config)
        print(f"synthetic data set ready at {root}")
        return {"data_dir": root}
    return synthetic.generate_dataset(config.data_dir, synth_config(config), num_workers=config.num_workers or None,
                                      progress=config.progress)


def synth_config(config):
    """The synthetic set the config asks for (``synthetic.layout``: dcase2020, or dcase2023 with a source and a
    target domain)."""
    from asd_jax.data import synthetic

    return synthetic.SynthConfig(seed=config.synthetic.seed, snr_db=config.synthetic.snr_db,
                                 layout=config.synthetic.layout)


def run(config, files: list[str] | None = None, axes: dict | None = None) -> dict | list:
    """Dispatch on ``config.mode``; ``axes`` are the swept values of a plain run (``--learning_rate=a,b``)."""
    if distributed.multiprocess():
        if config.mode not in ("train", "sweep"):
            raise ValueError(f"--distributed runs --mode=train and --mode=sweep; run --mode={config.mode} as one "
                             "process")
        distributed.check_same(json.dumps(config.to_dict(), sort_keys=True, default=str), "settings")
    if config.mode == "synth":
        return synthesize(config)
    if config.mode == "score":
        return score_files(resolve_workdir(config), files or [], config.output, config.progress)
    if config.mode == "benchmark" and config.sweep:
        from asd_jax import bench_sweep

        return bench_sweep.run(config)
    if config.mode == "benchmark":
        from asd_jax import bench

        return bench.run(config)
    if config.mode == "train":
        return train_and_evaluate(config, axes)
    if config.mode == "sweep":
        from asd_jax import sweep

        return sweep.run(config)
    raise ValueError(f"unknown --mode={config.mode!r}; choose one of {', '.join(config_lib.MODES)}")
