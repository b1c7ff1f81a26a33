"""The run directory: every file name in it, and every read and write of its small files and its curves.

A run directory is self-contained: the resolved config, what the detector needs to score new recordings, the
checkpoints, the training curve (JSON lines and TensorBoard events), the threshold, and the results. A sweep's group
is an ordinary run directory, so everything that reads a run reads a group.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import ml_collections

from asd_jax import fileio


class RunDir:
    """One run's directory. Attributes ending in ``_file``/``_dir`` are the paths of its parts."""

    CONFIG = "config.json"
    NORMALIZER = "normalizer.npz"
    OCSVM = "ocsvm.pkl"
    KNN = "knn.pkl"  # a clip-vector kNN detector (scaler + backend)
    CLASSES = "classes.json"  # the id classifier's classes and units
    KNN_EMBEDDINGS = "knn_train_embeddings.npz"  # the id classifier's training embeddings, per member
    CHECKPOINTS = "checkpoints"
    CURVE = "train_curve.jsonl"
    CURVE_PLOT = "train_curve.png"
    TENSORBOARD = "tensorboard"
    THRESHOLD = "threshold.json"
    RESULTS = "results.json"
    SCORES = "scores.csv"
    VALIDATION_SCORES = "validation_scores.csv"
    REPORT = "report.md"
    ROC_PLOT = "roc.png"
    HIST_PLOT = "score_hist.png"

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def __str__(self) -> str:
        return self.path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def create(self) -> "RunDir":
        os.makedirs(self.path, exist_ok=True)
        return self

    @property
    def checkpoints_dir(self) -> str:
        return os.path.abspath(self.file(self.CHECKPOINTS))

    @property
    def tensorboard_dir(self) -> str:
        return self.file(self.TENSORBOARD)

    @property
    def finished(self) -> bool:
        """Whether the run wrote its results (results are written last, once)."""
        return os.path.isfile(self.file(self.RESULTS))

    @property
    def has_checkpoints(self) -> bool:
        folder = self.file(self.CHECKPOINTS)
        return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))

    # -- config --------------------------------------------------------------------------------------------------

    def save_config(self, config: ml_collections.ConfigDict, **resolved) -> None:
        payload = {"config": config.to_dict(), "resolved": resolved, "argv": sys.argv}
        self.write_json(self.CONFIG, payload)

    def load_config(self) -> ml_collections.ConfigDict:
        path = self.file(self.CONFIG)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: --workdir must be the directory of a trained run")
        with open(path) as handle:
            return ml_collections.ConfigDict(json.load(handle)["config"])

    def load_resolved(self) -> dict:
        with open(self.file(self.CONFIG)) as handle:
            return json.load(handle)["resolved"]

    # -- small JSON files ----------------------------------------------------------------------------------------

    def write_json(self, name: str, payload) -> None:
        """Write ``name`` atomically (a temporary file renamed over it), so a kill never leaves half a file."""
        with fileio.atomic_open(self.file(name)) as handle:
            json.dump(payload, handle, indent=2, default=str, allow_nan=False)
            handle.write("\n")

    def read_json(self, name: str):
        with open(self.file(name)) as handle:
            return json.load(handle)

    # -- the training curve --------------------------------------------------------------------------------------

    def append_curve(self, record: dict) -> None:
        with open(self.file(self.CURVE), "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_curve(self, last_epoch: int | None = None) -> list[dict]:
        """The curve's records; with ``last_epoch``, only those up to it, and later ones (lost with a crash) are
        dropped from the file too."""
        path = self.file(self.CURVE)
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        if last_epoch is None:
            return records
        kept = [record for record in records if record["epoch"] <= last_epoch]
        if len(kept) != len(records):
            with fileio.atomic_open(path) as handle:
                handle.writelines(json.dumps(record) + "\n" for record in kept)
        return kept


class CurveWriter:
    """TensorBoard event files of the curve, one folder per member under ``directory`` (a run's
    :attr:`RunDir.tensorboard_dir`, so ``tensorboard --logdir`` compares members): ``train/loss`` and
    ``validation/error`` per epoch. Written with tensorboardX; a resumed run purges the events after its checkpoint,
    as :meth:`RunDir.read_curve` drops the JSON-lines records."""

    def __init__(self, directory: str, member_names: Sequence[str], resumed_epoch: int = 0):
        # imported here: tensorboardX (with protobuf) takes 0.2 s and 170 modules, and only training writes events,
        # while everything that reads a run (results, reports, tables) imports this module
        from tensorboardX import SummaryWriter

        self.writers = [SummaryWriter(os.path.join(directory, name), purge_step=resumed_epoch + 1)
                        for name in member_names]

    def write(self, record: dict) -> None:
        for index, writer in enumerate(self.writers):
            writer.add_scalar("train/loss", record["loss"][index], record["epoch"])
            if "validation_error" in record:
                writer.add_scalar("validation/error", record["validation_error"][index], record["epoch"])
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
