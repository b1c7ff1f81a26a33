"""The protocol every method follows: ``fit(training clips)`` then ``score(paths) -> [members, clips]``.

Scores mean the same thing everywhere: higher = more anomalous. A detector saves what it needs into its run directory
and can be restored from it to score new recordings. Each detector is made with its method's registry entry
(:class:`asd_jax.methods.registry.Method`) and answers what the pipeline needs to know of it: a pre-flight check,
whether it selects on test labels, whether it runs over several processes.
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
    """A method's detector. Subclasses set ``member_names`` and ``extra_results`` (method-specific figures for
    results.json, e.g. the OC-SVM grid); ``compiles`` counts the training programs compiled, ``diverged`` names
    the members left out of the ensemble, ``quiet`` lists the silent clips met (used, but warned about)."""

    multiprocess: bool = False  # whether a run can span several processes (--distributed)
    member_names: list[str]
    extra_results: dict
    compiles: int = 0
    diverged: Sequence[str] = ()
    quiet: Sequence[dict] = ()

    @classmethod
    def preflight(cls, method, config) -> None:
        """Refuse, before any data work, a run of ``method`` under ``config`` that cannot succeed."""

    @property
    def selects_on_test_labels(self) -> bool:
        """Whether :meth:`fit` wants the labelled test clips (a selection labelled TEST-TUNED everywhere)."""
        return False

    @property
    def test_tuned_note(self) -> str:
        """A note for the results when something was chosen on the test labels, else ''."""
        return ""

    @abc.abstractmethod
    def fit(self, clips: list[Clip], validation_clips: Sequence[Clip] = (),
            oracle_clips: Sequence[Clip] | None = None) -> list[dict]:
        """Train on normal clips (``validation_clips``: held-out normals a method may monitor; ``oracle_clips``:
        labelled test clips, given only when :attr:`selects_on_test_labels`); returns the clips that were skipped
        (``{"file", "error"}``)."""

    @abc.abstractmethod
    def score(self, paths: list[str], description: str = "scoring") -> Scores:
        """Anomaly scores of the given recordings."""

    @classmethod
    @abc.abstractmethod
    def restore(cls, method, config, run, members) -> "Detector":
        """The trained detector of ``method`` saved in the run directory ``run`` (its ``members`` as trained)."""
