"""The kNN backend: a clip's anomaly score is its cosine distance to the nearest training clips of its own unit.

A unit is what DCASE scores separately: a machine id (2020) or a section (2021+). The backend keeps one
scikit-learn :class:`~sklearn.neighbors.NearestNeighbors` (cosine metric) per unit, fit on the embeddings of that
unit's normal training clips; the score of a test clip is the mean distance to its ``k`` nearest neighbours (k = 1:
the nearest). A clip whose unit has no training clips (or whose name names none) is compared with every training
clip. It serves the id classifier's embeddings and the clip vectors of the other methods
(``--method=vggish_knn`` / ``logmel_knn``).
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from asd_jax.data import dcase

ANY_UNIT = ""  # the unit of a clip whose name names none


def units_of(paths) -> list[str]:
    """The unit (machine id / section) each path names, or ANY_UNIT."""
    found = [dcase.unit_of(p) for p in paths]
    return [f[0] if f else ANY_UNIT for f in found]


class KNNBackend:
    """Per-unit cosine kNN over clip vectors [N, D]."""

    def __init__(self, k: int = 1):
        if k < 1:
            raise ValueError(f"the kNN backend needs k >= 1; got {k}")
        self.k = int(k)
        self.vectors: np.ndarray | None = None
        self.units: np.ndarray | None = None
        self._index: dict[str, NearestNeighbors] = {}

    def fit(self, vectors: np.ndarray, units) -> "KNNBackend":
        self.vectors = np.asarray(vectors, np.float64)
        self.units = np.asarray([str(u) for u in units])
        if len(self.vectors) != len(self.units):
            raise ValueError(f"{len(self.vectors)} vectors but {len(self.units)} units")
        if len(self.vectors) == 0:
            raise ValueError("the kNN backend needs at least one training clip")
        self._index = {}
        for unit in [*sorted(set(self.units)), ANY_UNIT]:
            chosen = self.vectors if unit == ANY_UNIT else self.vectors[self.units == unit]
            self._index[unit] = NearestNeighbors(n_neighbors=min(self.k, len(chosen)), metric="cosine").fit(chosen)
        return self

    def score(self, vectors: np.ndarray, units) -> np.ndarray:
        """[n] mean cosine distance of each vector to the ``k`` nearest training vectors of its unit."""
        vectors = np.asarray(vectors, np.float64)
        units = [str(u) if str(u) in self._index else ANY_UNIT for u in units]
        scores = np.zeros(len(vectors))
        for unit in set(units):
            rows = np.flatnonzero(np.asarray(units) == unit)
            distances, _ = self._index[unit].kneighbors(vectors[rows])
            scores[rows] = distances.mean(axis=1)
        return scores

    def save(self, path: str, **extra: np.ndarray) -> None:
        np.savez(path, vectors=self.vectors, units=self.units, k=self.k, **extra)

    @classmethod
    def load(cls, path: str) -> "KNNBackend":
        with np.load(path) as saved:
            return cls(int(saved["k"])).fit(saved["vectors"], saved["units"])


def brute_force_scores(train: np.ndarray, train_units, test: np.ndarray, test_units, k: int = 1) -> np.ndarray:
    """The same score by plain NumPy (every distance computed): the reference the tests hold the backend to."""
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    train_units = np.asarray([str(u) for u in train_units])
    unit_set = set(train_units)
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = np.zeros(len(test))
    for row, (vector, unit) in enumerate(zip(test, test_units)):
        pool = a if str(unit) not in unit_set else a[train_units == str(unit)]
        distances = np.sort(1.0 - pool @ (vector / np.linalg.norm(vector)))
        out[row] = distances[:k].mean()
    return out
