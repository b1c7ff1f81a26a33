"""Detectors on one vector per clip (VGGish embedding or log-mel statistics): write-up Method I (-> OC-SVM) and the
kNN backend (``vggish_knn`` / ``logmel_knn``). Where the vectors come from is the method's ``vector_source``."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence

import numpy as np
from sklearn.preprocessing import StandardScaler

from asd_jax.data.dcase import Clip
from asd_jax.data.features import extract_features
from asd_jax.data.loading import feature_config, split_list
from asd_jax.embeddings.vggish import clip_embeddings, resolve_source
from asd_jax.methods import ocsvm
from asd_jax.methods.base import Detector, Scores
from asd_jax.methods.knn import KNNBackend, units_of
from asd_jax.rundir import RunDir

class OCSVMDetector(Detector):
    """``StandardScaler -> OneClassSVM`` on clip vectors; ``gamma`` and ``nu`` chosen on a grid.

    ``vggish_ocsvm`` pools VGGish embeddings (TF-Hub model, or its Flax port); ``logmel_ocsvm`` uses the per-bin
    mean and std of the log-mel spectrogram and needs no pretrained weights.
    """

    def __init__(self, method, config, run: RunDir, members=(), cache_root: str | None = None):
        self.method, self.config, self.run, self.cache_root = method, config, run, cache_root
        self.member_names = [members[0].name] if members else ["ocsvm"]
        self.compiles = 0
        self.quiet: list[dict] = []
        self.pipeline = None
        self.extra_results: dict = {}

    pooling_section = "ocsvm"

    @classmethod
    def preflight(cls, method, config) -> None:
        """VGGish decodes the audio itself: refuse a channel setting it would not read, and fail at once when the
        pretrained model cannot be had."""
        if method.vector_source != "vggish":
            return
        if str(config.features.get("channel", "mean")).strip().lower() not in ("mean", "auto"):
            raise ValueError(f"features.channel={config.features.channel!r} is not read by {config.method} (VGGish "
                             "decodes the audio itself and averages the channels); leave it 'auto' or 'mean'")
        resolve_source(config.vggish.handle)

    @property
    def selects_on_test_labels(self) -> bool:
        return self.config.ocsvm.select == "oracle"

    def vectors(self, paths: list[str], description: str) -> tuple[np.ndarray, list[str], list[dict]]:
        """(clip vectors [n, dims], paths that loaded, skipped clips)."""
        if self.method.vector_source == "logmel":
            extracted = extract_features(paths, feature_config(self.config), self.cache_root,
                                         self.config.num_workers or None, self.config.progress,
                                         f"log-mel ({description})")
            self.quiet += extracted.quiet
            return ocsvm.logmel_stats(extracted.features), extracted.paths, extracted.skipped
        vggish = self.config.vggish
        embedded = clip_embeddings(paths, handle=vggish.handle, backend=vggish.backend,
                                   pooling=self.config[self.pooling_section].pooling, cache_root=self.cache_root,
                                   batch_size=vggish.batch_size, progress=self.config.progress,
                                   duration_s=feature_config(self.config).duration_s)
        return embedded.vectors, embedded.paths, embedded.skipped

    def fit(self, clips: list[Clip], validation_clips: Sequence[Clip] = (),
            oracle_clips: Sequence[Clip] | None = None) -> list[dict]:
        """Fit on normal training clips; ``oracle_clips`` (labelled test clips) only with ``select=oracle``."""
        settings = self.config.ocsvm
        train_vectors, _, skipped = self.vectors([c.path for c in clips], "train")
        oracle = {}
        if settings.select == "oracle":
            if not oracle_clips:
                raise ValueError("--ocsvm_select=oracle needs labelled test clips")
            test_vectors, test_paths, _ = self.vectors([c.path for c in oracle_clips], "test")
            by_path = {c.path: c for c in oracle_clips}
            oracle = dict(test_vectors=test_vectors, test_labels=np.array([by_path[p].label for p in test_paths]),
                          test_machine_ids=[by_path[p].machine_id for p in test_paths])
        best, _ = ocsvm.select(train_vectors, split_list(settings.gammas), split_list(settings.nus),
                               holdout_fraction=settings.holdout_fraction, seed=self.config.seed,
                               mode=settings.select, results=self.extra_results, **oracle)
        self.pipeline = ocsvm.fit(train_vectors, ocsvm.parse_gamma(best["gamma"]), best["nu"])
        with open(self.run.file(RunDir.OCSVM), "wb") as handle:
            pickle.dump(self.pipeline, handle)
        return skipped

    @property
    def test_tuned_note(self) -> str:
        if self.extra_results.get("ocsvm", {}).get("test_tuned", False):
            return "hyper-parameters chosen by test AUC (--ocsvm_select=oracle): TEST-TUNED"
        return ""

    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        vectors, kept, skipped = self.vectors(paths, description)
        values = ocsvm.anomaly_scores(self.pipeline, vectors) if len(kept) else np.zeros(0)
        return Scores(np.asarray(values, np.float64)[None, :], kept, skipped)

    @classmethod
    def restore(cls, method, config, run: RunDir, members=()) -> "OCSVMDetector":
        detector = cls(method, config, run, members, cache_root="")
        detector.pipeline = _load_pickle(run, RunDir.OCSVM, "OC-SVM", config.method)
        return detector


class KNNVectorDetector(OCSVMDetector):
    """Clip vectors -> ``StandardScaler`` (fit on the training clips; ``knn.standardize``) -> the cosine kNN
    backend per unit (:mod:`asd_jax.methods.knn`): ``vggish_knn`` and ``logmel_knn``."""

    pooling_section = "knn"

    @property
    def selects_on_test_labels(self) -> bool:
        return False  # nothing is tuned

    def fit(self, clips: list[Clip], validation_clips: Sequence[Clip] = (),
            oracle_clips: Sequence[Clip] | None = None) -> list[dict]:
        del validation_clips, oracle_clips  # nothing is tuned
        settings = self.config.knn
        vectors, kept, skipped = self.vectors([c.path for c in clips], "train")
        if not kept:
            raise ValueError("none of the training clips could be read; see the skipped files above")
        by_path = {c.path: c for c in clips}
        self.scaler = StandardScaler().fit(vectors) if settings.standardize else None
        self.knn = KNNBackend(int(settings.k)).fit(self._scaled(vectors), [by_path[p].section for p in kept])
        with open(self.run.file(RunDir.KNN), "wb") as handle:
            pickle.dump({"scaler": self.scaler, "knn": self.knn}, handle)
        self.extra_results = {"knn": {"k": int(settings.k), "standardize": bool(settings.standardize),
                                      "train_clips": len(kept)}}
        return skipped

    def _scaled(self, vectors: np.ndarray) -> np.ndarray:
        return self.scaler.transform(vectors) if self.scaler is not None else vectors

    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        vectors, kept, skipped = self.vectors(paths, description)
        if not kept:
            return Scores(np.zeros((1, 0)), kept, skipped)
        return Scores(self.knn.score(self._scaled(vectors), units_of(kept))[None, :], kept, skipped)

    @classmethod
    def restore(cls, method, config, run: RunDir, members=()) -> "KNNVectorDetector":
        detector = cls(method, config, run, members, cache_root="")
        saved = _load_pickle(run, RunDir.KNN, "kNN backend", config.method)
        detector.scaler, detector.knn = saved["scaler"], saved["knn"]
        return detector


def _load_pickle(run: RunDir, name: str, what: str, method: str):
    """A trained detector's pickle from the run dir, or an error that says how to make it."""
    path = run.file(name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no trained {what} at {path}: train a run there first "
                                f"(python launch.py --method={method} --workdir={run})")
    with open(path, "rb") as handle:
        return pickle.load(handle)
