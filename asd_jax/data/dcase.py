"""Find and label clips of every DCASE Task 2 edition (2020-2026) and of raw MIMII recordings.

File names (the folder above ``train/``/``test/``, or the flat folder itself, is the machine type):

* 2020 dev:        ``{normal|anomaly}_id_XX_NNNNNNNN.wav``
* 2020 eval:       ``id_XX_NNNNNNNN.wav``
* 2021-2026 dev:   ``section_XX_{source|target}_{train|test}_{normal|anomaly}_NNNN[_<attributes>].wav``
  (attributes such as ``vel_620_ac_0.08`` are ``key_value`` pairs; 2024-2026 write ``noAttribute`` where they are
  hidden; a key can repeat, as in 2026's ``car_D2_spd_5_mic_2_mic_1``)
* 2021 eval:       ``section_XX_{source|target}_test_NNNN.wav``
* 2022-2026 eval:  ``section_XX_NNNN.wav``; also ``section_XX_test_NNNN.wav``, the form the 2025/2026 baseline
  documentation shows
* raw MIMII:       ``<type>/id_XX/{normal,abnormal}/NNNNNNNN.wav``, also under ``<snr>_<type>/`` (``-6_dB_fan/fan/...``)

A name that fits none of them is reported in :attr:`ClipList.unmatched`, never guessed. DCASE 2026 clips have two
channels (near and far microphone); every earlier edition is single-channel.

**Supplemental clips** (DCASE 2025): ``<type>/supplemental/`` holds clean machine recordings and noise-only
recordings, neither train nor test clips. :func:`find_clips` never reads that folder; :func:`find_supplemental`
does. Names are ``section_XX_<words>_NNNN[_<attributes>].wav`` where the words are one of ``machine``/``noise``
and any of ``source``, ``target``, ``supplemental``, ``normal`` (``section_00_machine_0001_.wav``,
``section_00_machine_source_0000_noAttribute.wav``, ``section_00_source_supplemental_machine_0000.wav``,
``section_00_noise_supplemental_normal_0000.wav``); any other name is reported, not guessed.

**Attributes** come from the name, from ``attributes_XX.csv`` files in the machine folder and from ground truth.
Hidden values (``noAttribute`` in a name or a CSV cell) give no attribute at all: such a clip's ``attributes`` is
empty, so nothing that groups clips by attribute sees a made-up class.

Every clip has a ``section``: the unit DCASE scores separately (the 2021+ section, or the 2020/MIMII machine id), and
``machine_id`` holds the same value, so code that groups by machine id works for every edition.

**Edition.** :func:`detect_edition` reads the names: machine-id names are 2020 (raw MIMII too: ids, no domains);
section names are 2021-2026, narrowed by eval-name style (domain in the name: 2021; ``section_XX_NNNN``: 2022+;
``section_XX_test_NNNN``: 2025/2026), ``noAttribute`` (2024-2026, and per machine type the editions that hid its
attributes), machine types that exist in some editions only (pump: 2021; bearing: 2022-2025; the ``...Emu`` types:
2026; each edition's additional/eval types), sections other than 00 (2021/2022: 2023+ has only section 00 per
type) and, between 2021 and 2022, the number of target-domain training clips per section (2021: 3, 2022: 10).
:func:`find_clips` adds what the files say: two channels (2026), one channel (not 2026), a ``supplemental/`` folder
(2025). One channel, the ``supplemental/`` folder, repeated attribute keys (2026) and the per-type ``noAttribute``
rule are hints: one that contradicts firmer evidence is set aside and said so; other conflicts raise
:class:`EditionConflict`, which an ``edition=`` passed to :func:`find_clips` overrides. What is left is a best guess
(2023 for section 00 only, then 2024, 2025, 2026; else 2022) and :attr:`ClipList.edition_reason` says why; pass
``edition=`` to choose. The 2022-2026 protocols score alike, so a wrong guess among them changes no official figure.
Names of two families (machine-id and section names) in one set are an error.

**Raw MIMII split.** MIMII folders have no train/test split. Per id folder, :func:`mimii_test_normal_count` normals
go to test with every abnormal clip, the rest train. DCASE's rule is as many test normals as anomalies, capped so
that at least half of the normals stay for training (``min(anomalies, normals // 2)``): a 10 normal + 10 abnormal
folder gives 5 train normals and 5 normal + 10 abnormal test clips. Which normals are tested is a seeded
permutation of the sorted file names (seed, machine type, id); ``mimii_test_normals`` overrides the count.

**Ground truth** (labels, domains and attributes of evaluation clips) is read by :func:`read_ground_truth`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import soundfile as sf

NORMAL, ANOMALY, UNKNOWN = 0, 1, -1
SPLITS = ("train", "test")
DOMAINS = ("source", "target")
EDITIONS = ("dcase2020", "dcase2021", "dcase2022", "dcase2023", "dcase2024", "dcase2025", "dcase2026")
SUPPLEMENTAL_KINDS = ("machine", "noise")

log = logging.getLogger(__name__)

_DEV2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<id>\d+)_(?P<num>\d+)\.wav$", re.IGNORECASE)
_EVAL2020 = re.compile(r"^id_(?P<id>\d+)_(?P<num>\d+)\.wav$", re.IGNORECASE)
_SECTION_DEV = re.compile(
    r"^section_(?P<id>\d+)_(?P<domain>source|target)_(?P<split>train|test)_(?P<label>normal|anomaly)_(?P<num>\d+)"
    r"(?P<rest>.*)\.wav$",
    re.IGNORECASE,
)
_EVAL2021 = re.compile(r"^section_(?P<id>\d+)_(?P<domain>source|target)_test_(?P<num>\d+)\.wav$", re.IGNORECASE)
_EVAL2022 = re.compile(r"^section_(?P<id>\d+)_(?P<num>\d+)\.wav$", re.IGNORECASE)
_EVAL_TEST = re.compile(r"^section_(?P<id>\d+)_test_(?P<num>\d+)\.wav$", re.IGNORECASE)
_SUPPLEMENTAL = re.compile(r"^section_(?P<id>\d+)_(?P<words>(?:[a-z]+_)+?)(?P<num>\d+)(?P<rest>_.*)?\.wav$",
                           re.IGNORECASE)
_SUPPLEMENTAL_WORDS = {"source", "target", "supplemental", "normal", *SUPPLEMENTAL_KINDS}
_MIMII_ID = re.compile(r"^id_(?P<id>\d+)$", re.IGNORECASE)
_GROUND_TRUTH_FILE = re.compile(r"^ground_truth_(?P<type>.+?)_section_\d+", re.IGNORECASE)
_ATTRIBUTE_PAIR = re.compile(r"^d(?P<n>\d+)(?P<kind>[pv])$", re.IGNORECASE)
_HIDDEN = "noattribute"

_2021_TO_2025 = frozenset({"dcase2021", "dcase2022", "dcase2023", "dcase2024", "dcase2025"})
# Editions in which a machine type has section names, for types not in every 2021-2026 edition (lower case; from
# the DCASE task descriptions and the nttcslab baseline's machine-type lists): 2026 replaced bearing, gearbox,
# slider, valve and ToyTrain by emulated "...Emu" recordings.
_TYPE_EDITIONS: dict[str, frozenset[str]] = {
    "pump": frozenset({"dcase2021"}),
    "bearing": frozenset({"dcase2022", "dcase2023", "dcase2024", "dcase2025"}),
    **dict.fromkeys(("gearbox", "slider", "valve", "toytrain"), _2021_TO_2025),
    **dict.fromkeys(("toynscale", "toytank", "vacuum", "bandsaw", "grinder", "shaker"), frozenset({"dcase2023"})),
    "toydrone": frozenset({"dcase2023", "dcase2026"}),
    **dict.fromkeys(("3dprinter", "aircompressor", "brushlessmotor", "hairdryer", "hoveringdrone", "roboticarm",
                     "scanner", "toycircuit"), frozenset({"dcase2024"})),
    "toothbrush": frozenset({"dcase2024", "dcase2026"}),
    **dict.fromkeys(("toyrccar", "toypet", "homecamera", "autotrash", "polisher", "screwfeeder", "bandsealer",
                     "coffeegrinder"), frozenset({"dcase2025"})),
    **dict.fromkeys(("toycaremu", "bearingemu", "gearboxemu", "slideremu", "valveemu", "sewingmachine",
                     "blowerdustcollector", "sander"), frozenset({"dcase2026"})),
}
# Machine types whose released names hide their attributes as ``noAttribute``, per edition (2024/2025: the
# baseline's ground_truth_attributes correspondence files; 2026: the released dev and additional training names).
_HIDDEN_ATTRIBUTE_TYPES = {
    "dcase2024": {"toytrain", "gearbox", "slider", "aircompressor", "brushlessmotor", "hoveringdrone", "toothbrush"},
    "dcase2025": {"toytrain", "bearing", "slider", "autotrash", "polisher", "screwfeeder", "toypet"},
    "dcase2026": {"toycar", "bearingemu", "slideremu", "valveemu", "sewingmachine", "toothbrush"},
}
_LABELS = {"0": NORMAL, "1": ANOMALY, "0.0": NORMAL, "1.0": ANOMALY, "normal": NORMAL, "anomaly": ANOMALY,
           "abnormal": ANOMALY}
_DOMAIN_VALUES = {"0": "source", "1": "target", "0.0": "source", "1.0": "target", "source": "source",
                  "target": "target"}
_FILE_COLUMNS = ("file", "filename", "file_name", "name")
_LABEL_COLUMNS = ("label", "anomaly", "is_anomaly", "y_true")


class DatasetError(ValueError):
    """A data folder that cannot be used as asked; the message names the folder and the fix."""


class EditionConflict(DatasetError):
    """Section names whose hints (eval-name style, machine type, channels, ...) fit no single DCASE edition."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One recording and what its path (and any ground truth or attribute file) says about it."""

    path: str
    machine_type: str
    machine_id: str  # "00", "02", ...: the 2020/MIMII machine id or the 2021+ section (the same as ``section``)
    split: str  # "train" | "test"
    label: int  # NORMAL, ANOMALY or UNKNOWN
    domain: str | None = None  # "source" | "target" for 2021+ clips; None for 2020/MIMII or when unknown
    section: str = ""  # the unit DCASE scores separately; defaults to machine_id
    attributes: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)  # operating conditions

    def __post_init__(self):
        if not self.section:
            object.__setattr__(self, "section", self.machine_id)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclasses.dataclass
