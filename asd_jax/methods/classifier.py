"""``--method=id_classifier``: learn to tell the classes of normal training clips apart; score how badly a clip fits.

The classes are, by default (``classes=auto``), each unit's attribute combinations where the clips have attributes
(2021+ names and attribute files carry them) and the units DCASE scores otherwise (machine ids in 2020, sections
from 2021); ``unit`` and ``unit_attributes`` force one or the other. The
model (:mod:`asd_jax.models.id_classifier`) trains on the ensemble trainer like every other method: members are
seeds and shape-free optimiser values in one compiled program, windows (log-mel patches of ``frames`` frames) are
drawn on the device and carry their clip's class; mixup and SpecAugment-style masks run inside the step.

Scores (``backend``):

* ``knn``: the cosine distance of a clip's mean embedding (each window's embedding L2-normalised, then averaged
  and normalised again) to the nearest ``knn_k`` training clips of its unit;
* ``kmeans`` (default), ``knn_domain``, ``smote``, ``knn_rescale``: the domain-aware backends of
  :mod:`asd_jax.methods.backends` on the same embeddings (separate source and target banks, k-means of the source
  bank, SMOTE of the target clips, local-density rescaling); ``score_normalise`` standardises each unit's scores;
* ``neg_log_prob``: minus the log-probability of the clip's unit (the sum of its classes' probabilities), averaged
  over the clip's windows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax import distributed
from asd_jax.data import dcase, loading
from asd_jax.data.features import extract_spectra
from asd_jax.methods import inference
from asd_jax.methods.base import Scores
from asd_jax.methods import backends
from asd_jax.methods.knn import ANY_UNIT, units_of
from asd_jax.methods.sequence import SequenceDetector
from asd_jax.models import id_classifier as model_lib
from asd_jax.rundir import RunDir
from asd_jax.train import ensemble

# ---------------------------------------------------------------------------------------------------------- classes


def unit_key(machine_type: str, section: str, joint: bool) -> str:
    """What the classifier calls a unit: the section (machine id), or ``type/section`` when one model serves
    several machine types (their sections share names)."""
    return f"{machine_type}/{section}" if joint else section


def class_key(clip: dcase.Clip, mode: str, joint: bool = False) -> str:
    """A clip's class: its unit (``unit``), its unit and attribute combination (``unit_attributes``), or, with
    ``auto``, the latter where the clip has attributes and its unit where it has none (2020 names, hidden
    attributes): the classes over everything given, as the reference recipes use them. ``joint``: the unit
    includes the machine type (one model over several types)."""
    unit = unit_key(clip.machine_type, clip.section, joint)
    if mode == "unit" or (mode == "auto" and not clip.attributes):
        return unit
    attributes = ",".join(f"{k}={v}" for k, v in sorted(clip.attributes.items()))
    return f"{unit}|{attributes}"


def training_classes(clips: Sequence[dcase.Clip], mode: str, machine_type: str = "",
                     joint: bool = False) -> tuple[list[str], list[str]]:
    """(classes, units): the sorted classes of the training clips and the sorted units; refuses data with one class
    or, for ``unit_attributes``, clips without attributes."""
    if mode == "unit_attributes":
        bare = [c for c in clips if not c.attributes]
        if bare:
            raise ValueError(f"id_classifier.classes=unit_attributes needs every training clip's attributes; "
                             f"{bare[0].path} has none (2020 and raw MIMII names carry no attributes, and DCASE "
                             "2024-2026 hide some as noAttribute): use --config.id_classifier.classes=unit")
    classes = sorted({class_key(c, mode, joint) for c in clips})
    units = sorted({unit_key(c.machine_type, c.section, joint) for c in clips})
    if len(classes) < 2:
        what = "machine id" if mode == "unit" or (mode == "auto" and not any(c.attributes for c in clips)) \
            else "class"
        raise ValueError(
            f"id_classifier learns to tell classes of normal clips apart, but the training clips of "
            f"{machine_type or 'this machine type'} hold only one {what} ({classes[0] if classes else 'none'}). "
            "Give it several: every machine id (leave --machine_ids empty), 2021+ data with attributes (the "
            "default classes=auto uses them), or --machine_type=all with several machine ids per type; or use a "
            "method that needs no classes (--method=dense_ae, lstm, gru_ae, logmel_knn).")
    return classes, units


NEG_LOG_PROB = "neg_log_prob"  # the score backend without embeddings: minus the log-probability of the unit


class ClassifierDetector(SequenceDetector):
    """The id classifier on the ensemble trainer, with an embedding backend or the negative-log-probability score.

    ``joint``: one model over several machine types (``--machine_type=all``), its units ``type/section``; the
    pipeline tells it each clip's machine type (:attr:`clip_types`), and a path it was not told of takes the name
    of its machine folder (``<type>/<split>/<clip>.wav``). With a frontend that reads spectra, each clip's whole-clip
    log spectrum (:func:`asd_jax.data.features.extract_spectra`, standardised by the training clips' mean and
    standard deviation) rides beside its log-mel features as per-clip data."""

    def __init__(self, method, config, run: RunDir, members, cache_root: str | None = None):
        super().__init__(method, config, run, members, cache_root)
        self.classes: list[str] | None = None
        self.units: list[str] = []
        self.knn: list[backends.Backend] = []
        self._embed_fn = None
        self.joint = loading.several_types(config)  # one model over several machine types
        self.clip_types: dict[str, str] = {}
        self.spectrum_stats: tuple[float, float] | None = None  # the training spectra's mean and std
        self._train_spectra: np.ndarray | None = None  # the training clips' standardised spectra, once read

    @property
    def uses_spectra(self) -> bool:
        return self.section.get("frontend", "spectrogram") in ("dual", "spectrum")

    # the classes decide the head's shape: the model is built once they are known
    def _set_classes(self, classes: list[str], units: list[str]) -> None:
        self.classes, self.units = list(classes), list(units)
        unit_index = {u: i for i, u in enumerate(self.units)}
        classes = (self.classes, [unit_index[c.split("|")[0]] for c in self.classes])
        self.model = self.method.window_model(self.config, classes)
        self.module = self.method.module(self.section, classes)
        self._score_fn = self._embed_fn = None

    @classmethod
    def preflight(cls, method, config) -> None:
        """Refuse an unknown score backend before any data work."""
        backend = config[method.section].backend
        if backend != NEG_LOG_PROB and backend not in backends.BACKENDS:
            raise ValueError(f"id_classifier.backend={backend!r}: choose one of "
                             f"{', '.join((*backends.BACKENDS, NEG_LOG_PROB))}")

    def _backend(self) -> backends.Backend:
        """A fresh embedding backend of the section's settings (:mod:`asd_jax.methods.backends`)."""
        return backends.make_backend(self.section.backend, k=int(self.section.knn_k),
                                     normalise=bool(self.section.get("score_normalise", False)))

    def _units(self, paths: Sequence[str]) -> list[str]:
        """Each path's unit (:func:`unit_key`; ANY_UNIT when its name names none)."""
        sections = units_of(paths)
        if not self.joint:
            return sections
        return [unit_key(self.clip_types.get(p) or os.path.basename(os.path.dirname(os.path.dirname(
            os.path.abspath(p)))), section, True) if section != ANY_UNIT else ANY_UNIT
            for p, section in zip(paths, sections)]

    def _spectra(self, paths: Sequence[str], description: str) -> np.ndarray:
        """The standardised whole-clip log spectra [N, S] of ``paths`` (which loaded as log-mel already)."""
        extracted = extract_spectra(paths, self.features, int(self.section.spectrum_pool), self.cache_root,
                                    self.config.num_workers or None, self.config.progress,
                                    description=f"spectrum ({description})")
        if list(extracted.paths) != list(paths):
            missing = sorted(set(paths) - set(extracted.paths))
            raise ValueError(f"{len(missing)} clip(s) gave log-mel features but no spectrum, e.g. {missing[:1]}: "
                             "remove them and run again")
        if self.spectrum_stats is None:
            self.spectrum_stats = (float(np.mean(extracted.features)), float(np.std(extracted.features)) or 1.0)
        mean, std = self.spectrum_stats
        return ((np.asarray(extracted.features) - mean) / std).astype(np.float32)

    def train_labels(self, clips: Sequence[dcase.Clip]):
        index = {c: i for i, c in enumerate(self.classes)}
        labels = np.asarray([index[class_key(c, self.section.classes, self.joint)] for c in clips], np.int32)
        if not self.uses_spectra:
            return labels
        self._train_spectra = self._spectra([c.path for c in clips], "train")  # kept for the backend's embeddings
        return {"labels": labels, "spectra": self._train_spectra}

    def score_labels(self, paths: Sequence[str], spectra: np.ndarray | None = None):
        """Each clip's unit index (-1: a unit not trained on, or a name that names none), with its spectrum when
        the frontend reads spectra (``spectra``: already extracted, else read here)."""
        index = {u: i for i, u in enumerate(self.units)}
        labels = np.asarray([index.get(unit, -1) for unit in self._units(paths)], np.int32)
        if not self.uses_spectra:
            return labels
        return {"labels": labels, "spectra": self._spectra(list(paths), "scoring") if spectra is None else spectra}

    @property
    def embed_fn(self):
        """``embed(states, clips [n, T, mels], clip data) -> [E, n, D]``: each clip's normalised mean embedding."""
        if self._embed_fn is None:
            module, length = self.module, self.model.window_length
            starts = jnp.arange(0, self.features.num_frames - length + 1, int(self.section.score_hop))
            offsets = jnp.arange(length)

            def member_embed(state, clips, clip_data):
                windows = clips[:, starts[:, None] + offsets].reshape(-1, length, clips.shape[-1])
                spectra = None
                if isinstance(clip_data, dict) and "spectra" in clip_data:
                    spectra = jnp.repeat(clip_data["spectra"], len(starts), axis=0)
                embeddings, _ = module.apply(ensemble.member_variables(state), windows, train=False, spectra=spectra)
                embeddings = model_lib.l2_normalise(embeddings).reshape(clips.shape[0], len(starts), -1).mean(axis=1)
                return model_lib.l2_normalise(embeddings)

            self._embed_fn = jax.jit(jax.vmap(member_embed, in_axes=(0, None, None)))
        return self._embed_fn

    def fit(self, clips, validation_clips=(), stop_after_epoch=None, oracle_clips=None):
        self.clip_types.update({c.path: c.machine_type for c in [*clips, *validation_clips]})
        classes, units = training_classes(clips, self.section.classes, self.config.machine_type, self.joint)
        self._set_classes(classes, units)
        self._write_classes()
        skipped = super().fit(clips, validation_clips, stop_after_epoch, oracle_clips)
        self._write_classes()  # now with the training spectra's statistics
        self.extra_results["classes"] = {"mode": self.section.classes, "count": len(classes), "units": units,
                                         "joint": self.joint}
        self.extra_results["score_backend"] = self.section.backend
        finished = bool(self.history) and self.history[-1]["epoch"] >= self.train_config.epochs
        if self.section.backend != NEG_LOG_PROB and finished:
            self._fit_backend(self.train_features, self._units([c.path for c in self.train_clips]),
                              [c.domain or "" for c in self.train_clips])
        return skipped

    def _write_classes(self) -> None:
        if distributed.is_primary():  # several processes: process 0 writes the run's files
            self.run.write_json(RunDir.CLASSES, {"classes": self.classes, "units": self.units,
                                                 "mode": self.section.classes, "joint": self.joint,
                                                 "spectrum_stats": self.spectrum_stats})

    def _fit_backend(self, features, units: Sequence[str], domains: Sequence[str]) -> None:
        """Every member's embedding backend from the training clips' embeddings, units and domains; the embeddings
        are saved for --mode=score, which fits the same (deterministic) backend again."""
        clip_data = self.score_labels([c.path for c in self.train_clips], self._train_spectra)
        embeddings = inference.score_clips(self.embed_fn, self.states, features, labels=clip_data,
                                           progress=self.config.progress,
                                           description="training embeddings")  # [E, N, D]
        self.knn = [self._backend().fit(e, units, [d or None for d in domains]) for e in embeddings]
        if distributed.is_primary():
            np.savez(self.run.file(RunDir.KNN_EMBEDDINGS), embeddings=embeddings, units=np.asarray(units),
                     domains=np.asarray(domains), k=int(self.section.knn_k))

    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        if self.section.backend == NEG_LOG_PROB:
            return super().score(paths, description)
        extracted = self._extract(paths, description)
        clip_data = self.score_labels(extracted.paths)
        embeddings = inference.score_clips(self.embed_fn, self.states, extracted.features, self.normalizer,
                                           labels=clip_data, progress=self.config.progress, description=description)
        units = self._units(extracted.paths)
        values = np.stack([knn.score(e, units) for knn, e in zip(self.knn, embeddings)]) if units else \
            np.zeros((len(self.members), 0))
        return Scores(values, extracted.paths, extracted.skipped)

    def load_extras(self) -> None:
        path = self.run.file(RunDir.CLASSES)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no {RunDir.CLASSES} in {self.run}: train an id_classifier run there first "
                                    f"(python launch.py --method=id_classifier --workdir={self.run})")
        saved = self.run.read_json(RunDir.CLASSES)
        self.joint = bool(saved.get("joint", False))
        stats = saved.get("spectrum_stats")
        self.spectrum_stats = tuple(stats) if stats else None
        self._set_classes(saved["classes"], saved["units"])
        if self.section.backend != NEG_LOG_PROB:
            knn_path = self.run.file(RunDir.KNN_EMBEDDINGS)
            if not os.path.exists(knn_path):
                raise FileNotFoundError(f"no {RunDir.KNN_EMBEDDINGS} in {self.run}: the run did not finish; run "
                                        "the same training command again (it resumes)")
            with np.load(knn_path) as saved:
                domains = [d or None for d in saved["domains"]] if "domains" in saved else None
                self.knn = [self._backend().fit(e, saved["units"], domains) for e in saved["embeddings"]]
