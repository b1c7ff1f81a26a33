"""Select the id classifier's recipe on a development world, without the test labels of the world it is reported on.

DCASE's convention: choose on the development set, report on the evaluation set. Here the development set is the
DCASE-like synthetic world generated with another seed (``--dev_seed``, 1 by default); the figures the README
reports come from the world of seed 0, which the selection never reads. The candidates are the recipe's discrete
choices (frontend, classes over types, loss, centres, backend) crossed with quasi-random points of the continuous
ones (learning rate, mixup alpha: :func:`asd_jax.experiment.quasi_random`); each candidate trains once (seed 0)
with every type in one model, the score backends are tried on the reference run's saved embeddings (no
retraining), and the candidate with the best official score over all types of the development world is selected.
``selection.json`` lists every candidate's score and the selected one.

    python experiments/select_id_classifier.py --dev_world runs/world_dev --workdir runs/select_id_classifier
    python experiments/select_id_classifier.py --smoke ...   # tiny world, 1 epoch: checks the script runs
    python experiments/select_id_classifier.py --flags compact_body   # one candidate's launch.py flags
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from asd_jax import config as config_lib  # noqa: E402
from asd_jax import experiment, pipeline  # noqa: E402
from asd_jax.data import synthetic_world  # noqa: E402
from asd_jax.rundir import RunDir  # noqa: E402

# the recipe's discrete choices: the reference recipe first, then one change at a time (ablations)
DISCRETE = {
    "reference": {},
    # the compact networks (a 3x3 stem and one residual block per stage; 1-D residual blocks over the spectrum
    # pooled by 2), no squeeze-excitation: the default until 2026-12-04, when ASDKit's networks were selected
    "compact_body": {"id_classifier.body": "compact", "id_classifier.squeeze_excite": False,
                     "id_classifier.spectrum_pool": 2},
    # ASDKit's optimiser: AdamW, torch's default decay 0.01
    "adamw": {"id_classifier.train.optimizer": "adamw", "id_classifier.train.weight_decay": 0.01},
    # AdamW and ASDKit's input: linear-frequency STFT bins of 200-8000 Hz (in dB here, ASDKit's in linear amplitude)
    "asdkit_recipe": {"id_classifier.train.optimizer": "adamw", "id_classifier.train.weight_decay": 0.01,
                      "features.scale": "linear", "features.fmin": 200.0, "features.fmax": 8000.0},
    "no_squeeze_excite": {"id_classifier.squeeze_excite": False},
    "arcface": {"id_classifier.loss": "arcface", "id_classifier.subclusters": 1},
    "spectrum_only": {"id_classifier.frontend": "spectrum"},
    "single_branch_spectrogram": {"id_classifier.frontend": "spectrogram"},
    "no_mixup": {"id_classifier.mixup_alpha": 0.0},
    "mean_pooling": {"id_classifier.pooling": "mean"},
    # the spectrogram branch over 64-frame windows (2 s), eight per clip and epoch (about the compute of the
    # default's two whole clips), the clip's embedding the mean of its windows' (the default until 2026-12-04)
    "windows_64": {"id_classifier.frames": 64, "id_classifier.train.windows_per_clip": 8},
    "per_type_models": {"id_classifier.types": "separate"},
    "fixed_centres": {"id_classifier.centres": "fixed"},
    "adaproj": {"id_classifier.loss": "adaproj"},
}
BACKENDS = ("knn", "knn_domain", "kmeans", "smote", "knn_rescale")
CONTINUOUS = {"id_classifier.train.learning_rate": (3e-4, 3e-3, "log"), "id_classifier.mixup_alpha": (0.05, 1.0, "log")}


def candidates(num_points: int, seed: int) -> list[tuple[str, dict]]:
    """(name, overrides): every discrete variant at the default continuous values, then the reference recipe at
    ``num_points`` quasi-random continuous points."""
    chosen = [(name, dict(values)) for name, values in DISCRETE.items()]
    for index, point in enumerate(experiment.quasi_random(num_points, seed, CONTINUOUS)):
        chosen.append((f"reference_q{index}", point))
    return chosen


def flags(name: str) -> str:
    """A discrete candidate's overrides as ``launch.py`` flags (``--config.<path>=<value>``), for scripts that run
    it elsewhere (``experiments/world_id_classifier_ablations.sh``)."""
    if name not in DISCRETE:
        raise SystemExit(f"no candidate {name!r}; the discrete candidates: {', '.join(DISCRETE)}")
    return " ".join(f"--config.{path}={value}" for path, value in DISCRETE[name].items())


def run_candidate(base, name: str, overrides: dict, world: str, workdir: str) -> dict:
    config = _configured(base, overrides, world, os.path.join(workdir, name))
    summary = pipeline.train_and_evaluate(config)
    return {"name": name, "overrides": overrides, "official_score": summary["official_score"],
            "per_type": {t: f["official_score"] for t, f in summary["per_type"].items()}, "workdir": config.workdir}


def _configured(base, overrides: dict, world: str, workdir: str):
    config = copy.deepcopy(base)
    with config.unlocked():
        config.data_dir, config.machine_type, config.workdir = world, "all", workdir
        for path, value in overrides.items():
            section = config
            *parents, leaf = path.split(".")
            for part in parents:
                section = section[part]
            section[leaf] = value
    return config


def rescore_backends(base, overrides: dict, world: str, workdir: str, names: list[str],
                     out_root: str | None = None) -> list[dict]:
    """The trained candidate in ``workdir`` scored with other backends: each refits from the training embeddings
    the run saved (no training), then each type's official figures as the run computes them. ``out_root``: each
    backend's ``summary.json`` and per-type ``results.json`` are written to ``<out_root>/backend_<name>/`` (the
    layout ``experiments/world_table.py`` reads)."""
    from asd_jax import every_type
    from asd_jax.data import loading
    from asd_jax.evaluate.results import jsonable, run_results
    from asd_jax.methods import registry

    config = _configured(base, overrides, world, workdir)
    types = loading.machine_types(config)
    data = loading.load_types(config, types, loading.common_edition(config, types))
    group = pipeline.plain_group(config)
    rows = []
    for backend in names:
        with config.unlocked():
            config.id_classifier.backend = backend
        detector = registry.get("id_classifier").restore_detector(config, RunDir(workdir),
                                                                  [m.member() for m in group.members])
        detector.cache_root = config.cache_dir or None
        detector.clip_types.update({c.path: c.machine_type for c in data.test + data.validation})
        test = detector.score([c.path for c in data.test], f"test ({backend})")
        validation = detector.score([c.path for c in data.validation], f"held-out ({backend})")
        by_path = {c.path: c for c in data.test + data.validation}
        per_type = {}
        for machine_type in types:
            ti = [i for i, p in enumerate(test.paths) if by_path[p].machine_type == machine_type]
            vi = [i for i, p in enumerate(validation.paths) if by_path[p].machine_type == machine_type]
            per_type[machine_type] = run_results(
                method="id_classifier", machine_type=machine_type, data_dir=world, edition=data.edition,
                threshold_settings=config.threshold, test_clips=[by_path[test.paths[i]] for i in ti],
                test_scores=test.values[:, ti], validation_clips=[by_path[validation.paths[i]] for i in vi],
                validation_scores=validation.values[:, vi], members=group.members,
                member_names=detector.member_names)
        summary = every_type.summarise_types(per_type)
        if out_root:  # the files a --machine_type=all run writes, by the same writers
            out = os.path.join(out_root, f"backend_{backend}")
            for machine_type, results in per_type.items():
                RunDir(os.path.join(out, machine_type)).create().write_json(RunDir.RESULTS, jsonable(results))
            every_type.write_type_summary(out, {**summary, "rescored_from": os.path.abspath(workdir)})
        rows.append({"name": f"backend_{backend}", "overrides": {**overrides, "id_classifier.backend": backend},
                     "official_score": summary["official_score"], "rescored_from": workdir,
                     "per_type": {t: f["official_score"] for t, f in summary["per_type"].items()}})
        print(f"backend {backend}: official score {summary['official_score']:.4f}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev_world", help="the development world's folder (generated if absent)")
    parser.add_argument("--dev_seed", type=int, default=1, help="the development world's seed (not 0: the "
                        "reported world's)")
    parser.add_argument("--workdir")
    parser.add_argument("--points", type=int, default=4, help="quasi-random points of the continuous values")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="backends tried on the reference recipe")
    parser.add_argument("--only", default="", help="comma list of candidate names to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="a tiny world and 1 epoch: checks the script runs")
    parser.add_argument("--flags", metavar="NAME", help="print the discrete candidate NAME's launch.py flags and stop")
    args = parser.parse_args(argv)
    if args.flags:
        print(flags(args.flags))
        return
    if not (args.dev_world and args.workdir):
        parser.error("--dev_world and --workdir are required (or --flags NAME)")
    if args.dev_seed == 0:
        parser.error("--dev_seed 0 is the world the figures are reported on: select on another seed")
    world_config = synthetic_world.WorldConfig(seed=args.dev_seed)
    base = config_lib.get_config()
    with base.unlocked():
        base.method = "id_classifier"
    if args.smoke:
        world_config = synthetic_world.WorldConfig(seed=args.dev_seed, num_train=4, num_train_target=4,
                                                   num_test_normal=3, num_test_anomaly=3, num_supplemental_machine=1,
                                                   num_supplemental_noise=1, duration_s=1.0)
        with base.unlocked():
            base.val_fraction, base.id_classifier.train.epochs = 0.25, 1
            base.features.n_mels, base.features.duration_s = 32, 1.0
            # the whole 1-s clip (32 frames, resolved from the data as the default's 313) and spectrum convolutions
            # that fit its 8001 bins in the asdkit body too
            base.id_classifier.spectrum_kernel, base.id_classifier.spectrum_stride = 32, 8
    if not os.path.exists(os.path.join(args.dev_world, "synthetic.json")):
        synthetic_world.generate_world(args.dev_world, world_config, progress=True)
    chosen = candidates(args.points, args.dev_seed)
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [c for c in chosen if c[0] in wanted]
    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, "selection.json")
    done = {}
    if os.path.exists(path):
        with open(path) as handle:
            done = {row["name"]: row for row in json.load(handle)["candidates"]}
    def save():
        best = max(done.values(), key=lambda row: row["official_score"])
        with open(path, "w") as handle:
            json.dump({"dev_world": os.path.abspath(args.dev_world), "dev_seed": args.dev_seed,
                       "criterion": "official score over all types of the development world (its own labels; "
                                    "the reported world is never read)",
                       "selected": best["name"], "candidates": list(done.values())}, handle, indent=2)

    for name, overrides in chosen:
        if name not in done:
            print(f"\n=== candidate {name}: {overrides or 'the reference recipe'} ===", flush=True)
            done[name] = run_candidate(base, name, overrides, args.dev_world, args.workdir)
            save()
        others = [b for b in args.backends.split(",")
                  if b and b != base.id_classifier.backend and f"backend_{b}" not in done]
        if name == "reference" and others:  # the backends need no training: the reference run's embeddings, refitted
            trained = RunDir(done[name]["workdir"]).load_config()  # as the run resolved it (clip length, frames)
            for row in rescore_backends(trained, {}, args.dev_world, done[name]["workdir"], others):
                done[row["name"]] = row
            save()
    print(f"\nselected: {max(done.values(), key=lambda row: row['official_score'])['name']} (see {path})")


if __name__ == "__main__":
    main()