class ClipList:
    """The clips found, the wav files whose names fit no pattern, and which DCASE edition the names are."""

    clips: list[Clip]
    unmatched: list[str]  # wav paths whose names fit no DCASE pattern
    edition: str | None = None  # "dcase2020" ... "dcase2026"; None when no clip was found
    edition_reason: str = ""  # why: the rule that decided, or that it was passed in
    layout: str = ""  # "dcase" (train/test folders), "flat" (one folder of DCASE names) or "mimii" (raw MIMII)
    channels: int | None = None  # channel count of the clips (read from a few headers); None when unknown
    supplemental: bool = False  # whether the machine folder has a supplemental/ folder (see find_supplemental)

    def select(self, split: str | None = None, machine_ids: Iterable[str] | None = None,
               domain: str | None = None) -> list[Clip]:
        ids = None if machine_ids is None else {normalise_id(i) for i in machine_ids}
        return [c for c in self.clips if (split is None or c.split == split) and (ids is None or c.machine_id in ids)
                and (domain is None or c.domain == domain)]

    @property
    def sections(self) -> list[str]:
        return sorted({c.section for c in self.clips})


def normalise_id(machine_id: str | int) -> str:
    """'0', 0, 'id_00', 'section_00' and '00' all name machine id (or section) '00'."""
    text = str(machine_id).lower().removeprefix("id_").removeprefix("section_")
    if not text.isdigit():
        raise ValueError(f"machine id {machine_id!r} is not a number such as '00' or 'id_02'")
    return f"{int(text):02d}"


