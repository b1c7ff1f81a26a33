"""Scoring backends: turn clip embeddings into anomaly scores per unit, robust to the DCASE domain shift.

A unit is what DCASE scores separately (a machine id in 2020, a section from 2021). Every backend keeps, per unit, a
*memory* of L2-normalised vectors built from that unit's normal training clips, each entry in a bank (source or
target) and with a divisor (1 except for ``knn_rescale``). With ``d(x, m) = 1 - cos(x, m)`` the cosine distance and
``mean_k`` the mean of the ``k`` smallest values (all of them when a bank holds fewer), a clip ``x`` scores

    s(x) = min over the unit's banks b of  mean_k_b { d'(x, m) / c(m) : m in bank b }      (higher = more anomalous)

The domain of a test clip is never needed: the minimum over the banks lets a clip match whichever domain it is
closest to. The backends, after the backends of ASDKit (Fujimura et al., arXiv 2507.10264; the files named are in
github.com/TakuyaFujimura/dcase-asd-toolkit, defaults from ``config/score/experiments/default.yaml``):

* ``knn``: one bank of every training clip of the unit (domains pooled), ``d' = d``, ``k = 1``; exactly the scores of
  :class:`asd_jax.methods.knn.KNNBackend`.
* ``knn_domain``: a source bank and a target bank (clips of unknown domain count as source), ``k`` neighbours in the
  source bank and ``k_target`` (default ``k``) in the target bank; ASDKit's ``Knn`` (``asdkit/backends/knn.py``,
  ``n_neighbors_so = n_neighbors_ta = 1``), the separate-memory-bank scoring of Wilkinghoff's domain-generalisation
  systems.
* ``kmeans``: the source bank replaced by the ``clusters`` (16) k-means centres of the unit's normalised source clips
  (scikit-learn ``KMeans``, ``random_state=seed``, ``n_init=1``: what ASDKit's ``n_init="auto"`` means for k-means++
  in scikit-learn >= 1.4), re-normalised; the target bank kept whole. A unit with at most ``clusters`` source clips
  keeps the clips themselves. ASDKit's ``Kmeans`` (``asdkit/backends/kmeans.py``; Wilkinghoff, "Design choices for
  learning embeddings from auxiliary tasks for domain generalization in anomalous sound detection", ICASSP 2023).
* ``smote``: ``knn_domain`` with the target bank enlarged by SMOTE: ``int(ratio * N_source - N_target)`` synthetic
  target vectors (ratio 0.2), so that the target bank holds about ``ratio`` times as many entries as the source
  bank: the count of imbalanced-learn's ``SMOTE(sampling_strategy=ratio)`` in ASDKit's ``Knn``
  (``smote_ratio=0.2, smote_neighbors=2``). Each is ``normalise(t_i + u (t_j - t_i))``: ``t_i`` a target clip drawn
  uniformly, ``t_j`` one of its ``smote_neighbors`` nearest other target clips drawn uniformly, ``u ~ U[0, 1)``;
  seeded by ``seed`` per unit (NumPy's generator: the draws are not imbalanced-learn's, which is no dependency). None
  is made when the count is not positive or the unit has fewer than two target clips, and ``smote_neighbors`` is
  capped at ``N_target - 1`` (imbalanced-learn raises an error in these cases).
* ``knn_rescale``: local-density rescaled kNN, ASDKit's ``KnnRescale`` (``asdkit/backends/knn.py``; Wilkinghoff et
  al., "Keeping the balance: anomaly score calculation for domain generalization", ICASSP 2025). One bank of every
  clip of the unit (domains pooled); distances are Euclidean between the normalised vectors,
  ``d'(x, m) = ||x - m|| = sqrt(2 d(x, m))``, and each bank entry is divided by its own local scale
  ``c(m) = mean_k_ref { d'(m, m') : m' another entry of the bank }`` (``k_ref = 4``), so dense and sparse regions
  (a well-sampled source domain, a sparse target domain) score on one scale; the score is the mean of the ``k`` (1)
  smallest rescaled distances. A unit of one clip has no neighbour to measure: its scale is 1; scales are floored
  at 1e-12 (duplicate clips).

Against ASDKit: memories are built per unit (ASDKit's default ``sep_section=False`` pools all sections of a machine
type). Per unit, ``kmeans`` scores are ASDKit's values (its cosine distance, half the squared Euclidean distance of
normalised vectors, is ``d``), and so are ``knn_rescale``'s (the ratio is ASDKit's). ``knn`` / ``knn_domain`` /
``smote`` average cosine distances where ASDKit averages half Euclidean distances, ``sqrt(d / 2)``; for ``k = 1``
(ASDKit's setting) one is a monotone map of the other, so the scores rank alike.

A clip whose unit has no training clips, or whose name names none (:data:`ANY_UNIT`), is compared with the union of
every unit's memory (each entry keeps its bank and scale), as :mod:`asd_jax.methods.knn` compares it with every
training clip.

**Score normalisation** (``normalise=True``, every backend): a unit's scores become ``(s - mean_u) / std_u``, the
mean and (population) standard deviation of the unit's training clips scored leave-one-out: each training clip
against its unit's memory without the entries made from it (the clip itself, and SMOTE vectors interpolated from
it); k-means centres and local scales, which summarise many clips, are kept. Leave-one-out rather than held-out
clips: the target domain has 3-10 clips per section and a hold-out would take them from the memory, while a clip
scored in-sample is at distance 0 from itself. The map is monotone per unit, so per-unit AUCs do not change, but
sections and machine types come onto one threshold scale. A unit whose clips give no leave-one-out score (a single
clip) uses the statistics of all training clips scored against the union; a standard deviation of 0 counts as 1.

A fitted backend pickles, and :meth:`Backend.to_arrays` / :func:`from_arrays` store it in ``np.savez`` files.
Pure NumPy / scikit-learn.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from asd_jax.methods.knn import ANY_UNIT

SOURCE, TARGET = 0, 1
DOMAINS = {None: SOURCE, "source": SOURCE, "target": TARGET}
_CHUNK = 1 << 22  # distance-matrix entries computed at once
_TINY = 1e-12


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero)."""
    vectors = np.asarray(vectors, np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), _TINY)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] ``1 - cos`` between the rows of normalised ``a`` and ``b``, clipped to [0, 2] as scikit-learn does."""
    return np.clip(1.0 - a @ b.T, 0.0, 2.0)


def _mean_smallest(distances: np.ndarray, k: int) -> np.ndarray:
    """[n] the mean of each row's ``k`` smallest finite entries (all of them when fewer; inf when none)."""
    k = min(k, distances.shape[1])
    if k < distances.shape[1]:
        distances = np.partition(distances, k - 1, axis=1)[:, :k]
    finite = np.isfinite(distances)
    count = finite.sum(axis=1)
    total = np.where(finite, distances, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def _whole(name: str, value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if isinstance(value, bool) or not number.is_integer() or number < 1:
        raise ValueError(f"backend option {name} must be a whole number >= 1; got {value!r}")
    return int(number)


def _matrix(embeddings, what: str = "embeddings") -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [clips, dims]; got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        raise ValueError(f"{what} hold NaN or inf values: check the model that produced them")
    return embeddings


def _names(units, count: int) -> np.ndarray:
    units = np.asarray([str(u) for u in units], dtype=str)
    if len(units) != count:
        raise ValueError(f"{count} embeddings but {len(units)} units: give one unit (section or machine id, "
                         f"{ANY_UNIT!r} for none) per clip")
    return units


def _targets(domains, count: int) -> np.ndarray:
    if domains is None:
        return np.zeros(count, bool)
    domains = list(domains)
    if len(domains) != count:
        raise ValueError(f"{count} embeddings but {len(domains)} domains: give one domain per clip, or domains=None")
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domain {unknown[0]!r}: a clip's domain is 'source', 'target' or None "
                         "(unknown, counted as source)")
    return np.asarray([DOMAINS[d] == TARGET for d in domains], bool)


@dataclass
class Memory:
    """What one unit's clips are compared with: ``vectors`` [M, D] (normalised), each entry's ``bank`` [M]
    (SOURCE / TARGET) and distance divisor ``scale`` [M]."""

    vectors: np.ndarray
    bank: np.ndarray
    scale: np.ndarray

    @staticmethod
    def join(memories: Sequence["Memory"]) -> "Memory":
        return Memory(*(np.concatenate([getattr(m, f) for m in memories]) for f in ("vectors", "bank", "scale")))


class Backend:
    """Fit on the normal training embeddings of every unit, then score clips; higher = more anomalous."""

    name = ""

    def __init__(self, k: int = 1, normalise: bool = False):
        self.k = _whole("k", k)
        self.normalise = bool(normalise)
        self.memory: dict[str, Memory] = {}
        self.statistics: dict[str, tuple[float, float]] = {}

    @property
    def neighbours(self) -> tuple[int, int]:
        """(source, target) bank neighbour counts."""
        return self.k, self.k

    def options(self) -> dict:
        """The constructor's arguments, as :func:`make_backend` takes them."""
        return {p: getattr(self, p) for p in inspect.signature(type(self).__init__).parameters if p != "self"}

    # ------------------------------------------------------------------------------------------------------ fitting
    def fit(self, embeddings: np.ndarray, units: Sequence[str], domains: Sequence[str | None] | None = None
            ) -> "Backend":
        """Build each unit's memory from its training clips' embeddings [N, D]; ``domains``: 'source' / 'target' /
        None per clip (None, or ``domains=None``: source)."""
        vectors = _matrix(embeddings)
        units = _names(units, len(vectors))
        is_target = _targets(domains, len(vectors))
        if not len(vectors):
            raise ValueError(f"the {self.name} backend needs at least one training clip: fit it on the normal "
                             "training clips' embeddings")
        vectors = l2_normalise(vectors)
        self.memory, origins = {}, {}
        for unit in sorted(set(units.tolist())):
            rows = np.flatnonzero(units == unit)
            self.memory[unit], origin = self._build(vectors[rows], is_target[rows])
            origins[unit] = np.where(origin >= 0, rows[np.maximum(origin, 0)], -1)
        self.statistics = self._standardisers(vectors, units, origins) if self.normalise else {}
        return self

    def _build(self, vectors: np.ndarray, is_target: np.ndarray) -> tuple[Memory, np.ndarray]:
        """(memory, origins [M, 2]): one unit's memory and, per entry, the clips (rows of ``vectors``) it was made
        from (-1: none, an entry that summarises many)."""
        rows = np.arange(len(vectors))
        return Memory(vectors, np.full(len(vectors), SOURCE), np.ones(len(vectors))), np.stack([rows, rows], 1)

    def _standardisers(self, vectors: np.ndarray, units: np.ndarray, origins: dict[str, np.ndarray]
                       ) -> dict[str, tuple[float, float]]:
        """Per unit (and ANY_UNIT: every clip against the union) the mean and std of leave-one-out scores."""
        every = sorted(self.memory)
        rows = np.arange(len(vectors))
        union = Memory.join([self.memory[u] for u in every])
        fallback = _mean_std(self._raw(vectors, union, rows, np.concatenate([origins[u] for u in every])))
        statistics = {ANY_UNIT: fallback or (0.0, 1.0)}
        for unit in every:
            if unit != ANY_UNIT:
                rows = np.flatnonzero(units == unit)
                scores = self._raw(vectors[rows], self.memory[unit], rows, origins[unit])
                statistics[unit] = _mean_std(scores) or statistics[ANY_UNIT]
        return statistics

    # ------------------------------------------------------------------------------------------------------ scoring
    def _distance(self, cosine: np.ndarray) -> np.ndarray:
        """The distance the backend averages, from cosine distances."""
        return cosine

    def _raw(self, queries: np.ndarray, memory: Memory, ids: np.ndarray | None = None,
             origins: np.ndarray | None = None) -> np.ndarray:
        """[n] unnormalised scores of normalised ``queries``; with ``ids`` / ``origins``, each query ignores the
        entries made from it (inf when nothing is left)."""
        banks = [(memory.bank == bank, k) for bank, k in zip((SOURCE, TARGET), self.neighbours)]
        banks = [(np.flatnonzero(chosen), k) for chosen, k in banks if chosen.any()]
        scores = np.empty(len(queries))
        step = max(1, _CHUNK // len(memory.vectors))
        for start in range(0, len(queries), step):
            stop = min(start + step, len(queries))
            distances = self._distance(cosine_distances(queries[start:stop], memory.vectors)) / memory.scale
            if ids is not None:
                mine = ids[start:stop, None]
                distances[(origins[:, 0] == mine) | (origins[:, 1] == mine)] = np.inf
            best = np.full(stop - start, np.inf)
            for columns, k in banks:
                best = np.minimum(best, _mean_smallest(distances[:, columns], k))
            scores[start:stop] = best
        return scores

    def score(self, embeddings: np.ndarray, units: Sequence[str]) -> np.ndarray:
        """[n] anomaly scores of clip embeddings [n, D] given each clip's unit (no domain needed)."""
        if not self.memory:
            raise RuntimeError(f"the {self.name} backend is not fitted: call fit(training embeddings, units, "
                               "domains) first")
        vectors = _matrix(embeddings)
        dims = next(iter(self.memory.values())).vectors.shape[1]
        if len(vectors) and vectors.shape[1] != dims:
            raise ValueError(f"embeddings of {vectors.shape[1]} dims but the backend was fit on {dims}: score with "
                             "the embeddings of the model it was fit with")
        units = _names(units, len(vectors))
        units = np.asarray([u if u in self.memory and u != ANY_UNIT else ANY_UNIT for u in units], dtype=str)
        vectors = l2_normalise(vectors)
        scores = np.zeros(len(vectors))
        for unit in sorted(set(units.tolist())):
            rows = np.flatnonzero(units == unit)
            memory = Memory.join([self.memory[u] for u in sorted(self.memory)]) if unit == ANY_UNIT \
                else self.memory[unit]
            scores[rows] = self._raw(vectors[rows], memory)
            if self.normalise:
                mean, std = self.statistics[unit]
                scores[rows] = (scores[rows] - mean) / std
        return scores

    # ------------------------------------------------------------------------------------------------------ storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays for ``np.savez`` (read back by :func:`from_arrays`)."""
        if not self.memory:
            raise RuntimeError(f"the {self.name} backend is not fitted: call fit first, then save it")
        units = sorted(self.memory)
        joined = Memory.join([self.memory[u] for u in units])
        statistics = sorted(self.statistics)
        return {"backend": np.asarray(self.name), "options": np.asarray(json.dumps(self.options())),
                "memory_units": np.asarray([u for u in units for _ in range(len(self.memory[u].vectors))], dtype=str),
                "memory_vectors": joined.vectors, "memory_bank": joined.bank, "memory_scale": joined.scale,
                "statistic_units": np.asarray(statistics, dtype=str),
                "statistic_values": np.asarray([self.statistics[u] for u in statistics], np.float64).reshape(-1, 2)}


def _mean_std(scores: np.ndarray) -> tuple[float, float] | None:
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return None
    std = float(scores.std())
    return float(scores.mean()), std if std > _TINY else 1.0


class PooledKNN(Backend):
    """``knn``: the mean cosine distance to the ``k`` nearest training clips of the unit, domains pooled."""

    name = "knn"


class DomainKNN(Backend):
    """``knn_domain``: the smaller of the kNN distances to the unit's source bank and target bank."""

    name = "knn_domain"

    def __init__(self, k: int = 1, k_target: int | None = None, normalise: bool = False):
        super().__init__(k, normalise)
        self.k_target = None if k_target is None else _whole("k_target", k_target)

    @property
    def neighbours(self) -> tuple[int, int]:
        return self.k, self.k if self.k_target is None else self.k_target

    def _build(self, vectors, is_target):
        rows = np.arange(len(vectors))
        order = np.concatenate([rows[~is_target], rows[is_target]])
        bank = np.where(is_target[order], TARGET, SOURCE)
        return Memory(vectors[order], bank, np.ones(len(order))), np.stack([order, order], 1)


class KMeansKNN(DomainKNN):
    """``kmeans``: the unit's source bank summarised by its k-means centres, its target bank kept whole."""

    name = "kmeans"

    def __init__(self, clusters: int = 16, k: int = 1, k_target: int | None = None, n_init: int = 1, seed: int = 0,
                 normalise: bool = False):
        super().__init__(k, k_target, normalise)
        self.clusters = _whole("clusters", clusters)
        self.n_init = _whole("n_init", n_init)
        self.seed = int(seed)

    def _build(self, vectors, is_target):
        memory, origins = super()._build(vectors, is_target)
        source = memory.bank == SOURCE
        if source.sum() <= self.clusters:
            return memory, origins
        kmeans = KMeans(n_clusters=self.clusters, n_init=self.n_init, random_state=self.seed)
        centres = l2_normalise(kmeans.fit(memory.vectors[source]).cluster_centers_)
        targets = memory.vectors[~source]
        bank = np.concatenate([np.full(len(centres), SOURCE), np.full(len(targets), TARGET)])
        origins = np.concatenate([np.full((len(centres), 2), -1), origins[~source]])
        return Memory(np.concatenate([centres, targets]), bank, np.ones(len(bank))), origins


class SMOTEKNN(DomainKNN):
    """``smote``: ``knn_domain`` with the unit's target bank enlarged by SMOTE interpolation."""

    name = "smote"

    def __init__(self, k: int = 1, k_target: int | None = None, ratio: float = 0.2, smote_neighbors: int = 2,
                 seed: int = 0, normalise: bool = False):
        super().__init__(k, k_target, normalise)
        if not ratio >= 0:
            raise ValueError(f"backend option ratio (target bank size / source bank size) must be >= 0; got {ratio}")
        self.ratio = float(ratio)
        self.smote_neighbors = _whole("smote_neighbors", smote_neighbors)
        self.seed = int(seed)

    def synthetic_count(self, n_source: int, n_target: int) -> int:
        """How many synthetic target vectors a unit with these clip counts gets."""
        return max(0, int(self.ratio * n_source - n_target)) if n_target >= 2 else 0

    def _build(self, vectors, is_target):
        memory, origins = super()._build(vectors, is_target)
        targets = np.flatnonzero(memory.bank == TARGET)
        count = self.synthetic_count(len(memory.bank) - len(targets), len(targets))
        if not count:
            return memory, origins
        clips = memory.vectors[targets]
        distances = cosine_distances(clips, clips)
        np.fill_diagonal(distances, np.inf)
        width = min(self.smote_neighbors, len(targets) - 1)
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :width]
        rng = np.random.default_rng(self.seed)
        base, column = np.divmod(rng.integers(0, len(targets) * width, size=count), width)
        other = nearest[base, column]
        steps = rng.random(count)[:, None]
        synthetic = l2_normalise(clips[base] + steps * (clips[other] - clips[base]))
        parents = np.stack([origins[targets[base], 0], origins[targets[other], 0]], 1)
        bank = np.concatenate([memory.bank, np.full(count, TARGET)])
        return Memory(np.concatenate([memory.vectors, synthetic]), bank, np.ones(len(bank))), \
            np.concatenate([origins, parents])


class RescaledKNN(Backend):
    """``knn_rescale``: kNN on Euclidean distances between normalised vectors, each divided by the bank entry's
    mean distance to its ``k_ref`` nearest other entries (local density)."""

    name = "knn_rescale"

    def __init__(self, k: int = 1, k_ref: int = 4, normalise: bool = False):
        super().__init__(k, normalise)
        self.k_ref = _whole("k_ref", k_ref)

    def _distance(self, cosine):
        return np.sqrt(2.0 * cosine)

    def _build(self, vectors, is_target):
        memory, origins = super()._build(vectors, is_target)
        scale = np.empty(len(vectors))
        step = max(1, _CHUNK // len(vectors))
        for start in range(0, len(vectors), step):
            stop = min(start + step, len(vectors))
            distances = self._distance(cosine_distances(vectors[start:stop], vectors))
            distances[np.arange(stop - start), np.arange(start, stop)] = np.inf
            scale[start:stop] = _mean_smallest(distances, self.k_ref)
        memory.scale = np.where(np.isfinite(scale), np.maximum(scale, _TINY), 1.0)
        return memory, origins


_CLASSES = {c.name: c for c in (PooledKNN, DomainKNN, KMeansKNN, SMOTEKNN, RescaledKNN)}
BACKENDS = tuple(_CLASSES)


def make_backend(name: str, **options) -> Backend:
    """A new backend by name (one of :data:`BACKENDS`) with its options (defaults: ASDKit's)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    accepted = [p for p in inspect.signature(_CLASSES[name].__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"the {name} backend has no option {', '.join(unknown)}; its options are "
                         f"{', '.join(accepted)}")
    return _CLASSES[name](**options)


def from_arrays(arrays: Mapping[str, np.ndarray]) -> Backend:
    """The backend that :meth:`Backend.to_arrays` stored (a dict, or the ``np.load`` of its ``np.savez`` file)."""
    missing = [key for key in ("backend", "options", "memory_units", "memory_vectors", "memory_bank", "memory_scale",
                               "statistic_units", "statistic_values") if key not in arrays]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in the arrays: pass what Backend.to_arrays() returned")
    backend = make_backend(str(arrays["backend"]), **json.loads(str(arrays["options"])))
    units = np.asarray(arrays["memory_units"])
    vectors, bank, scale = (np.asarray(arrays[f"memory_{f}"]) for f in ("vectors", "bank", "scale"))
    backend.memory = {str(u): Memory(vectors[units == u], bank[units == u], scale[units == u])
                      for u in sorted(set(units.tolist()))}
    backend.statistics = {str(u): (float(v[0]), float(v[1]))
                          for u, v in zip(arrays["statistic_units"], arrays["statistic_values"])}
    return backend
