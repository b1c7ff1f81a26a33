"""The detector of every ``kind="ensemble"`` method: its members train together on log-mel windows."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import jax
import numpy as np

from asd_jax.data.dcase import Clip
from asd_jax.data.features import Normalizer, extract_features
from asd_jax.data.loading import feature_config
from asd_jax.methods import inference
from asd_jax.methods.base import Detector, Scores
from asd_jax.rundir import RunDir
from asd_jax.train import ensemble

log = logging.getLogger(__name__)


class SequenceDetector(Detector):
    """Trains the members on normalised log-mel windows; a clip's score is its mean window error per member.

    ``members`` share every array shape and the step count (one compiled program); each carries its seed and its
    shape-free optimiser values. Held-out normal clips given to :meth:`fit` are scored after every
    ``validate_every_epochs`` epochs (the curve's held-out error).
    """

    multiprocess = True

    def __init__(self, method, config, run: RunDir, members: Sequence[ensemble.Member], cache_root: str | None = None):
        self.config, self.run, self.cache_root = config, run, cache_root
        self.method = method
        self.section = config[self.method.section]
        self.model = self.method.window_model(config)
        self.members = list(members)
        self.member_names = [m.name for m in self.members]
        self.features = feature_config(config)
        self.train_config = ensemble.TrainConfig.from_section(self.section.train)
        self.normalizer: Normalizer | None = None
        self.states = None
        self.history: list[dict] = []
        self.compiles = 0
        self.diverged: list[str] = []
        self.quiet: list[dict] = []  # silent or near-silent clips met so far (still used)
        self.extra_results: dict = {}
        self._score_fn = None

    @property
    def score_fn(self):
        if self._score_fn is None:
            self._score_fn = inference.make_score_fn(self.model, self.section.score_hop, self.features.num_frames)
        return self._score_fn

    def _extract(self, paths: list[str], description: str):
        extracted = extract_features(paths, self.features, self.cache_root, self.config.num_workers or None,
                                     self.config.progress, f"log-mel ({description})")
        self.quiet += extracted.quiet
        return extracted

    def train_labels(self, clips: Sequence[Clip]) -> np.ndarray | None:
        """Each training clip's class label [N] for a method that learns classes (``Method.labels``); None here."""
        return None

    def score_labels(self, paths: Sequence[str]) -> np.ndarray | None:
        """The label each scored clip's windows carry (e.g. its unit), or None."""
        return None

    def fit(self, clips: list[Clip], validation_clips: Sequence[Clip] = (), stop_after_epoch: int | None = None,
            oracle_clips=None) -> list[dict]:
        del oracle_clips  # nothing here is chosen on test labels
        extracted = self._extract([c.path for c in clips], "train")
        if len(extracted.paths) == 0:
            raise ValueError("none of the training clips could be read; see the skipped files above")
        self.normalizer = Normalizer.fit(extracted.features)
        self.normalizer.save(self.run.file(RunDir.NORMALIZER))
        device_features = _normalise_on_device(extracted.features, self.normalizer)
        by_path = {c.path: c for c in clips}
        self.train_clips = [by_path[p] for p in extracted.paths]  # the clips that loaded, in the features' order
        self.train_features = device_features
        labels = self.train_labels(self.train_clips)
        validate, skipped = None, list(extracted.skipped)
        if validation_clips:
            held_out = self._extract([c.path for c in validation_clips], "held-out normals")
            skipped += held_out.skipped
            if len(held_out.paths):
                held_out_features = _normalise_on_device(held_out.features, self.normalizer)
                held_out_labels = self.score_labels(held_out.paths)
                validate = lambda states: inference.score_clips(self.score_fn, states, held_out_features,
                                                                labels=held_out_labels).mean(axis=1)
        result = ensemble.train_ensemble(
            self.model, self.members, device_features, self.train_config, self.run, self.config.progress,
            stop_after_epoch, labels=None if labels is None else jax.device_put(labels), validate=validate)
        self.states, self.history, self.compiles = result.states, result.history, result.compiles
        self.diverged = result.diverged
        finite = np.asarray(self.states.finite)
        self.extra_results = {"members_frozen": [n for n, ok in zip(self.member_names, finite) if not ok],
                              "train_clips": len(extracted.paths),
                              "final_train_loss": self.history[-1]["loss"] if self.history else None}
        return skipped

    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        extracted = self._extract(paths, description)
        values = inference.score_clips(self.score_fn, self.states, extracted.features, self.normalizer,
                                       labels=self.score_labels(extracted.paths), progress=self.config.progress,
                                       description=description)
        return Scores(values, extracted.paths, extracted.skipped)

    def load_extras(self) -> None:
        """Read what a subclass saved beside the checkpoints (before the states are restored)."""

    @classmethod
    def restore(cls, method, config, run: RunDir, members: Sequence[ensemble.Member]) -> "SequenceDetector":
        detector = cls(method, config, run, members, cache_root="")
        detector.load_extras()
        detector.normalizer = Normalizer.load(run.file(RunDir.NORMALIZER))
        optimizer = detector.train_config.make_optimizer(1)  # the structure only: the values are in the checkpoint
        detector.states = inference.restore_states(run, detector.model, detector.members, detector.features.num_bins,
                                                   optimizer)
        return detector


def _normalise_on_device(features: np.ndarray, normalizer: Normalizer) -> jax.Array:
    """Send the raw features once and normalise them there (no normalised copy on the host)."""
    raw = jax.device_put(np.asarray(features))
    return jax.jit(lambda x, mean, std: (x - mean) / std, donate_argnums=0)(raw, normalizer.mean, normalizer.std)