def normalise_edition(edition: str | int | None) -> str | None:
    """'dcase2023', 'DCASE2023', '2023' and 2023 all name 'dcase2023'; None, '' and 'auto' mean: detect it."""
    if edition is None or str(edition).strip().lower() in ("", "auto"):
        return None
    text = str(edition).strip().lower().removeprefix("dcase").removesuffix("t2").strip("_- ")
    if f"dcase{text}" not in EDITIONS:
        raise DatasetError(f"unknown DCASE edition {edition!r}; expected one of {', '.join(EDITIONS)} or 'auto'")
    return f"dcase{text}"


def _attribute_pairs(text: str) -> list[tuple[str, str]] | None:
    """The ``key_value`` pairs of an attribute string, or None when it is not such pairs (odd token count, or a
    key without a letter)."""
    tokens = text.strip("_").split("_")
    keys = tokens[0::2]
    if len(tokens) % 2 or not all(re.search(r"[a-z]", key, re.IGNORECASE) for key in keys):
        return None
    return list(zip(keys, tokens[1::2]))


def parse_attributes(text: str) -> dict[str, str]:
    """The attribute part of a 2021+ file name as a dict: ``vel_620_ac_0.08`` -> {"vel": "620", "ac": "0.08"}.

    ``noAttribute`` (hidden values) and an empty part give {}. A key that repeats (2026's two-microphone
    ``mic_2_mic_1``) keeps every value: the second is ``mic.2``, the third ``mic.3``. A part that is not
    ``key_value`` pairs with non-numeric keys (e.g. 2021's ``A1Spd28VMic1``) is kept whole as {"attributes": text}.
    """
    text = text.strip("_")
    if not text or text.lower() == _HIDDEN:
        return {}
    pairs = _attribute_pairs(text)
    if pairs is None:
        return {"attributes": text}
    attributes, seen = {}, Counter()
    for key, value in pairs:
        seen[key] += 1
        attributes[key if seen[key] == 1 else f"{key}.{seen[key]}"] = value
    return attributes


def _match(name: str) -> tuple[str | None, re.Match | None]:
    """(kind of the name, its match): kinds "2020_dev", "2020_eval", "section_dev", "2021_eval", "2022_eval",
    "test_eval"."""
    for kind, pattern in (("section_dev", _SECTION_DEV), ("2021_eval", _EVAL2021), ("2022_eval", _EVAL2022),
                          ("test_eval", _EVAL_TEST), ("2020_dev", _DEV2020), ("2020_eval", _EVAL2020)):
        if m := pattern.match(name):
            return kind, m
    return None, None


def parse_name(path: str, machine_type: str, split: str | None) -> Clip | None:
    """The clip a path names, or None when its name fits no pattern.

    ``split`` comes from the folder (``train``/``test``); None for a flat folder, where a 2021+ dev name still says
    its split and any other clip is taken as a test clip.
    """
    kind, m = _match(os.path.basename(path))
    if kind is None:
        return None
    section = normalise_id(m["id"])
    if kind == "section_dev":
        label = NORMAL if m["label"].lower() == "normal" else ANOMALY
        return Clip(path, machine_type, section, split or m["split"].lower(), label, m["domain"].lower(),
                    attributes=parse_attributes(m["rest"]))
    if kind == "2021_eval":
        return Clip(path, machine_type, section, split or "test", UNKNOWN, m["domain"].lower())
    if kind in ("2022_eval", "test_eval"):
        return Clip(path, machine_type, section, split or "test", UNKNOWN)
    if kind == "2020_dev":
        label = NORMAL if m["label"].lower() == "normal" else ANOMALY
        return Clip(path, machine_type, section, split or "test", label)
    return Clip(path, machine_type, section, split or "test", UNKNOWN)


def unit_of(path: str) -> tuple[str, str | None] | None:
    """(section or machine id, domain or None) that a clip's path names: a DCASE name, or a raw MIMII path
    ``.../id_XX/{normal,abnormal}/NNNNNNNN.wav``; None when it names neither (e.g. a renamed file). Scoring a new
    clip uses it to pick the clip's unit's threshold."""
    clip = parse_name(path, "", None)
    if clip is not None:
        return clip.section, clip.domain
    parent = os.path.dirname(os.path.abspath(path))
    m = _MIMII_ID.match(os.path.basename(os.path.dirname(parent)))
    if m and os.path.basename(parent).lower() in ("normal", "abnormal"):
        return normalise_id(m["id"]), None
    return None


# ---------------------------------------------------------------------------------------------------- editions


def _years(editions: Iterable[str]) -> str:
    """'2021-2025' for dcase2021 ... dcase2025, '2023 and 2026' for {"dcase2023", "dcase2026"}."""
    years = sorted(int(e.removeprefix("dcase")) for e in editions)
    if len(years) > 2 and years[-1] - years[0] == len(years) - 1:
        return f"{years[0]}-{years[-1]}"
    return ", ".join(map(str, years[:-1])) + f" and {years[-1]}" if len(years) > 1 else str(years[0])


