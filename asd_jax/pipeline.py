"""The main job: data -> detector -> scores -> metrics -> run directory; and scoring new recordings with a run.

A run trains one group of members (:mod:`asd_jax.experiment`) in one compiled program; its directory
(:class:`asd_jax.rundir.RunDir`) is self-contained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np

from asd_jax import config as config_lib
from asd_jax import experiment
from asd_jax.config import RUN_LEVEL, split_list
from asd_jax.data import dcase
from asd_jax.evaluate import report
from asd_jax.evaluate.holdout_check import describe_threshold_source
from asd_jax.evaluate.metrics import classification_metrics
from asd_jax.evaluate.thresholds import Threshold, choose_threshold, oracle_f1_threshold
from asd_jax.methods import registry
from asd_jax.methods.clip_vectors import OCSVMDetector
from asd_jax.methods.sequence import SequenceDetector
from asd_jax.rundir import RunDir
from asd_jax.runlock import RunLock
from asd_jax.train import ensemble

log = logging.getLogger(__name__)


DETECTORS = {"ensemble": SequenceDetector, "clip_vector": OCSVMDetector}


def detector_class(method: str):
    return DETECTORS[registry.get(method).kind]


def resolve_data_dir(config) -> str:
    """``config.data_dir``, or the embedded synthetic slide-rail set (generated once, cached)."""
    if config.data_dir:
        return config.data_dir
    from asd_jax.data import synthetic

    synth = synthetic.SynthConfig(seed=config.synthetic.seed, snr_db=config.synthetic.snr_db)
    root = synthetic.default_dataset(config.cache_dir or None, synth, progress=config.progress)
    print(f"using the synthetic slide-rail data set at {root} (not MIMII: see README)")
    return root


def resolve_workdir(config) -> str:
    return config.workdir or os.path.join("runs", f"{config.method}_{config.machine_type}")


def holdout(clips: list[dcase.Clip], fraction: float, seed: int) -> tuple[list[dcase.Clip], list[dcase.Clip]]:
    """(fit, validation): a seeded ``fraction`` of each machine id's normal training clips is held out."""
    fit, validation = [], []
    rng = np.random.default_rng(seed)
    for machine_id in sorted({c.machine_id for c in clips}):
        group = [c for c in clips if c.machine_id == machine_id]
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


def load_data(config) -> Data:
    data_dir = resolve_data_dir(config)
    machine_ids = split_list(config.machine_ids) or None
    found = dcase.find_clips(data_dir, config.machine_type, machine_ids, config.ground_truth_csv or None)
    train_clips = dcase.require_split(found, "train", data_dir, config.machine_type)
    test_data_dir = config.get("test_data_dir") or data_dir
    test_found = found if test_data_dir == data_dir else dcase.find_clips(
        test_data_dir, config.machine_type, machine_ids, config.ground_truth_csv or None)
    test_clips = dcase.require_split(test_found, "test", test_data_dir, config.machine_type)
    unmatched = found.unmatched + (test_found.unmatched if test_found is not found else [])
    for path in unmatched:
        log.warning("ignoring %s: its name fits no DCASE pattern", path)
    anomalous_train = [c for c in train_clips if c.label != dcase.NORMAL]
    if anomalous_train:
        raise dcase.DatasetError(f"{anomalous_train[0].path}: training clips must be normal; move anomalies to test/")
    fit_clips, validation_clips = holdout(train_clips, config.val_fraction, config.data_seed)
    return Data(data_dir, test_data_dir, fit_clips, validation_clips, test_clips, unmatched)


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


def train_and_evaluate(config, axes: dict | None = None, stop_after_epoch: int | None = None) -> dict:
    """Train ``config.method`` on the normal training clips, score the test clips, write the run directory."""
    return run_group(plain_group(config, axes), RunDir(resolve_workdir(config)), stop_after_epoch)


def run_group(group: experiment.Group, run: RunDir, stop_after_epoch: int | None = None, data: Data | None = None,
              progress: bool | None = None) -> dict:
    """Train one group's members together, evaluate them, write ``run``; returns the results dict. The run
    directory is locked for the whole run (a second run on it stops at once)."""
    config = group.config
    if progress is not None:
        with config.unlocked():
            config.progress = progress
    if config.method == "vggish_ocsvm":  # fail at once, before any data work, when the model cannot be had
        from asd_jax.embeddings.vggish import resolve_source

        resolve_source(config.vggish.handle)
    run.create()
    with RunLock(run.path):
        return _run_group_locked(group, run, config, stop_after_epoch, data)


