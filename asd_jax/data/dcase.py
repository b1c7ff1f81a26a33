"""Find and label clips in the DCASE Task 2 layouts.

Supported file names (the folder above ``train/``/``test/``, or the flat folder itself, is the machine type):

* 2020 dev:   ``{normal|anomaly}_id_XX_NNNNNNNN.wav``
* 2020 eval:  ``id_XX_NNNNNNNN.wav`` (label unknown unless a ground-truth CSV supplies it)
* 2021+:      ``section_XX_{source|target}_{train|test}_{normal|anomaly}_NNNN*.wav``

A name that fits none of them is reported in :attr:`ClipList.unmatched`, never guessed.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Iterable, Sequence

NORMAL, ANOMALY, UNKNOWN = 0, 1, -1
SPLITS = ("train", "test")

_DEV2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<id>\d+)_(?P<num>\d+)\.wav$", re.IGNORECASE)
_EVAL2020 = re.compile(r"^id_(?P<id>\d+)_(?P<num>\d+)\.wav$", re.IGNORECASE)
_DCASE2021 = re.compile(
    r"^section_(?P<id>\d+)_(?P<domain>source|target)_(?P<split>train|test)_(?P<label>normal|anomaly)_(?P<num>\d+).*\.wav$",
    re.IGNORECASE,
)


class DatasetError(ValueError):
    """A data folder that cannot be used as asked; the message names the folder and the fix."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One recording and what its path says about it."""

    path: str
    machine_type: str
    machine_id: str  # "00", "02", ... (2020 machine id or 2021+ section)
    split: str  # "train" | "test"
    label: int  # NORMAL, ANOMALY or UNKNOWN
    domain: str = ""  # "source" | "target" for 2021+ names

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclasses.dataclass
class ClipList:
    clips: list[Clip]
    unmatched: list[str]  # wav paths whose names fit no DCASE pattern

    def select(self, split: str | None = None, machine_ids: Iterable[str] | None = None) -> list[Clip]:
        ids = None if machine_ids is None else {normalise_id(i) for i in machine_ids}
        return [c for c in self.clips if (split is None or c.split == split) and (ids is None or c.machine_id in ids)]


def normalise_id(machine_id: str | int) -> str:
    """'0', 0, 'id_00' and '00' all name machine id '00'."""
    text = str(machine_id).lower().removeprefix("id_").removeprefix("section_")
    if not text.isdigit():
        raise ValueError(f"machine id {machine_id!r} is not a number such as '00' or 'id_02'")
    return f"{int(text):02d}"


def parse_name(path: str, machine_type: str, split: str | None) -> Clip | None:
    """The clip a path names, or None when its name fits no pattern.

    ``split`` comes from the folder (``train``/``test``); None for a flat folder, where a 2021+ name still says its
    split and any other clip is taken as a test clip.
    """
    name = os.path.basename(path)
    if m := _DCASE2021.match(name):
        label = NORMAL if m["label"].lower() == "normal" else ANOMALY
        return Clip(path, machine_type, normalise_id(m["id"]), split or m["split"].lower(), label, m["domain"].lower())
    if m := _DEV2020.match(name):
        label = NORMAL if m["label"].lower() == "normal" else ANOMALY
        return Clip(path, machine_type, normalise_id(m["id"]), split or "test", label)
    if m := _EVAL2020.match(name):
        return Clip(path, machine_type, normalise_id(m["id"]), split or "test", UNKNOWN)
    return None


def _wavs(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(".wav"))


def _machine_folders(root: str, machine_type: str) -> list[str]:
    """Folders that hold ``machine_type``'s clips: ``root/machine_type`` or ``root`` itself."""
    candidates = [os.path.join(root, machine_type), root]
    return [c for c in candidates if os.path.isdir(c) and (
        any(os.path.isdir(os.path.join(c, s)) for s in SPLITS) or _wavs(c))]


def find_clips(
    root: str,
    machine_type: str = "slider",
    machine_ids: Sequence[str] | None = None,
    ground_truth_csv: str | None = None,
) -> ClipList:
    """All clips of ``machine_type`` under ``root`` (any supported layout), sorted by path.

    ``root`` may be the dataset root (``root/slider/train``), the machine-type folder (``root/train``) or a flat folder
    of DCASE-named clips. ``ground_truth_csv`` (rows ``file,label`` with label 0/1) labels 2020 eval clips.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root!r} does not exist; pass --data_dir=<DCASE root> or leave it out "
                           "to use the synthetic slide-rail set")
    folders = _machine_folders(root, machine_type)
    if not folders:
        raise DatasetError(f"no {machine_type!r} clips under {root!r}: expected {os.path.join(root, machine_type)}"
                           "/{train,test}/*.wav, <root>/{train,test}/*.wav or a flat folder of DCASE-named wav files")
    folder = folders[0]
    labels = _read_ground_truth(ground_truth_csv) if ground_truth_csv else {}
    clips, unmatched = [], []
    split_dirs = [(os.path.join(folder, s), s) for s in SPLITS if os.path.isdir(os.path.join(folder, s))]
    for directory, split in split_dirs or [(folder, None)]:
        for path in _wavs(directory):
            clip = parse_name(path, machine_type, split)
            if clip is None:
                unmatched.append(path)
                continue
            if clip.label == UNKNOWN and clip.name in labels:
                clip = dataclasses.replace(clip, label=labels[clip.name])
            clips.append(clip)
    if machine_ids is not None:
        wanted = {normalise_id(i) for i in machine_ids}
        clips = [c for c in clips if c.machine_id in wanted]
    return ClipList(sorted(clips, key=lambda c: c.path), unmatched)


def require_split(clip_list: ClipList, split: str, root: str, machine_type: str) -> list[Clip]:
    """The clips of ``split``; a clear error naming the expected folder when there are none."""
    selected = clip_list.select(split)
    if not selected:
        expected = os.path.join(root, machine_type, split)
        raise DatasetError(f"no {split} clips found for {machine_type!r}: expected wav files such as "
                           f"normal_id_00_00000000.wav in {expected!r} (or {os.path.join(root, split)!r})")
    return selected


def _read_ground_truth(path: str) -> dict[str, int]:
    """``file,label`` rows (header optional; label 0/1 or normal/anomaly) -> {basename: label}."""
    labels = {}
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 2 or row[0].strip().lower() in ("file", "filename", "name"):
                continue
            value = row[1].strip().lower()
            label = {"0": NORMAL, "1": ANOMALY, "normal": NORMAL, "anomaly": ANOMALY}.get(value)
            if label is None:
                raise DatasetError(f"{path}: label {row[1]!r} for {row[0]!r} is not 0/1 or normal/anomaly")
            labels[os.path.basename(row[0].strip())] = label
    return labels