def detect_edition(names: Iterable[str], machine_type: str = "", *, channels: int | None = None,
                   supplemental: bool = False) -> tuple[str | None, str]:
    """(edition, reason) for a set of clip file names of one machine type (rules in the module docstring).

    ``channels``: the clips' channel count when known; ``supplemental``: whether the machine folder has a
    ``supplemental/`` folder. (None, reason) when no name fits a DCASE pattern; DatasetError when the names mix
    name families, :class:`EditionConflict` when their hints fit no single edition.
    """
    kinds: dict[str, str] = {}
    sections, target_train, no_attribute, repeated_key = set(), Counter(), False, ""
    for name in names:
        base = os.path.basename(name)
        kind, m = _match(base)
        if kind is None:
            continue
        kinds.setdefault(kind, base)
        sections.add(normalise_id(m["id"]))
        if kind == "section_dev":
            rest = m["rest"].strip("_")
            no_attribute |= rest.lower() == _HIDDEN
            pairs = _attribute_pairs(rest) if rest else None
            if not repeated_key and pairs and len({k for k, _ in pairs}) < len(pairs):
                repeated_key = base
            if m["domain"].lower() == "target" and m["split"].lower() == "train":
                target_train[normalise_id(m["id"])] += 1
    if not kinds:
        return None, "no clip name fits a DCASE pattern"
    id_names = [kinds[k] for k in ("2020_dev", "2020_eval") if k in kinds]
    section_names = [kinds[k] for k in ("section_dev", "2021_eval", "2022_eval", "test_eval") if k in kinds]
    if id_names and section_names:
        raise DatasetError(f"{machine_type or 'these'} clips mix DCASE editions: machine-id names such as "
                           f"{id_names[0]!r} (2020) and section names such as {section_names[0]!r} (2021+); "
                           "keep one edition per data folder")
    if id_names:
        return "dcase2020", f"machine-id names such as {id_names[0]!r} are DCASE 2020's"
    no_domain_eval = [kinds[k] for k in ("2022_eval", "test_eval") if k in kinds]
    if "2021_eval" in kinds and no_domain_eval:
        raise DatasetError(f"{machine_type or 'these'} clips mix DCASE editions: {kinds['2021_eval']!r} is a 2021 "
                           f"eval name, {no_domain_eval[0]!r} a 2022+ one; keep one edition per data folder")

    candidates, reasons = [e for e in EDITIONS if e != "dcase2020"], []

    def keep(allowed: Iterable[str], why: str, hint: bool = False) -> None:
        """Keep the candidates in ``allowed``; a ``hint`` that would leave none is set aside, a rule raises."""
        nonlocal candidates
        allowed = set(allowed)
        remaining = [c for c in candidates if c in allowed]
        if not remaining and hint:
            reasons.append(f"{why}, but that contradicts the rest: set aside")
            return
        if not remaining:
            raise EditionConflict(f"{machine_type or 'these'} clips fit no single DCASE edition: "
                                  f"{'; '.join(reasons) or 'section names'}; but {why}; pass the edition of the data "
                                  "(edition= / --dcase_edition)")
        reasons.append(why)
        candidates = remaining

    if "2021_eval" in kinds:
        keep({"dcase2021"}, f"eval names with a domain ({kinds['2021_eval']!r}) are DCASE 2021's")
    if "2022_eval" in kinds:
        keep(EDITIONS[2:], f"eval names without a domain ({kinds['2022_eval']!r}) are DCASE 2022-2026's")
    if "test_eval" in kinds:
        keep({"dcase2025", "dcase2026"}, f"eval names such as {kinds['test_eval']!r} are the form the DCASE "
             "2025/2026 baseline documents")
    if no_attribute:
        keep({"dcase2024", "dcase2025", "dcase2026"}, "'noAttribute' names are DCASE 2024-2026's")
    machine = machine_type.lower()
    if machine in _TYPE_EDITIONS:
        keep(_TYPE_EDITIONS[machine], f"{machine_type} has section names in DCASE {_years(_TYPE_EDITIONS[machine])} "
             "only")
    if channels == 2:
        keep({"dcase2026"}, "two-channel clips are DCASE 2026's (2020-2025 clips have one channel)")
    other_sections = sorted(sections - {"00"})
    if other_sections:
        keep({"dcase2021", "dcase2022"},
             f"sections {', '.join(other_sections)} besides 00 (DCASE 2023+ has only section 00 per machine type)")
        if len(candidates) > 1 and target_train:
            most = max(target_train.values())
            if most <= 3:
                keep({"dcase2021"}, f"at most {most} target-domain training clips per section (2021: 3, 2022: 10)")
            else:
                keep({"dcase2022"}, f"{most} target-domain training clips in a section (2021: 3, 2022: 10)")
    if channels == 1:
        keep(EDITIONS[:-1], "single-channel clips (DCASE 2026 clips have two channels)", hint=True)
    if supplemental:
        keep({"dcase2025"}, "a supplemental/ folder (clean machine and noise clips) is DCASE 2025's", hint=True)
    if no_attribute and any(machine in types for types in _HIDDEN_ATTRIBUTE_TYPES.values()):
        hid = {e for e, types in _HIDDEN_ATTRIBUTE_TYPES.items() if machine in types}
        keep(hid, f"{machine_type} hides its attributes as 'noAttribute' in DCASE {_years(hid)}", hint=True)
    if repeated_key:
        keep({"dcase2026"}, f"a repeated attribute key ({repeated_key!r}) is DCASE 2026's two-microphone naming",
             hint=True)
    order = ["dcase2022", "dcase2021"] if other_sections else \
        ["dcase2023", "dcase2024", "dcase2025", "dcase2026", "dcase2022", "dcase2021"]
    chosen = next(c for c in order if c in candidates)
    if not reasons:
        reasons.append("section names of DCASE 2021-2026")
    if len(candidates) > 1:
        reasons.append(f"names cannot tell {', '.join(sorted(candidates))} apart: best guess {chosen} "
                       "(pass edition= / --dcase_edition to choose)")
    return chosen, "; ".join(reasons)


def _check_edition(wanted: str, id_names: bool | None, example: str, machine_type: str) -> None:
    """An edition passed in must fit the name family: 2020 for machine-id names (``id_names``), 2021+ for section
    names; None: no clip, nothing to check."""
    if id_names is None or (wanted == "dcase2020") == id_names:
        return
    family = "machine-id (DCASE 2020 / MIMII)" if id_names else "section (DCASE 2021+)"
    raise DatasetError(f"edition {wanted} was asked for, but the {machine_type} clips have {family} names such as "
                       f"{example!r}; pass the edition of the data (or 'auto')")


# ---------------------------------------------------------------------------------------------------- raw MIMII