def _run_group_locked(group: experiment.Group, run: RunDir, config, stop_after_epoch: int | None,
                      data: Data | None) -> dict:
    started = time.perf_counter()
    data = data or load_data(config)
    described = [m.describe() for m in group.members]
    continued = check_resumable(run, config, described)
    run.save_config(config, data_dir=os.path.abspath(data.data_dir), test_data_dir=os.path.abspath(data.test_data_dir),
                    num_fit_clips=len(data.fit), num_validation_clips=len(data.validation),
                    num_test_clips=len(data.test), group=group.name, members=described)
    members = [m.member() for m in group.members]
    print(f"{config.method} on {config.machine_type}: {len(data.fit)} training, {len(data.validation)} held-out "
          f"normal and {len(data.test)} test clips from {data.data_dir}; {_describe_members(group)}; "
          f"run directory {run}" + (f" ({continued})" if continued else ""))

    detector = detector_class(config.method)(config, run, members, config.cache_dir or None)
    oracle = data.test if registry.get(config.method).kind == "clip_vector" and config.ocsvm.select == "oracle" \
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
    normal_scores = validation.values[healthy].mean(axis=0) if validation.values.size else None
    threshold = choose_threshold(
        config.threshold.policy, normal_scores=normal_scores, quantile=config.threshold.quantile,
        value=config.threshold.value, test_labels=labels, test_scores=test.values[healthy].mean(axis=0))
    source, warning = describe_threshold_source(len(validation.paths), config.threshold.policy,
                                                config.threshold.quantile)
    by_path = {c.path: c for c in data.test}
    machine_ids = [by_path[p].machine_id for p in test.paths]
    validation_errors = ([float(e) for e in validation.values.mean(axis=1)] if validation.values.size
                         else [None] * len(members))  # plain floats: equal after a JSON round trip
    quiet = list({entry["file"]: entry for entry in getattr(detector, "quiet", [])}.values())
    extra = dict(detector.extra_results, group=group.name, compiles=detector.compiles,
                 validation={"num_clips": len(validation.paths),
                             "criterion": "mean score of the held-out normal training clips"},
                 quiet_clips=quiet, seconds=round(time.perf_counter() - started, 1))
    results = report.evaluate_run(
        method=config.method, machine_type=config.machine_type, data_dir=os.path.abspath(data.test_data_dir),
        files=test.paths, machine_ids=machine_ids, labels=labels, member_scores=test.values, threshold=threshold,
        skipped_files=skipped, extra=extra, member_names=names, excluded=diverged)
    results["threshold"]["source"] = source
    if warning:
        log.warning("%s", warning)
        results["notes"].append(warning)
    for entry in quiet:
        results["notes"].append(f"{entry['file']}: {entry['problem']}: check the microphone (the clip was used)")
    classification = _member_classification(config, labels, test.values, validation.values)
    for entry, spec, error, figures in zip(results["members"], group.members, validation_errors, classification):
        entry.update(seed=spec.seed, setting=spec.setting, validation_error=error, **figures)
    results["settings"] = experiment.setting_figures(results["members"], group.members)
    if len(results["settings"]) > 1:
        results["notes"].append("the members differ in more than their seed: the headline figures and the threshold "
                                "mix settings; see the per-setting figures")
    if getattr(detector, "test_tuned", False):
        results["test_tuned"] = True
        results["notes"].append("hyper-parameters chosen by test AUC (--ocsvm_select=oracle): TEST-TUNED")
    validation_ids = {c.path: c.machine_id for c in data.validation}
    report.write_run_outputs(run, results, files=test.paths, machine_ids=machine_ids, labels=labels,
                             member_scores=test.values, member_names=names,
                             validation=(validation.paths, [validation_ids[p] for p in validation.paths],
                                         validation.values))
    print(report.format_table(results))
    print(f"threshold from the {source}")
    print(f"wrote results.json, scores.csv, report.md and plots to {run}")
    return results


