"""How hard the synthetic world is: simple detectors and an attribute classifier on its clips, per machine type.

On a generated world (default size unless told otherwise), per machine type:

* trivial detector: the clip's mean log-mel energy as the anomaly score -> AUC per domain (should be near 0.5: a
  fault must not change the level);
* Mahalanobis detector on the clip-mean log-mel (128 bins), fitted on every training normal (source and target)
  with a Ledoit-Wolf shrunk covariance (and, for comparison, a diagonal one) -> AUC per domain (should be above
  chance, far from 1), and per fault kind;
* attribute separability: a standardised logistic regression on the clip-mean log-mel that predicts the attribute
  combination of source-domain normal clips (train and test), 5-fold cross-validated accuracy against chance (the
  largest class's share); the same on finer features, to show that the attributes live in fine structure: the
  clip-mean of a 4096-point log power spectrum below 4 kHz (3.9 Hz bins), and the clip-mean log-mel joined with the
  autocorrelation of the clip's frame energy over lags up to 5 s (timing: strokes, valve patterns, modulation).

Usage::

    python experiments/world_checks.py --world_dir /tmp/world --workers 2 --output /tmp/world_checks.json

The world is generated in ``--world_dir`` first unless a complete one is already there (its generation time is then
reported as null); ``--dcase_dev_size`` checks the DCASE-size world instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
from scipy import signal
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from asd_jax.data import synthetic_world as W
from asd_jax.data.dcase import ANOMALY, NORMAL, find_clips
from asd_jax.data.features import FeatureConfig, log_mel

FINE_FFT = 4096
FINE_MAX_HZ = 4000.0
ENVELOPE_LAGS = 157  # frames: 5 s at hop 512 / 16 kHz


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` reports it (platform's processor string when lscpu is missing)."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def clip_features(path: str, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip-mean log-mel [128] in dB, clip-mean log power spectrum of 4096-point frames below 4 kHz [1024] in dB,
    autocorrelation of the frame energy (mean log-mel per frame) over lags 0-5 s [157])."""
    wave, _ = sf.read(path, dtype="float32")
    frames = log_mel(wave, config)
    _, _, power = signal.stft(wave, nperseg=FINE_FFT, noverlap=FINE_FFT // 2, window="hann", boundary=None)
    bins = np.fft.rfftfreq(FINE_FFT, 1.0 / config.sample_rate) < FINE_MAX_HZ
    fine = 10.0 * np.log10(np.abs(power[bins]) ** 2 + 1e-12).mean(axis=1)
    energy = frames.mean(axis=1) - frames.mean()
    envelope = np.correlate(energy, energy, "full")[len(energy) - 1:][:ENVELOPE_LAGS] / (energy @ energy + 1e-12)
    return frames.mean(axis=0), fine, envelope


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def mahalanobis(train: np.ndarray, test: np.ndarray, diagonal: bool) -> np.ndarray:
    """Distance of each test row from the training rows' mean under their (shrunk or diagonal) covariance."""
    mean = train.mean(axis=0)
    if diagonal:
        return np.sqrt((((test - mean) ** 2) / (train.var(axis=0) + 1e-6)).sum(axis=1))
    precision = LedoitWolf().fit(train).precision_
    centred = test - mean
    return np.sqrt(np.einsum("ij,jk,ik->i", centred, precision, centred))


def separability(features: np.ndarray, labels: list[str], seed: int) -> dict:
    """5-fold cross-validated accuracy of a standardised logistic regression, and chance (largest class share)."""
    values, counts = np.unique(labels, return_counts=True)
    folds = min(5, int(counts.min()))
    if len(values) < 2 or folds < 2:
        return {"accuracy": None, "chance": None, "classes": len(values)}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    scores = cross_val_score(model, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"accuracy": round(float(scores.mean()), 3), "chance": round(float(counts.max() / counts.sum()), 3),
            "classes": int(len(values))}


def check_type(root: str, machine_type: str, manifest: dict, seed: int) -> dict:
    """Every measurement of one machine type."""
    clips = find_clips(root, machine_type).clips
    config = FeatureConfig()
    features = [clip_features(c.path, config) for c in clips]
    mel = np.stack([f[0] for f in features])
    fine = np.stack([f[1] for f in features])
    timing = np.hstack([mel, np.stack([f[2] for f in features])])
    split = np.array([c.split for c in clips])
    domain = np.array([c.domain for c in clips])
    label = np.array([c.label for c in clips])
    faults = [manifest["test_clips"].get(os.path.join(machine_type, "test", c.name), {}).get("anomaly")
              for c in clips]

    train = (split == "train") & (label == NORMAL)
    result = {"clips": len(clips), "trivial_auc": {}, "mahalanobis_auc": {}, "mahalanobis_diag_auc": {},
              "mahalanobis_auc_per_kind": {}}
    energy = mel.mean(axis=1)
    shrunk = mahalanobis(mel[train], mel, diagonal=False)
    diagonal = mahalanobis(mel[train], mel, diagonal=True)
    for d in W.DOMAINS:
        test = (split == "test") & (domain == d)
        y = (label[test] == ANOMALY).astype(int)
        result["trivial_auc"][d] = auc(y, energy[test])
        result["mahalanobis_auc"][d] = auc(y, shrunk[test])
        result["mahalanobis_diag_auc"][d] = auc(y, diagonal[test])
        per_kind = {}
        for kind in W.MACHINE_TYPES[machine_type].anomaly_kinds:
            keep = test & ((label == NORMAL) | np.array([f == kind for f in faults]))
            per_kind[kind] = auc((label[keep] == ANOMALY).astype(int), shrunk[keep])
        result["mahalanobis_auc_per_kind"][d] = per_kind

    source_normals = (domain == "source") & (label == NORMAL)
    combination = ["_".join(f"{k}_{v}" for k, v in sorted(c.attributes.items()))
                   for c, keep in zip(clips, source_normals) if keep]
    result["attribute_logreg"] = {"log_mel": separability(mel[source_normals], combination, seed),
                                  "fine_spectrum": separability(fine[source_normals], combination, seed),
                                  "log_mel_and_envelope": separability(timing[source_normals], combination, seed)}
    per_key = {}
    for key in (a[0] for a in W.MACHINE_TYPES[machine_type].attributes):
        values = [c.attributes[key] for c, keep in zip(clips, source_normals) if keep]
        per_key[key] = separability(mel[source_normals], values, seed)
    result["attribute_logreg_per_key"] = per_key
    return result


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def table(results: dict) -> str:
    lines = ["type     trivial AUC src/tgt  Mahalanobis AUC src/tgt  (diag src/tgt)  attr LR log-mel (chance)  "
             "attr LR fine spectrum / log-mel+envelope"]
    for name, r in results.items():
        coarse, fine = r["attribute_logreg"]["log_mel"], r["attribute_logreg"]["fine_spectrum"]
        timing = r["attribute_logreg"]["log_mel_and_envelope"]
        lines.append(f"{name:7s}  {_fmt(r['trivial_auc']['source'])} / {_fmt(r['trivial_auc']['target'])}        "
                     f"{_fmt(r['mahalanobis_auc']['source'])} / {_fmt(r['mahalanobis_auc']['target'])}        "
                     f"({_fmt(r['mahalanobis_diag_auc']['source'])}/{_fmt(r['mahalanobis_diag_auc']['target'])})  "
                     f"{_fmt(coarse['accuracy'])} ({_fmt(coarse['chance'])}, {coarse['classes']} classes)      "
                     f"{_fmt(fine['accuracy'])} / {_fmt(timing['accuracy'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world_dir", required=True, help="where the world is (or is generated)")
    parser.add_argument("--output", required=True, help="JSON file for the measurements")
    parser.add_argument("--dcase_dev_size", action="store_true", help="the DCASE-size world (990 + 10 training)")
    parser.add_argument("--machine_types", default=",".join(W.WorldConfig.machine_types),
                        help=f"comma-separated subset of {','.join(W.MACHINE_TYPES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    settings = {"seed": args.seed, "machine_types": tuple(t for t in args.machine_types.split(",") if t)}
    config = W.WorldConfig.dcase_dev_size(**settings) if args.dcase_dev_size else W.WorldConfig(**settings)
    generation_s = None
    if not W.is_complete(args.world_dir, config):
        start = time.perf_counter()
        W.generate_world(args.world_dir, config, num_workers=args.workers)
        generation_s = round(time.perf_counter() - start, 1)
    with open(os.path.join(args.world_dir, W.MANIFEST)) as handle:
        manifest = json.load(handle)

    start = time.perf_counter()
    results = {name: check_type(args.world_dir, name, manifest, args.seed) for name in config.machine_types}
    report = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "cpu": cpu_model(),
              "cpu_count": os.cpu_count(), "workers": args.workers, "world_dir": args.world_dir,
              "config": config.to_json(), "generator_version": W.GENERATOR_VERSION, "generation_s": generation_s,
              "checks_s": round(time.perf_counter() - start, 1), "types": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=1)
    print(table(results))
    for name, r in results.items():
        per_key = ", ".join(f"{k} {_fmt(v['accuracy'])} (chance {_fmt(v['chance'])})"
                            for k, v in r["attribute_logreg_per_key"].items())
        kinds = "; ".join(f"{d}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in per.items())
                          for d, per in r["mahalanobis_auc_per_kind"].items())
        print(f"{name}: attributes per key (log-mel): {per_key}\n    Mahalanobis AUC per fault: {kinds}")
    print(f"generation {generation_s} s, checks {report['checks_s']} s on {report['cpu']} "
          f"({report['cpu_count']} cores, {args.workers} workers) -> {args.output}")


if __name__ == "__main__":
    main()