def mimii_test_normal_count(num_normal: int, num_anomaly: int, override: int | None = None) -> int:
    """Normal clips of one raw MIMII id folder that go to test: ``override`` when given, else DCASE's rule, as many
    as there are anomalies but at most half of the normals (``min(num_anomaly, num_normal // 2)``)."""
    if override is None:
        return min(num_anomaly, num_normal // 2)
    if not 0 <= override <= num_normal:
        raise ValueError(f"cannot put {override} of {num_normal} normal clips in the test split")
    return int(override)


def _mimii_id_folders(folder: str) -> list[tuple[str, str]]:
    """(id, path) of the ``id_XX`` folders of a raw MIMII machine folder that hold ``normal/`` or ``abnormal/``."""
    if not os.path.isdir(folder):
        return []
    found = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if (m := _MIMII_ID.match(entry)) and any(os.path.isdir(os.path.join(path, s)) for s in ("normal", "abnormal")):
            found.append((normalise_id(m["id"]), path))
    return found


def _mimii_clips(folder: str, machine_type: str, test_normals: int | None, seed: int) -> tuple[list[Clip], list[str]]:
    """Clips of a raw MIMII machine folder with the seeded split of :func:`mimii_test_normal_count`."""
    clips, unmatched = [], []
    for machine_id, id_folder in _mimii_id_folders(folder):
        normals = _wavs(os.path.join(id_folder, "normal")) if os.path.isdir(os.path.join(id_folder, "normal")) else []
        anomalies = _wavs(os.path.join(id_folder, "abnormal")) \
            if os.path.isdir(os.path.join(id_folder, "abnormal")) else []
        unmatched += _wavs(id_folder)
        try:
            count = mimii_test_normal_count(len(normals), len(anomalies), test_normals)
        except ValueError as error:
            raise DatasetError(f"{id_folder}: {error}; pass mimii_test_normals between 0 and {len(normals)}") \
                from None
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(f"{machine_type}/id_{machine_id}"
                                                                              .encode())]))
        tested = set(rng.permutation(len(normals))[:count].tolist())
        clips += [Clip(p, machine_type, machine_id, "test" if i in tested else "train", NORMAL)
                  for i, p in enumerate(normals)]
        clips += [Clip(p, machine_type, machine_id, "test", ANOMALY) for p in anomalies]
    return clips, unmatched


# ---------------------------------------------------------------------------------------------------- folders


def _wavs(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(".wav"))


def _holds_clips(folder: str, dcase_names_only: bool = False) -> bool:
    """Whether ``folder`` is a machine folder: train/test folders, raw MIMII id folders or wav files (with DCASE
    names when ``dcase_names_only``)."""
    if not os.path.isdir(folder):
        return False
    if any(os.path.isdir(os.path.join(folder, s)) for s in SPLITS) or _mimii_id_folders(folder):
        return True
    wavs = _wavs(folder)
    return any(_match(os.path.basename(w))[0] for w in wavs) if dcase_names_only else bool(wavs)


def _snr_folders(root: str, machine_type: str) -> list[str]:
    """``<root>/<snr>_<type>/<type>`` folders, as the MIMII archives (``-6_dB_fan.zip``) unpack."""
    if not os.path.isdir(root):
        return []
    suffix = "_" + machine_type.lower()
    return [os.path.join(root, e, machine_type) for e in sorted(os.listdir(root))
            if e.lower().endswith(suffix) and _holds_clips(os.path.join(root, e, machine_type))]


def _machine_folders(root: str, machine_type: str) -> list[str]:
    """Folders that hold ``machine_type``'s clips: ``root/machine_type``, ``root`` itself or one
    ``root/<snr>_<machine_type>/<machine_type>``."""
    candidates = [c for c in (os.path.join(root, machine_type), root) if _holds_clips(c)]
    if candidates:
        return candidates
    snr = _snr_folders(root, machine_type)
    if len(snr) > 1:
        raise DatasetError(f"{root!r} holds {len(snr)} versions of {machine_type!r} ("
                           f"{', '.join(os.path.basename(os.path.dirname(s)) for s in snr)}): pass one of them as "
                           "the data folder")
    return snr


def list_machine_types(root: str) -> list[str]:
    """The machine types under ``root``, sorted case-insensitively: folders ``<root>/<type>`` with ``train``/``test``
    folders, raw MIMII ``id_XX`` folders or DCASE-named wav files, and ``<root>/<snr>_<type>/<type>`` MIMII
    folders. A root that is itself a machine folder gives its own name."""
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root!r} does not exist")
    if any(os.path.isdir(os.path.join(root, s)) for s in SPLITS) or _mimii_id_folders(root):
        return [os.path.basename(os.path.normpath(root))]
    types = set()
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith(".") or not os.path.isdir(path):
            continue
        if _holds_clips(path, dcase_names_only=True):
            types.add(entry)
        elif "_" in entry and _holds_clips(os.path.join(path, entry.rsplit("_", 1)[1])):
            types.add(entry.rsplit("_", 1)[1])
    if not types and _holds_clips(root, dcase_names_only=True):
        types.add(os.path.basename(os.path.normpath(root)))
    return sorted(types, key=lambda t: (t.lower(), t))


# ---------------------------------------------------------------------------------------------------- finding


