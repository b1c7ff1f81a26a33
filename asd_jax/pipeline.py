"""The main job: data -> detector -> scores -> results -> run directory, for one group of members.

A run trains one group of members (:mod:`asd_jax.experiment`) in one compiled program; its directory
(:class:`asd_jax.rundir.RunDir`) is self-contained. Data come from :mod:`asd_jax.data.loading`, the detector from
the method's registry entry (:mod:`asd_jax.methods.registry`), the results dict from
:func:`asd_jax.evaluate.results.run_results` and the files from :func:`asd_jax.evaluate.report.write_run_outputs`.
``machine_type="all"`` (or a comma list) trains one detector per machine type (:mod:`asd_jax.every_type`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from asd_jax import config as config_lib
from asd_jax import distributed, every_type, experiment, workdir
from asd_jax.data import loading
from asd_jax.evaluate import report, tables
from asd_jax.evaluate.results import run_results
from asd_jax.methods import registry
from asd_jax.rundir import RunDir

log = logging.getLogger(__name__)


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
    """Train ``config.method`` on the normal training clips, score the test clips, write the run directory.

    With several machine types (:func:`asd_jax.data.loading.machine_types`) one detector per type is trained into
    ``<workdir>/<type>/``, or, for a method that trains them jointly (the id classifier with ``types=joint``), one
    detector on every type's clips into ``<workdir>`` whose figures go to ``<workdir>/<type>/``; the summary across
    types is returned (and written, see :mod:`asd_jax.every_type`).
    """
    types = loading.machine_types(config)
    if types is None:
        return run_group(plain_group(config, axes), RunDir(workdir.default_workdir(config)), stop_after_epoch)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.workdir = workdir.default_workdir(config)
    if registry.get(config.method).trains_types_jointly(config):
        return every_type.train_types_jointly(
            config, types, lambda edition: run_group(plain_group(config, axes), RunDir(config.workdir),
                                                     stop_after_epoch, types=types, edition=edition))
    return every_type.train_every_type(
        config, types, lambda type_config: run_group(plain_group(type_config, axes), RunDir(type_config.workdir),
                                                     stop_after_epoch))


def run_group(group: experiment.Group, run: RunDir, stop_after_epoch: int | None = None,
              data: loading.Data | None = None, progress: bool | None = None,
              types: Sequence[str] | None = None, edition: str | None = None) -> dict:
    """Train one group's members together, evaluate them, write ``run``; returns the results dict. The run
    directory is locked for the whole run (a second run on it stops at once). ``types``: one detector over these
    machine types (``edition`` imposed on each when given), evaluated per type into ``run/<type>/``; returns
    ``{type: results}``."""
    config = group.config
    if progress is not None:
        with config.unlocked():
            config.progress = progress
    method = registry.get(config.method)
    method.preflight(config)  # fail at once, before any data work (e.g. when the pretrained VGGish cannot be had)
    if data is not None and data.key and data.key != loading.data_key(config):
        data = None  # given for other data settings (e.g. another edition): read this group's own
    if distributed.multiprocess() and not method.multiprocess:
        raise ValueError("--distributed trains the methods whose members train together on log-mel windows "
                         f"(kind 'ensemble'); {config.method} runs on one process: drop --distributed")
    run.create()
    with distributed.primary_lock(run.path):  # several processes: process 0 locks and writes the run's files
        return _run_group_locked(group, run, config, method, stop_after_epoch, data, types, edition)


def _run_group_locked(group: experiment.Group, run: RunDir, config, method: registry.Method,
                      stop_after_epoch: int | None, data: loading.Data | None,
                      types: Sequence[str] | None = None, edition: str | None = None) -> dict:
    started = time.perf_counter()
    data = data or (loading.load_types(config, types, edition) if types else loading.load_data(config))
    loading.resolve_channel(config, data.edition)
    loading.resolve_duration(config, data.fit + data.validation)
    method.resolve_config(config)  # settings that follow the clip length (the id classifier's whole-clip frames)
    described = [m.describe() for m in group.members]
    continued = workdir.check_resumable(run, config, described)
    distributed.barrier("asd_jax: run checked")  # every process read the old config before process 0 replaces it
    if distributed.is_primary():
        run.save_config(config, data_dir=os.path.abspath(data.data_dir),
                        test_data_dir=os.path.abspath(data.test_data_dir), num_fit_clips=len(data.fit),
                        num_validation_clips=len(data.validation), num_test_clips=len(data.test), group=group.name,
                        members=described, protocol=data.edition, protocol_reason=data.edition_reason)
    print(f"{config.method} on {config.machine_type} ({data.edition}: {data.edition_reason}): {len(data.fit)} "
          f"training, {len(data.validation)} held-out normal and {len(data.test)} test clips from {data.data_dir}; "
          f"{_describe_members(group)}; run directory {run}" + (f" ({continued})" if continued else ""))

    fit_clips, supplemental = _with_supplemental(config, method, data)
    detector = method.make_detector(config, run, [m.member() for m in group.members], config.cache_dir or None)
    kwargs = {"stop_after_epoch": stop_after_epoch} if stop_after_epoch is not None else {}
    skipped = detector.fit(fit_clips, data.validation,
                           oracle_clips=data.test if detector.selects_on_test_labels else None, **kwargs)
    validation = detector.score([c.path for c in data.validation], "held-out normals")
    test = detector.score([c.path for c in data.test], "test")
    skipped = skipped + test.skipped + [{"file": p, "error": "name fits no DCASE pattern"} for p in data.unmatched]
    skipped = list({entry["file"]: entry for entry in skipped}.values())
    names = detector.member_names
    diverged = list(detector.diverged)
    if len(diverged) == len(names):
        log.warning("every member diverged (%s): the figures below are theirs, kept only to show it",
                    ", ".join(diverged))
        diverged = []
    for name in diverged:
        log.warning("member %s diverged: it is left out of the ensemble score, the threshold and the headline "
                    "figures (its own scores stay in scores.csv)", name)

    by_path = {c.path: c for c in data.test + data.validation}
    quiet = list({entry["file"]: entry for entry in detector.quiet}.values())
    extra = dict(detector.extra_results, group=group.name, compiles=detector.compiles,
                 validation={"criterion": "mean score of the held-out normal training clips"},
                 **({"supplemental": supplemental} if supplemental else {}), protocol_reason=data.edition_reason)
    evaluate = lambda machine_type, out, keep: _evaluate(
        config, group, data, out, machine_type, names, diverged, detector.test_tuned_note,
        [by_path[p] for p in test.paths], test.values, [by_path[p] for p in validation.paths], validation.values,
        keep, skipped, quiet, dict(extra, seconds=round(time.perf_counter() - started, 1)))
    if not types:
        return evaluate(config.machine_type, run, lambda clip: True)
    # one detector over every type: each type's figures, from its own clips and held-out normals
    return {machine_type: evaluate(machine_type, RunDir(run.file(machine_type)).create(),
                                   lambda clip, t=machine_type: clip.machine_type == t) for machine_type in types}


def _evaluate(config, group, data, run: RunDir, machine_type: str, names, diverged, test_tuned_note: str,
              test_clips: list, test_values, validation_clips: list, validation_values, keep, skipped, quiet,
              extra: dict) -> dict:
    """The results of the test and held-out clips that ``keep(clip)`` selects (all of them, or one machine type's
    of a joint run), written to ``run``."""
    test_index = [i for i, c in enumerate(test_clips) if keep(c)]
    validation_index = [i for i, c in enumerate(validation_clips) if keep(c)]
    test_clips, validation_clips = [test_clips[i] for i in test_index], [validation_clips[i] for i in validation_index]
    test_values, validation_values = test_values[:, test_index], validation_values[:, validation_index]
    every_clip = data.fit + data.validation + data.test
    own, known = {c.path for c in every_clip if keep(c)}, {c.path for c in every_clip}
    files = [c.path for c in test_clips]
    results = run_results(
        method=config.method, machine_type=machine_type, data_dir=os.path.abspath(data.test_data_dir),
        edition=data.edition, threshold_settings=config.threshold, test_clips=test_clips, test_scores=test_values,
        validation_clips=validation_clips, validation_scores=validation_values, members=group.members,
        member_names=names, diverged=diverged, test_tuned_note=test_tuned_note,
        skipped_files=[entry for entry in skipped if entry["file"] in own or entry["file"] not in known],
        extra=dict(extra, validation=dict(extra["validation"], num_clips=len(validation_clips)),
                   quiet_clips=[entry for entry in quiet if entry["file"] in own]))
    if distributed.is_primary():
        report.write_run_outputs(run, results, files=files, machine_ids=[c.machine_id for c in test_clips],
                                 labels=[c.label for c in test_clips], member_scores=test_values, member_names=names,
                                 validation=([c.path for c in validation_clips],
                                             [c.machine_id for c in validation_clips], validation_values,
                                             [c.domain for c in validation_clips]),
                                 sections=[c.section for c in test_clips], domains=[c.domain for c in test_clips],
                                 attributes=[c.attributes for c in test_clips])
    print(tables.format_table(results))
    if results["threshold"]["policy"] is not None:  # else the table's threshold line says why there is none
        print(f"threshold: {results['threshold']['source']}")
    print(f"wrote results.json, scores.csv, report.md and plots to {run}")
    return results


SUPPLEMENTAL_SETTINGS = ("auto", "none")


def _with_supplemental(config, method: registry.Method, data: loading.Data) -> tuple[list, dict]:
    """(the clips the method trains on, what the results say of the supplemental clips): the fit clips, plus the
    supplemental kinds the method declares when ``supplemental=auto``. Nothing to say without such clips.

    "machine": the clean machine recordings, as normal training clips. "noise": augmentation, one mixture per
    noise-only clip (:func:`asd_jax.data.mixing.noise_mixtures`): a random fit clip of the noise clip's type (and
    section) plus the noise at a random SNR in ``supplemental_noise_snr_db`` (default -5 to 5 dB), read at the
    run's feature rate, duration and channel, seeded by ``data_seed`` and cached. ``used["noise"]`` counts the
    mixtures made; noise clips that could not be mixed are in ``skipped``."""
    setting = config.get("supplemental", "auto")
    if setting not in SUPPLEMENTAL_SETTINGS:
        raise ValueError(f"supplemental={setting!r}: choose one of {', '.join(SUPPLEMENTAL_SETTINGS)}")
    if not data.supplemental:
        return data.fit, {}
    kinds = method.supplemental if setting == "auto" else ()
    found = {kind: sum(c.kind == kind for c in data.supplemental) for kind in ("machine", "noise")}
    added = [clip for kind in kinds if kind != "noise" for clip in data.supplemental_clips(kind)]
    used = {kind: found[kind] if kind in kinds else 0 for kind in found}
    extra, notes = {}, []
    if "noise" in kinds and found["noise"]:
        from asd_jax.data import mixing

        noise = [c for c in data.supplemental if c.kind == "noise"]
        types = {c.machine_type for c in noise}
        features = loading.feature_config(config)
        snr_db = mixing.parse_snr_range(config.get("supplemental_noise_snr_db", None))
        mixtures, skipped = mixing.noise_mixtures(
            [c for c in data.fit if c.machine_type in types], noise, count=len(noise), snr_db=snr_db,
            seed=config.get("data_seed", 0), sample_rate=features.sample_rate, duration_s=features.duration_s,
            cache_root=config.cache_dir or None, progress=config.get("progress", True), channel=features.channel)
        added += mixtures
        used["noise"] = len(mixtures)
        extra = {"noise_snr_db": list(snr_db), **({"skipped": skipped} if skipped else {})}
        notes.append(f"{len(mixtures)} noise mixtures at {snr_db[0]:g} to {snr_db[1]:g} dB SNR"
                     + (f", {len(skipped)} noise/clean files skipped" if skipped else ""))
    print(f"supplemental clips: {found['machine']} machine, {found['noise']} noise found; "
          + (f"{len(added)} added to the training clips" if added else f"{config.method} trains on none")
          + (f" ({'; '.join(notes)})" if notes else ""))
    return data.fit + added, {"found": found, "used": used, "setting": setting, **extra}


def _describe_members(group: experiment.Group) -> str:
    text = tables.members_text(len({m.seed for m in group.members}), len(group.settings))
    return text + (" in one compiled program" if len(group.members) > 1 else "")
