"""The main job: data -> detector -> scores -> metrics -> run directory; and scoring new recordings with a run.

A run directory is self-contained: ``config.json`` (resolved), ``normalizer.npz`` or ``ocsvm.pkl``, ``threshold.json``,
``checkpoints/``, ``train_curve.jsonl``, ``results.json``, ``scores.csv``, ``report.md`` and plots.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import ml_collections
import numpy as np

from asd_jax.config import METHODS, SEQUENCE_METHODS, split_list
from asd_jax.data import dcase
from asd_jax.evaluate import report
from asd_jax.evaluate.thresholds import Threshold, choose_threshold

log = logging.getLogger(__name__)


def detector_class(method: str):
    if method in SEQUENCE_METHODS:
        from asd_jax.methods.sequence import SequenceDetector

        return SequenceDetector
    if method in ("vggish_ocsvm", "logmel_ocsvm"):
        from asd_jax.methods.clip_vectors import OCSVMDetector

        return OCSVMDetector
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


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


def save_config(config, workdir: str, **resolved) -> None:
    payload = {"config": config.to_dict(), "resolved": resolved, "argv": sys.argv}
    with open(os.path.join(workdir, "config.json"), "w") as handle:
        json.dump(payload, handle, indent=2, default=str)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --workdir must be the directory of a trained run")
    with open(path) as handle:
        return ml_collections.ConfigDict(json.load(handle)["config"])


def _check_resumable(config, workdir: str) -> None:
    """A workdir with checkpoints may only be resumed with the same method and model settings."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path) or not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return
    previous = load_run_config(workdir)
    keys = ["method", "seed", "num_seeds", "features", config.method]
    # compare plain values: ConfigDict equality also compares the lock state, and launch.py's config is locked
    plain = lambda value: value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    changed = [k for k in keys if k in previous and plain(previous[k]) != plain(config[k])]
    if changed:
        raise ValueError(f"{workdir} holds checkpoints of a run with other settings ({', '.join(changed)}); "
                         "pass another --workdir, or delete that directory to start over")


def train_and_evaluate(config) -> dict:
    """Train ``config.method`` on the normal training clips, score the test clips, write the run directory."""
    started = time.perf_counter()
    if config.method == "vggish_ocsvm":  # fail at once, before any data work, when the model cannot be had
        from asd_jax.embeddings.vggish import resolve_source

        resolve_source(config.vggish.handle)
    workdir = resolve_workdir(config)
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

    os.makedirs(workdir, exist_ok=True)
    _check_resumable(config, workdir)
    fit_clips, validation_clips = holdout(train_clips, config.val_fraction, config.seed)
    save_config(config, workdir, data_dir=os.path.abspath(data_dir), test_data_dir=os.path.abspath(test_data_dir),
                num_fit_clips=len(fit_clips), num_validation_clips=len(validation_clips),
                num_test_clips=len(test_clips))
    print(f"{config.method} on {config.machine_type}: {len(fit_clips)} training, {len(validation_clips)} held-out "
          f"normal and {len(test_clips)} test clips from {data_dir}; run directory {workdir}")

    detector = detector_class(config.method)(config, workdir, config.cache_dir or None)
    if config.method.endswith("ocsvm"):
        skipped = detector.fit(fit_clips, oracle_clips=test_clips if config.ocsvm.select == "oracle" else None)
    else:
        skipped = detector.fit(fit_clips)
    validation = detector.score([c.path for c in validation_clips], "held-out normals")
    test = detector.score([c.path for c in test_clips], "test")
    skipped = skipped + validation.skipped + test.skipped + [{"file": p, "error": "name fits no DCASE pattern"}
                                                            for p in unmatched]

    threshold = choose_threshold(
        config.threshold.policy, normal_scores=validation.values.mean(axis=0) if validation.values.size else None,
        quantile=config.threshold.quantile, value=config.threshold.value,
        test_labels=_labels(test, test_clips), test_scores=test.values.mean(axis=0))
    with open(os.path.join(workdir, "threshold.json"), "w") as handle:
        json.dump({"policy": threshold.policy, "value": threshold.value, "test_tuned": threshold.test_tuned,
                   "quantile": threshold.quantile}, handle, indent=2)

    by_path = {c.path: c for c in test_clips}
    extra = dict(detector.extra_results, validation_scores=validation.values.mean(axis=0).tolist(),
                 seconds=round(time.perf_counter() - started, 1))
    results = report.evaluate_run(
        method=config.method, machine_type=config.machine_type, data_dir=os.path.abspath(test_data_dir),
        files=test.paths, machine_ids=[by_path[p].machine_id for p in test.paths], labels=_labels(test, test_clips),
        member_scores=test.values, threshold=threshold, skipped_files=skipped, extra=extra,
        member_names=detector.member_names)
    if getattr(detector, "test_tuned", False):
        results["test_tuned"] = True
        results["notes"].append("hyper-parameters chosen by test AUC (--ocsvm_select=oracle): TEST-TUNED")
    report.write_run_outputs(workdir, results, files=test.paths, machine_ids=[by_path[p].machine_id for p in test.paths],
                             labels=_labels(test, test_clips), member_scores=test.values,
                             member_names=detector.member_names)
    report.plot_training_curve(workdir)
    print(report.format_table(results))
    print(f"wrote results.json, scores.csv, report.md and plots to {workdir}")
    return results


def _labels(scores, clips: list[dcase.Clip]) -> np.ndarray:
    by_path = {c.path: c for c in clips}
    return np.array([by_path[p].label for p in scores.paths], dtype=int)


def score_files(workdir: str, paths: list[str], output: str = "", progress: bool = True) -> list[dict]:
    """Score new recordings with the trained run in ``workdir``: per file its score, the threshold and the decision."""
    if not paths:
        raise ValueError("give the wav files to score after the flags: "
                         "python launch.py --mode=score --workdir=RUN clip1.wav clip2.wav")
    config = load_run_config(workdir)
    config.progress = progress
    with open(os.path.join(workdir, "threshold.json")) as handle:
        threshold = Threshold(**json.load(handle))
    detector = detector_class(config.method).restore(config, workdir)
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


def run(config, files: list[str] | None = None) -> dict | list:
    """Dispatch on ``config.mode``."""
    if config.mode == "synth":
        return synthesize(config)
    if config.mode == "score":
        return score_files(resolve_workdir(config), files or [], config.output, config.progress)
    if config.mode == "benchmark":
        from asd_jax import bench

        return bench.run(config)
    if config.mode == "train":
        return train_and_evaluate(config)
    raise ValueError(f"unknown --mode={config.mode!r}; choose train, synth, score or benchmark")