def find_clips(
    root: str,
    machine_type: str = "slider",
    machine_ids: Sequence[str] | None = None,
    ground_truth_csv: str | Sequence[str] | None = None,
    *,
    edition: str | None = None,
    mimii_test_normals: int | None = None,
    split_seed: int = 0,
) -> ClipList:
    """All clips of ``machine_type`` under ``root`` (any supported layout), sorted by path.

    ``root`` may be the dataset root (``root/slider/train``), the machine-type folder (``root/train``), a flat
    folder of DCASE-named clips or a raw MIMII root (``root/fan/id_00/normal``). ``ground_truth_csv``: files or
    folders read by :func:`read_ground_truth` (a comma-separated string works too); they fill in the label, domain
    and attributes of clips whose names lack them. ``attributes_XX.csv`` files in the machine folder add to each
    clip's attributes. ``edition`` (e.g. "dcase2023"; None/"auto": detect) sets :attr:`ClipList.edition`; a passed
    edition also overrides hints that fit no single edition. ``mimii_test_normals`` and ``split_seed`` set the raw
    MIMII split (module docstring). ``machine_ids`` keeps only those ids (or sections). A ``supplemental/`` folder is
    never read here (see :func:`find_supplemental`); it only counts as a DCASE 2025 hint.
    """
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root!r} does not exist; pass --data_dir=<DCASE root> or leave it out "
                           "to use the synthetic slide-rail set")
    if machine_type.lower() == "all" or "," in machine_type:
        raise DatasetError(f"find_clips reads one machine type, got {machine_type!r}: list them with "
                           "list_machine_types(root) and call it once per type")
    wanted = normalise_edition(edition)
    folders = _machine_folders(root, machine_type)
    if not folders:
        raise DatasetError(f"no {machine_type!r} clips under {root!r}: expected {os.path.join(root, machine_type)}"
                           "/{train,test}/*.wav, <root>/{train,test}/*.wav, a flat folder of DCASE-named wav files "
                           f"or raw MIMII {os.path.join(root, machine_type, 'id_XX', '{normal,abnormal}')}/*.wav")
    folder = folders[0]
    truth = read_ground_truth(ground_truth_csv) if ground_truth_csv else {}
    attributes = _folder_attributes(folder)
    split_dirs = [(os.path.join(folder, s), s) for s in SPLITS if os.path.isdir(os.path.join(folder, s))]
    id_folders = _mimii_id_folders(folder)
    if split_dirs and id_folders:
        raise DatasetError(f"{folder!r} holds both train/test folders and raw MIMII id folders "
                           f"({os.path.basename(id_folders[0][1])}); keep one layout per machine folder")
    supplemental = os.path.isdir(os.path.join(folder, "supplemental"))
    if id_folders:
        clips, unmatched = _mimii_clips(folder, machine_type, mimii_test_normals, split_seed)
        layout = "mimii"
        channels = _channel_count(sorted(c.path for c in clips))
        detected, reason = ("dcase2020", "raw MIMII layout: machine ids without domains, scored like DCASE 2020") \
            if clips else (None, "no clips")
    else:
        clips, unmatched = [], []
        for directory, split in split_dirs or [(folder, None)]:
            for path in _wavs(directory):
                clip = parse_name(path, machine_type, split)
                if clip is None:
                    unmatched.append(path)
                else:
                    clips.append(clip)
        layout = "dcase" if split_dirs else "flat"
        channels = _channel_count(sorted(c.path for c in clips))
        try:
            detected, reason = detect_edition([c.path for c in clips], machine_type, channels=channels,
                                              supplemental=supplemental)
        except EditionConflict as conflict:
            if wanted is None:
                raise EditionConflict(f"{folder}: {conflict}") from None
            detected, reason = None, str(conflict)
    if wanted is not None:
        _check_edition(wanted, (detected == "dcase2020") if clips else None, clips[0].name if clips else "",
                       machine_type)
        detected, reason = wanted, f"passed in (names suggest: {reason})"
    clips = _complete(clips, truth, attributes, ground_truth_csv)
    if machine_ids is not None:
        keep = {normalise_id(i) for i in machine_ids}
        clips = [c for c in clips if c.machine_id in keep]
    return ClipList(sorted(clips, key=lambda c: c.path), unmatched, detected, reason, layout, channels, supplemental)


def _channel_count(paths: Sequence[str], probes: int = 3, attempts: int = 10) -> int | None:
    """The channel count of the first ``probes`` readable clips among the first ``attempts`` of ``paths`` when they
    agree; None when none can be read (e.g. empty placeholder files) or they differ. Only headers are read."""
    counts, read = set(), 0
    for path in paths[:attempts]:
        try:
            counts.add(sf.info(path).channels)
        except (RuntimeError, OSError, TypeError, ValueError):
            continue
        read += 1
        if read == probes:
            break
    return next(iter(counts)) if len(counts) == 1 else None


def _complete(clips: list[Clip], truth: dict, attributes: dict[str, dict[str, str]], source) -> list[Clip]:
    """Clips with the label, domain and attributes that the ground truth and attribute files add."""
    completed, unknown, filled = [], 0, 0
    for clip in clips:
        entry = truth.get((clip.machine_type.lower(), clip.name)) or truth.get((None, clip.name))
        changes = {}
        if entry is not None:
            if clip.label == UNKNOWN and entry.label is not None:
                changes["label"] = entry.label
            if clip.domain is None and entry.domain is not None:
                changes["domain"] = entry.domain
        merged = {**clip.attributes, **(entry.attributes if entry is not None else {}),
                  **attributes.get(clip.name, {})}
        if merged != clip.attributes:
            changes["attributes"] = merged
        unknown += clip.label == UNKNOWN
        filled += "label" in changes
        completed.append(dataclasses.replace(clip, **changes) if changes else clip)
    if truth and unknown and not filled:
        log.warning("ground truth %s labels none of the %d unlabelled %s clips", source, unknown,
                    clips[0].machine_type)
    return completed


def require_split(clip_list: ClipList, split: str, root: str, machine_type: str) -> list[Clip]:
    """The clips of ``split``; a clear error naming the expected folder when there are none."""
    selected = clip_list.select(split)
    if not selected:
        expected = os.path.join(root, machine_type, split)
        raise DatasetError(f"no {split} clips found for {machine_type!r}: expected wav files such as "
                           f"normal_id_00_00000000.wav in {expected!r} (or {os.path.join(root, split)!r})")
    return selected


# ---------------------------------------------------------------------------------------------------- supplemental


@dataclasses.dataclass(frozen=True)
class SupplementalClip:
    """One clip of a DCASE 2025 ``supplemental/`` folder: a clean machine recording or a noise-only recording.

    It has no split and no label: it is neither a training nor a test clip, and :func:`find_clips` never returns it.
    """

    path: str
    machine_type: str
    section: str
    kind: str  # "machine" (clean machine sound) | "noise" (noise only)
    domain: str | None = None  # "source" | "target" when the name says so
    attributes: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclasses.dataclass
