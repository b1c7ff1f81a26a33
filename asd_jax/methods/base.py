"""The protocol every method follows: ``fit(training clips)`` then ``score(paths) -> [members, clips]``.

Scores mean the same thing everywhere: higher = more anomalous. A detector saves what it needs into its run directory
and can be restored from it to score new recordings.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from asd_jax.data.dcase import Clip


@dataclasses.dataclass
class Scores:
    """Scores [members, clips] of the clips that could be read; the rest are listed in ``skipped``."""

    values: np.ndarray
    paths: list[str]
    skipped: list[dict]


class Detector(abc.ABC):
    member_names: list[str]
    extra_results: dict  # method-specific figures for results.json (e.g. the OC-SVM grid)

    @abc.abstractmethod
    def fit(self, clips: list[Clip]) -> list[dict]:
        """Train on normal clips; returns the clips that were skipped (``{"file", "error"}``)."""

    @abc.abstractmethod
    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        """Anomaly scores of the given recordings."""

    @classmethod
    @abc.abstractmethod
    def restore(cls, config, workdir: str) -> "Detector":
        """The trained detector saved in ``workdir``."""