def _member_classification(config, labels: np.ndarray, test_scores: np.ndarray,
                           validation_scores: np.ndarray) -> list[dict]:
    """Per member, on its own scores: the anomaly-class F1 at the run's threshold policy (set on the member's own
    held-out normal scores, no test labels) and at the F1-best threshold on the test labels (TEST-TUNED)."""
    figures = []
    for index, scores in enumerate(test_scores):
        entry = {"f1_anomaly": None}
        try:
            honest = choose_threshold(config.threshold.policy,
                                      normal_scores=validation_scores[index] if validation_scores.size else None,
                                      quantile=config.threshold.quantile, value=config.threshold.value,
                                      test_labels=labels, test_scores=scores)
            if not honest.test_tuned:
                entry["f1_anomaly"] = classification_metrics(labels, scores, honest.value)["f1_anomaly"]
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
    seeds = len({m.seed for m in group.members})
    settings = len(group.settings)
    text = f"{seeds} seed{'s' if seeds > 1 else ''}"
    if settings > 1:
        text = f"{settings} settings x {text}"
    return text + (" in one compiled program" if len(group.members) > 1 else "")


def _labels(scores, clips: list[dcase.Clip]) -> np.ndarray:
    by_path = {c.path: c for c in clips}
    return np.array([by_path[p].label for p in scores.paths], dtype=int)


def score_files(workdir: str, paths: list[str], output: str = "", progress: bool = True) -> list[dict]:
    """Score new recordings with the trained run in ``workdir``: per file its score, the threshold and the decision."""
    if not paths:
        raise ValueError("give the wav files to score after the flags: "
                         "python launch.py --mode=score --workdir=RUN clip1.wav clip2.wav")
    run = RunDir(workdir)
    config = run.load_config()
    config.progress = progress
    threshold = Threshold(**run.read_json(RunDir.THRESHOLD))
    members = [ensemble.Member(m["name"], m["seed"], tuple(m["hparams"].items()))
               for m in run.load_resolved()["members"]]
    detector = detector_class(config.method).restore(config, run, members)
    scores = detector.score(list(paths), "scoring")
    rows = []
    for path, member_scores in zip(scores.paths, scores.values.T):
        score = float(np.mean(member_scores))
        rows.append({"file": path, "score": score, "threshold": threshold.value,
                     "decision": "anomaly" if score > threshold.value else "normal"})
    rows += [{"file": s["file"], "error": s["error"]} for s in scores.skipped]
    for row in rows:
        if "error" in row:
            print(f"{row['file']}: SKIPPED ({row['error']})")
        else:
            print(f"{row['file']}: score {row['score']:.6g}  threshold {row['threshold']:.6g} "
                  f"({threshold.policy}{', TEST-TUNED' if threshold.test_tuned else ''})  -> {row['decision']}")
    if output:
        with open(output, "w") as handle:
            json.dump({"workdir": workdir, "method": config.method, "threshold": vars(threshold), "clips": rows},
                      handle, indent=2)
    return rows


def synthesize(config) -> dict:
    from asd_jax.data import synthetic

    if not config.data_dir:
        root = resolve_data_dir(config)
        print(f"synthetic data set ready at {root}")
        return {"data_dir": root}
    synth = synthetic.SynthConfig(seed=config.synthetic.seed, snr_db=config.synthetic.snr_db)
    return synthetic.generate_dataset(config.data_dir, synth, num_workers=config.num_workers or None,
                                      progress=config.progress)


def run(config, files: list[str] | None = None, axes: dict | None = None) -> dict | list:
    """Dispatch on ``config.mode``; ``axes`` are the swept values of a plain run (``--learning_rate=a,b``)."""
    if config.mode == "synth":
        return synthesize(config)
    if config.mode == "score":
        return score_files(resolve_workdir(config), files or [], config.output, config.progress)
    if config.mode == "benchmark":
        from asd_jax import bench

        return bench.run(config)
    if config.mode == "train":
        return train_and_evaluate(config, axes)
    if config.mode == "sweep":
        from asd_jax import sweep

        return sweep.run(config)
    raise ValueError(f"unknown --mode={config.mode!r}; choose one of {', '.join(config_lib.MODES)}")