class SupplementalList:
    """The supplemental clips of one machine type and the wav files there whose names fit no supplemental form."""

    clips: list[SupplementalClip]
    unmatched: list[str]
    folder: str | None = None  # the supplemental folder read; None when the machine folder has none

    def select(self, kind: str | None = None) -> list[SupplementalClip]:
        if kind is not None and kind not in SUPPLEMENTAL_KINDS:
            raise ValueError(f"supplemental kind {kind!r} is not one of {', '.join(SUPPLEMENTAL_KINDS)}")
        return [c for c in self.clips if kind is None or c.kind == kind]


def parse_supplemental_name(path: str, machine_type: str) -> SupplementalClip | None:
    """The supplemental clip a path names (forms in the module docstring), or None: words other than ``source``,
    ``target``, ``supplemental``, ``normal``, ``machine``, ``noise`` before the clip number, no kind word, both
    kinds or both domains."""
    m = _SUPPLEMENTAL.match(os.path.basename(path))
    if m is None:
        return None
    words = m["words"].lower().strip("_").split("_")
    kinds = [w for w in words if w in SUPPLEMENTAL_KINDS]
    domains = [w for w in words if w in DOMAINS]
    if not set(words) <= _SUPPLEMENTAL_WORDS or len(kinds) != 1 or len(domains) > 1:
        return None
    return SupplementalClip(path, machine_type, normalise_id(m["id"]), kinds[0], domains[0] if domains else None,
                            parse_attributes(m["rest"] or ""))


def find_supplemental(root: str, machine_type: str) -> SupplementalList:
    """The clips of ``<machine folder>/supplemental/`` (DCASE 2025: clean machine and noise-only recordings), sorted
    by path; ``root`` as in :func:`find_clips` (the dataset root or the machine folder). Names that fit no
    supplemental form are reported in :attr:`SupplementalList.unmatched`; attributes come from the name and the
    machine folder's ``attributes_XX.csv`` files. No such folder: an empty list."""
    if not os.path.isdir(root):
        raise DatasetError(f"data folder {root!r} does not exist; pass the DCASE root that holds "
                           f"{machine_type}/supplemental/")
    for folder in (os.path.join(root, machine_type), root):
        supplemental = os.path.join(folder, "supplemental")
        if os.path.isdir(supplemental):
            break
    else:
        return SupplementalList([], [])
    attributes = _folder_attributes(folder)
    clips, unmatched = [], []
    for path in _wavs(supplemental):
        clip = parse_supplemental_name(path, machine_type)
        if clip is None:
            unmatched.append(path)
            continue
        merged = {**clip.attributes, **attributes.get(clip.name, {})}
        clips.append(dataclasses.replace(clip, attributes=merged) if merged != clip.attributes else clip)
    if unmatched:
        log.warning("%s: %d wav files fit no supplemental name (section_XX_machine_NNNN..., section_XX_noise_NNNN...)"
                    ", e.g. %s; they are left out", supplemental, len(unmatched), os.path.basename(unmatched[0]))
    return SupplementalList(clips, unmatched, supplemental)


# ---------------------------------------------------------------------------------------------------- csv files


@dataclasses.dataclass
class GroundTruth:
    """What ground-truth files say about one clip; None where they say nothing."""

    label: int | None = None
    domain: str | None = None
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)


def _clip_name(cell: str) -> str:
    """The wav basename a CSV cell names: ``fan/test/x.wav``, ``x.wav`` and ``x`` all name ``x.wav``."""
    name = cell.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return name if name.lower().endswith(".wav") else name + ".wav"


def _csv_files(sources: str | Sequence[str]) -> list[str]:
    if isinstance(sources, str):
        sources = [s for s in sources.split(",") if s.strip()]
    files = []
    for source in (s.strip() for s in sources):
        if os.path.isdir(source):
            files += sorted(os.path.join(d, f) for d, _, names in os.walk(source) for f in names
                            if f.lower().endswith(".csv"))
        elif os.path.isfile(source):
            files.append(source)
        else:
            raise DatasetError(f"ground-truth file {source!r} does not exist")
    return files


def read_ground_truth(sources: str | Sequence[str]) -> dict[tuple[str | None, str], GroundTruth]:
    """{(machine type in lower case or None, clip basename): GroundTruth} from CSV files or folders of them.

    Accepted (header optional; first column the clip's file name, with or without a path or ``.wav``):

    * ``file,label`` with label 0/1 or normal/anomaly (2020-2026 ``ground_truth_data/`` files, DCASE 2021's
      ``ground_truth_<type>_section_XX_{source,target}_test.csv``);
    * ``file,label,domain`` (domain 0/1 or source/target), or a header naming ``label`` and ``domain`` columns;
    * a domain file, 2022+ ``ground_truth_domain/``: ``file,0|1`` (0 source, 1 target) - recognised by "domain" in
      its folder or file name;
    * ``eval_name,<dev-style name>`` (2023+ ``ground_truth_attributes/``): the dev-style name
      (``section_00_target_test_normal_0000_vel_12``) gives label, domain and attributes;
    * 2020's ``eval_data_list.csv`` and the baseline's ``eval_data_list_20XX.csv`` of later editions: one-cell rows
      name the machine type of the rows below, rows ``eval_name,dev_name[,label]``;
    * attribute files (header ``file_name,d1p,d1v,...``), as :func:`read_attribute_csv`.

    The machine type comes from a ``ground_truth_<type>_section_...`` file name or the 2020 type rows; other entries
    apply to clips of any type. Conflicting labels or domains for one clip, or a cell that is no label, raise
    DatasetError naming the file.
    """
    table: dict[tuple[str | None, str], GroundTruth] = {}
    for path in _csv_files(sources):
        base = os.path.basename(path)
        m = _GROUND_TRUTH_FILE.match(base)
        file_type = m["type"].lower() if m else None
        is_domain = "domain" in base.lower() or "domain" in os.path.basename(os.path.dirname(path)).lower()
        for machine_type, name, entry in _ground_truth_rows(path, is_domain):
            _merge(table, (machine_type or file_type, name), entry, path)
    return table


