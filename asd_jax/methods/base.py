"""The protocol every method follows: ``fit(training clips)`` then ``score(paths) -> [members, clips]``.

Scores mean the same thing everywhere: higher = more anomalous. A detector saves what it needs into its run directory
and can be restored from it to score new recordings.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

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
    def fit(self, clips: list[Clip], validation_clips: Sequence[Clip] = (),
            oracle_clips: Sequence[Clip] | None = None) -> list[dict]:
        """Train on normal clips (``validation_clips``: held-out normals a method may monitor; ``oracle_clips``:
        labelled test clips, given only for a selection that is labelled TEST-TUNED); returns the clips that were
        skipped (``{"file", "error"}``)."""

    @abc.abstractmethod
    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        """Anomaly scores of the given recordings."""

    @classmethod
    @abc.abstractmethod
    def restore(cls, config, run, members) -> "Detector":
        """The trained detector saved in the run directory ``run`` (its ``members`` as trained)."""
