"""The window-based methods (LSTM predictor, GRU autoencoder, DCASE dense AE) on the shared ensemble trainer."""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.config import split_list
from asd_jax.data.dcase import Clip
from asd_jax.data.features import FeatureConfig, Normalizer, extract_features
from asd_jax.methods.base import Detector, Scores
from asd_jax.models import dense_ae, gru_autoencoder, lstm_predictor
from asd_jax.train import ensemble

log = logging.getLogger(__name__)


def build_model(method: str, config) -> ensemble.WindowModel:
    """The :class:`WindowModel` of a sequence method, from its config section."""
    section = config[method]
    if method == "lstm":
        module = lstm_predictor.LSTMPredictor(section.hidden_size, section.num_layers)
        return ensemble.WindowModel(
            "lstm", section.context + 1,
            init=lambda key, length, mels: module.init(key, jnp.zeros((1, length - 1, mels))),
            errors=lambda variables, windows, train: (lstm_predictor.prediction_errors(module, variables, windows),
                                                      None))
    if method == "gru_ae":
        module = gru_autoencoder.GRUAutoencoder(section.hidden_size, section.num_layers)
        return ensemble.WindowModel(
            "gru_ae", section.sequence_length,
            init=lambda key, length, mels: module.init(key, jnp.zeros((1, length, mels))),
            errors=lambda variables, windows, train: (gru_autoencoder.reconstruction_errors(module, variables, windows),
                                                      None))
    if method == "dense_ae":
        module = dense_ae.DenseAutoencoder(section.hidden_size, section.bottleneck)
        return ensemble.WindowModel(
            "dense_ae", section.frames,
            init=lambda key, length, mels: module.init(key, jnp.zeros((2, length, mels)), train=False),
            errors=lambda variables, windows, train: dense_ae.reconstruction_errors(module, variables, windows, train))
    raise ValueError(f"unknown sequence method {method!r}; choose one of lstm, gru_ae, dense_ae")


def feature_config(config) -> FeatureConfig:
    return FeatureConfig(**config.features.to_dict())


def members_from_config(config) -> list[ensemble.Member]:
    """``num_seeds`` seeds from ``seed`` upwards, times every learning rate in the method's (comma) list."""
    rates = [float(r) for r in split_list(str(config[config.method].train.learning_rate))]
    return ensemble.members_grid(range(config.seed, config.seed + config.num_seeds), rates)


def train_config(config) -> ensemble.TrainConfig:
    train = config[config.method].train
    return ensemble.TrainConfig(train.epochs, train.batch_size, train.windows_per_clip, train.steps_per_call,
                                train.grad_clip_norm, train.checkpoint_every_epochs)


class SequenceDetector(Detector):
    """Trains the ensemble on normalised log-mel windows; a clip's score is its mean window error per member."""

    def __init__(self, config, workdir: str, cache_root: str | None = None):
        self.config, self.workdir, self.cache_root = config, workdir, cache_root
        self.model = build_model(config.method, config)
        self.members = members_from_config(config)
        self.member_names = [m.name for m in self.members]
        self.features = feature_config(config)
        self.normalizer: Normalizer | None = None
        self.states = None
        self.history: list[dict] = []
        self.extra_results: dict = {}

    def fit(self, clips: list[Clip], stop_after_epoch: int | None = None) -> list[dict]:
        extracted = extract_features([c.path for c in clips], self.features, self.cache_root,
                                     self.config.num_workers or None, self.config.progress, "log-mel (train)")
        if len(extracted.paths) == 0:
            raise ValueError("none of the training clips could be read; see the skipped files above")
        self.normalizer = Normalizer.fit(extracted.features)
        self.normalizer.save(os.path.join(self.workdir, "normalizer.npz"))
        device_features = _normalise_on_device(extracted.features, self.normalizer)
        self.states, self.history = ensemble.train_ensemble(
            self.model, self.members, device_features, train_config(self.config), self.workdir,
            self.config.progress, stop_after_epoch)
        finite = np.asarray(self.states.finite)
        self.extra_results = {"members_frozen": [n for n, ok in zip(self.member_names, finite) if not ok],
                              "train_clips": len(extracted.paths), "final_train_loss": self.history[-1]["loss"]
                              if self.history else None}
        return extracted.skipped

    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        extracted = extract_features(paths, self.features, self.cache_root, self.config.num_workers or None,
                                     self.config.progress, f"log-mel ({description})")
        section = self.config[self.config.method]
        score_fn = ensemble.make_score_fn(self.model, section.score_hop, self.features.num_frames)
        values = ensemble.score_clips(score_fn, self.states, extracted.features, self.normalizer,
                                      progress=self.config.progress, description=description)
        return Scores(values, extracted.paths, extracted.skipped)

    @classmethod
    def restore(cls, config, workdir: str) -> "SequenceDetector":
        detector = cls(config, workdir, cache_root="")
        detector.normalizer = Normalizer.load(os.path.join(workdir, "normalizer.npz"))
        detector.states = ensemble.restore_states(workdir, detector.model, detector.members,
                                                  detector.features.n_mels,
                                                  config[config.method].train.grad_clip_norm)
        return detector


def _normalise_on_device(features: np.ndarray, normalizer: Normalizer) -> jax.Array:
    """Send the raw features once and normalise them there (no normalised copy on the host)."""
    raw = jax.device_put(np.asarray(features))
    return jax.jit(lambda x, mean, std: (x - mean) / std, donate_argnums=0)(raw, normalizer.mean, normalizer.std)