def _merge(table: dict, key: tuple, entry: GroundTruth, path: str) -> None:
    current = table.setdefault(key, GroundTruth())
    for field in ("label", "domain"):
        new, old = getattr(entry, field), getattr(current, field)
        if new is not None and old is not None and new != old:
            raise DatasetError(f"{path}: {key[1]} has {field} {new!r} here but {old!r} in another ground-truth row")
        if new is not None:
            setattr(current, field, new)
    current.attributes.update(entry.attributes)


def _ground_truth_rows(path: str, is_domain: bool):
    """(machine type or None, clip name, GroundTruth) for every data row of one CSV file."""
    with open(path, newline="") as handle:
        rows = [[c.strip() for c in row] for row in csv.reader(handle)]
    rows = [row[:max(i for i, c in enumerate(row) if c) + 1] for row in rows if any(row)]
    if not rows:
        return
    header = [c.lower() for c in rows[0]]
    if header[0] in _FILE_COLUMNS:
        if any(_ATTRIBUTE_PAIR.match(c) for c in header):
            for name, attributes in read_attribute_csv(path).items():
                yield None, name, GroundTruth(attributes=attributes)
            return
        label_column = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
        domain_column = header.index("domain") if "domain" in header else None
        for number, row in enumerate(rows[1:], 2):
            label = _cell(row, label_column, _LABELS, path, number, "label")
            domain = _cell(row, domain_column, _DOMAIN_VALUES, path, number, "domain")
            yield None, _clip_name(row[0]), GroundTruth(label, domain)
        return
    machine_type = None
    for number, row in enumerate(rows, 1):
        if len(row) == 1:
            if not row[0].lower().endswith(".wav"):
                machine_type = row[0].lower()
            continue
        yield machine_type, _clip_name(row[0]), _row_truth(row, is_domain, path, number)


def _cell(row: list[str], column: int | None, values: dict, path: str, number: int, what: str):
    if column is None or column >= len(row) or not row[column]:
        return None
    value = values.get(row[column].lower())
    if value is None:
        raise DatasetError(f"{path}, row {number}: {what} {row[column]!r} for {row[0]!r} is not one of "
                           f"{', '.join(sorted(set(values)))}")
    return value


def _row_truth(row: list[str], is_domain: bool, path: str, number: int) -> GroundTruth:
    """A header-less row. Cells after the file name: dev-style names (label, domain, attributes), then plain values
    by position: label then domain (a domain file: domain only; ``source``/``target`` is always a domain)."""
    entry, plain, unknown = GroundTruth(), [], []
    for cell in row[1:]:
        value = cell.lower()
        if value in _LABELS or value in _DOMAIN_VALUES:
            plain.append(value)
            continue
        kind, m = _match(_clip_name(cell))
        if kind in ("section_dev", "2020_dev"):
            entry.label = NORMAL if m["label"].lower() == "normal" else ANOMALY
        if kind == "section_dev":
            entry.domain = m["domain"].lower()
            entry.attributes = parse_attributes(m["rest"])
        elif kind != "2020_dev":
            unknown.append(cell)
    label_done = is_domain
    for value in plain:
        role = "domain" if label_done or value in DOMAINS else "label"
        label_done |= role == "label"
        values = _LABELS if role == "label" else _DOMAIN_VALUES
        if value not in values:
            unknown.append(value)
            continue
        if getattr(entry, role) not in (None, values[value]):
            raise DatasetError(f"{path}, row {number}: {row[0]!r} has two different {role}s")
        setattr(entry, role, values[value])
    if unknown and (len(row) == 2 or (entry.label is None and entry.domain is None)):
        what = "domain" if is_domain else "label"
        raise DatasetError(f"{path}, row {number}: {what} {unknown[0]!r} for {row[0]!r} is not 0/1, "
                           f"normal/anomaly, source/target or a DCASE dev file name")
    return entry


def read_attribute_csv(path: str) -> dict[str, dict[str, str]]:
    """{clip basename: attributes} from a DCASE ``attributes_XX.csv`` (header ``file_name,d1p,d1v,d2p,d2v,...``:
    pairs of parameter name and value; rows name clips as ``<type>/<split>/<name>.wav``, with or without the folder
    and ``.wav``). Empty pairs and hidden ones (``noAttribute`` as the parameter or the value, as 2024-2026 write
    them) are dropped, so a clip whose values are all hidden has no attributes; any other column is kept under its
    own name."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        columns = [c.strip().lower() for c in next(reader, [])]
        file_column = next((i for i, c in enumerate(columns) if c in _FILE_COLUMNS), None)
        if file_column is None:
            raise DatasetError(f"{path}: no file_name column (columns: {', '.join(columns) or 'none'})")
        pairs = sorted({int(m["n"]) for c in columns if (m := _ATTRIBUTE_PAIR.match(c))})
        paired = {f"d{n}{kind}" for n in pairs for kind in "pv"}
        others = [c for i, c in enumerate(columns) if i != file_column and c not in paired]
        result = {}
        for cells in reader:
            row = dict(zip(columns, (c.strip() for c in cells)))
            if not row.get(columns[file_column]):
                continue
            attributes = {row[f"d{n}p"]: row.get(f"d{n}v", "") for n in pairs
                          if row.get(f"d{n}p") and _HIDDEN not in (row[f"d{n}p"].lower(),
                                                                   row.get(f"d{n}v", "").lower())}
            attributes.update({c: row[c] for c in others if row.get(c) and row[c].lower() != _HIDDEN})
            result[_clip_name(row[columns[file_column]])] = attributes
    return result


def _folder_attributes(folder: str) -> dict[str, dict[str, str]]:
    """Attributes from every ``attributes_*.csv`` in a machine folder (none: {})."""
    attributes = {}
    for name in sorted(os.listdir(folder)):
        if name.lower().startswith("attributes_") and name.lower().endswith(".csv"):
            attributes.update(read_attribute_csv(os.path.join(folder, name)))
    return attributes
