"""The clips of a run, from its config: which folder, which machine types, which clips train, which are held out.

``config.data_dir`` names a DCASE folder; left empty, the embedded synthetic slide-rail set is generated once and
cached (:mod:`asd_jax.data.synthetic`). A run reads one machine type; ``machine_type="all"`` or a comma list names
several (:func:`machine_types`), each run on its own. Like the rest of :mod:`asd_jax.data`, nothing here imports JAX.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
import dataclasses
import json
import logging

import numpy as np

from asd_jax.data import audio, dcase, synthetic, synthetic_world
from asd_jax.data.features import FeatureConfig

log = logging.getLogger(__name__)


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (comma lists of machine ids, types, methods)."""
    return [item.strip() for item in str(text).split(",") if item.strip()]


AUTO_CHANNEL = "auto"


def channel_for(setting, edition: str | None) -> str:
    """The channel a ``features.channel`` setting means for data of ``edition``: "auto" is channel 0 (the near
    microphone, as the official baseline) for DCASE 2026's two-channel clips and the channel average otherwise (raw
    8-channel MIMII becomes one virtual microphone; mono clips are unchanged); an explicit setting is kept."""
    if str(setting).strip().lower() != AUTO_CHANNEL:
        return setting
    return "0" if edition == "dcase2026" else "mean"


def resolve_channel(config, edition: str | None) -> None:
    """Set ``features.channel`` to what it means for the data's edition (:func:`channel_for`), in place."""
    with config.unlocked():
        config.features.channel = channel_for(config.features.get("channel", "mean"), edition)


AUTO_DURATION = 0.0  # features.duration_s: the longest training clip's length


def duration_for(setting: float, clips: Sequence[dcase.Clip]) -> float:
    """The clip length (s) a ``features.duration_s`` setting means for a run's training clips: 0 (auto) is the
    longest of them, read from the files' headers, as the reference recipes pad every clip to their data set's
    longest (ASDKit); an explicit length is kept. Clips of another length are tiled or cropped to it when read
    (:func:`asd_jax.data.audio.fit_length`)."""
    if float(setting) > AUTO_DURATION:
        return float(setting)
    if not clips:
        return audio.DURATION_S
    lengths = sorted({round(audio.clip_seconds(c.path), 6) for c in clips})
    if len(lengths) > 1:
        log.info("training clips last %s s: features.duration_s=0 takes the longest, %g s; shorter clips are tiled",
                 ", ".join(f"{x:g}" for x in lengths[:6]) + (", ..." if len(lengths) > 6 else ""), lengths[-1])
    return lengths[-1]


def resolve_duration(config, clips: Sequence[dcase.Clip]) -> None:
    """Set ``features.duration_s`` to what it means for these training clips (:func:`duration_for`), in place."""
    with config.unlocked():
        config.features.duration_s = duration_for(config.features.get("duration_s", AUTO_DURATION), clips)


def feature_config(config) -> FeatureConfig:
    """The log-mel settings of a run (``features``); a channel still "auto" (no data seen, e.g. the benchmark)
    means the channel average, a duration still 0 (auto) the 10 s of DCASE's clips."""
    settings = config.features.to_dict()
    settings["channel"] = channel_for(settings.get("channel", "mean"), None)
    if float(settings.get("duration_s", AUTO_DURATION)) <= AUTO_DURATION:
        settings["duration_s"] = audio.DURATION_S
    if not settings.get("fmax"):  # 0 (or a config saved before the key): up to the Nyquist frequency
        settings["fmax"] = None
    return FeatureConfig(**settings)


SYNTH_SIZES = ("default", "dcase_dev")


def synth_config(config) -> synthetic.SynthConfig | synthetic_world.WorldConfig:
    """The synthetic set the config asks for: ``synthetic.layout`` dcase2020 or dcase2023 (the slide rail) or
    dcase2025 (the DCASE-like world of several machine types), at ``synthetic.size`` default or dcase_dev."""
    settings = config.synthetic
    size = settings.get("size", "default")
    if size not in SYNTH_SIZES:
        raise ValueError(f"synthetic.size={size!r}: choose one of {', '.join(SYNTH_SIZES)}")
    common = {"seed": settings.seed, "snr_db": settings.snr_db}
    if settings.layout == synthetic_world.LAYOUT:
        return synthetic_world.WorldConfig.dcase_dev_size(**common) if size == "dcase_dev" else \
            synthetic_world.WorldConfig(**common)
    if size == "dcase_dev":
        return synthetic.SynthConfig.dcase2023_dev_size(**common) if settings.layout == "dcase2023" else \
            synthetic.SynthConfig.dcase_dev_size(layout=settings.layout, **common)
    return synthetic.SynthConfig(layout=settings.layout, **common)


def _generate(config, out_dir: str | None) -> str | dict:
    """Generate the configured synthetic set into ``out_dir`` (a summary), or the cached default (its root)."""
    wanted = synth_config(config)
    world = isinstance(wanted, synthetic_world.WorldConfig)
    workers = config.num_workers or None
    if out_dir:
        generate = synthetic_world.generate_world if world else synthetic.generate_dataset
        return generate(out_dir, wanted, num_workers=workers, progress=config.progress)
    cached = synthetic_world.default_world if world else synthetic.default_dataset
    return cached(config.cache_dir or None, wanted, num_workers=workers, progress=config.progress)


def resolve_data_dir(config) -> str:
    """``config.data_dir``, or the embedded synthetic set (generated once, cached)."""
    if config.data_dir:
        return config.data_dir
    root = _generate(config, None)
    kind = "slide-rail" if config.synthetic.layout != synthetic_world.LAYOUT else "DCASE-like"
    print(f"using the synthetic {kind} data set at {root} (not MIMII: see README)")
    return root


def synthesize(config) -> dict:
    """``--mode=synth``: write the synthetic set to ``config.data_dir`` (or make the cached default one)."""
    generator = synthetic_world if config.synthetic.layout == synthetic_world.LAYOUT else synthetic
    print(generator.describe())
    if not config.data_dir:
        root = resolve_data_dir(config)
        print(f"synthetic data set ready at {root}")
        return {"data_dir": root}
    return _generate(config, config.data_dir)


HELDOUT_WANTED = 20  # held-out clips a threshold wants (evaluate.thresholds.MIN_HELDOUT says why)
HELDOUT_MAX_SHARE = 6  # ... taken from at most a sixth of a group's clips


def holdout_count(size: int, fraction: float) -> int:
    """How many of a group's ``size`` normal training clips are held out: ``fraction`` of them, raised towards the
    20 clips a threshold wants (:data:`HELDOUT_WANTED`) as long as that leaves five sixths to train on (120 clips:
    20, not 12; 60 clips: 10; 20 clips: 3). A group of one clip keeps it."""
    if size <= 1:
        return 0
    return max(int(round(fraction * size)), min(HELDOUT_WANTED, size // HELDOUT_MAX_SHARE))


def holdout(clips: list[dcase.Clip], fraction: float, seed: int) -> tuple[list[dcase.Clip], list[dcase.Clip]]:
    """(fit, validation): a seeded share of each machine id's (section's) normal training clips is held out
    (:func:`holdout_count`), per domain where clips have one, so that each domain can get its own threshold."""
    fit, validation = [], []
    rng = np.random.default_rng(seed)
    for machine_id, domain in sorted({(c.machine_id, c.domain or "") for c in clips}):
        group = [c for c in clips if c.machine_id == machine_id and (c.domain or "") == domain]
        count = holdout_count(len(group), fraction) if fraction > 0 else 0
        chosen = set(rng.permutation(len(group))[:count].tolist())
        for index, clip in enumerate(group):
            (validation if index in chosen else fit).append(clip)
    return fit, validation


@dataclasses.dataclass
class Data:
    """The clips of one run: normal training clips split into fit and held-out, and the test clips."""

    data_dir: str
    test_data_dir: str
    fit: list[dcase.Clip]
    validation: list[dcase.Clip]
    test: list[dcase.Clip]
    unmatched: list[str]
    edition: str = "dcase2020"  # the DCASE edition whose protocol scores the run
    edition_reason: str = ""
    key: str = ""  # data_key() of the config it was loaded for
    supplemental: list[dcase.SupplementalClip] = dataclasses.field(default_factory=list)  # DCASE 2025 extras

    def supplemental_clips(self, kind: str) -> list[dcase.Clip]:
        """The supplemental clips of ``kind`` ("machine": clean machine recordings, extra normal training data;
        "noise": noise-only recordings) as normal training clips of their section (source domain unless named)."""
        return [dcase.Clip(c.path, c.machine_type, c.section, "train", dcase.NORMAL, c.domain or "source", c.section,
                           dict(c.attributes)) for c in self.supplemental if c.kind == kind]


DATA_SETTINGS = ("data_dir", "test_data_dir", "machine_type", "machine_ids", "ground_truth_csv", "val_fraction",
                 "data_seed", "dcase_edition", "mimii_test_normals")


def data_key(config) -> str:
    """The settings that decide which clips a run reads, as one string (runs with equal keys share data)."""
    return json.dumps({key: config.get(key) for key in DATA_SETTINGS}, sort_keys=True, default=str)


def _find(config, root: str, machine_type: str) -> dcase.ClipList:
    return dcase.find_clips(root, machine_type, split_list(config.machine_ids) or None,
                            config.ground_truth_csv or None, edition=config.get("dcase_edition") or None,
                            mimii_test_normals=config.get("mimii_test_normals"))


def find_data(config, data_dir: str | None = None) -> tuple[dcase.ClipList, dcase.ClipList, str, str]:
    """(training-side clips, test-side clips, edition, why): with a separate ``test_data_dir`` the edition is
    detected from both folders' names together (or taken from ``dcase_edition``). ``data_dir``: the resolved
    :func:`resolve_data_dir` when the caller has it."""
    if several_types(config):
        raise dcase.DatasetError(
            f"machine_type={config.machine_type!r} names several machine types: --mode=train runs one detector per "
            "type; in a sweep make machine_type an axis (experiment.product({'machine_type': ['fan', 'valve']}))")
    data_dir = data_dir or resolve_data_dir(config)
    found = _find(config, data_dir, config.machine_type)
    test_data_dir = config.get("test_data_dir") or data_dir
    test_found = found if test_data_dir == data_dir else _find(config, test_data_dir, config.machine_type)
    edition, reason = found.edition, found.edition_reason
    if test_found is not found and not config.get("dcase_edition"):
        if "mimii" in (found.layout, test_found.layout):
            if test_found.edition not in (None, edition):
                raise dcase.DatasetError(f"the training clips are {edition} ({reason}) but the test clips "
                                         f"{test_found.edition} ({test_found.edition_reason})")
        else:
            channels = found.channels if found.channels == test_found.channels else None
            edition, reason = dcase.detect_edition([c.path for c in found.clips + test_found.clips],
                                                   config.machine_type, channels=channels,
                                                   supplemental=found.supplemental or test_found.supplemental)
    return found, test_found, edition or "dcase2020", reason


def load_types(config, types: Sequence[str], edition: str | None = None) -> Data:
    """The clips of several machine types as one :class:`Data` (one model over every type): each type's clips as
    :func:`load_data` finds them (``edition`` imposed on every type when given), concatenated."""
    parts = []
    for machine_type in types:
        type_config = copy.deepcopy(config)
        with type_config.unlocked():
            type_config.machine_type = machine_type
            if edition:
                type_config.dcase_edition = edition
        parts.append(load_data(type_config))
    editions = sorted({part.edition for part in parts})
    if len(editions) != 1:
        raise dcase.DatasetError(f"the machine types {', '.join(types)} are of different DCASE editions "
                                 f"({', '.join(editions)}): pass --config.dcase_edition to score them alike")
    first = parts[0]
    joined = lambda field: [item for part in parts for item in getattr(part, field)]
    return Data(first.data_dir, first.test_data_dir, joined("fit"), joined("validation"), joined("test"),
                joined("unmatched"), first.edition, first.edition_reason, data_key(config), joined("supplemental"))


def load_data(config) -> Data:
    """The run's clips: training normals split into fit and held-out (:func:`holdout`), and the test clips."""
    data_dir = resolve_data_dir(config)
    found, test_found, edition, reason = find_data(config, data_dir)
    train_clips = dcase.require_split(found, "train", data_dir, config.machine_type)
    test_data_dir = config.get("test_data_dir") or data_dir
    test_clips = dcase.require_split(test_found, "test", test_data_dir, config.machine_type)
    unmatched = found.unmatched + (test_found.unmatched if test_found is not found else [])
    for path in unmatched:
        log.warning("ignoring %s: its name fits no DCASE pattern", path)
    anomalous_train = [c for c in train_clips if c.label != dcase.NORMAL]
    if anomalous_train:
        raise dcase.DatasetError(f"{anomalous_train[0].path}: training clips must be normal; move anomalies to test/")
    fit_clips, validation_clips = holdout(train_clips, config.val_fraction, config.data_seed)
    supplemental = dcase.find_supplemental(data_dir, config.machine_type)
    for path in supplemental.unmatched:
        log.warning("ignoring %s: its name fits no DCASE 2025 supplemental pattern", path)
    return Data(data_dir, test_data_dir, fit_clips, validation_clips, test_clips, unmatched, edition, reason,
                data_key(config), supplemental.clips)


def several_types(config) -> bool:
    """Whether ``config.machine_type`` names several machine types ("all" or a comma list)."""
    text = str(config.machine_type).strip()
    return text.lower() == "all" or "," in text


def machine_types(config) -> list[str] | None:
    """The machine types of a multi-type run (``machine_type="all"``: every type under the data folder; or a comma
    list), or None for a run of one type."""
    text = str(config.machine_type).strip()
    if not several_types(config):
        return None
    if text.lower() == "all":
        root = resolve_data_dir(config)
        types = dcase.list_machine_types(root)
        if not types:
            raise dcase.DatasetError(f"machine_type='all': no machine type folders under {root!r}")
        return types
    types = split_list(text)
    if len(set(types)) != len(types) or any(t.lower() == "all" for t in types):
        raise ValueError(f"machine_type={text!r}: name each machine type once (or pass 'all' alone)")
    return types


def common_edition(config, types: list[str]) -> str | None:
    """The edition to impose on every type when their names alone suggest different ones (None: no need).

    Detection is per type and a type whose names fit several editions gets a best guess; when exactly one
    edition was decided by a rule (not guessed), every type is scored under it. Otherwise: DatasetError."""
    if config.get("dcase_edition"):
        return None
    detected = {}
    for machine_type in types:
        type_config = copy.deepcopy(config)
        with type_config.unlocked():
            type_config.machine_type = machine_type
        _, _, edition, reason = find_data(type_config)
        detected[machine_type] = (edition, reason)
    editions = {edition for edition, _ in detected.values()}
    if len(editions) <= 1:
        return None
    decided = {edition for edition, reason in detected.values() if "best guess" not in reason}
    if len(decided) == 1:
        chosen = decided.pop()
        log.warning("the machine types' names suggest %s; scoring every type as %s (pass --config.dcase_edition "
                    "to choose)", ", ".join(f"{t}: {e}" for t, (e, _) in detected.items()), chosen)
        return chosen
    raise dcase.DatasetError("the machine types fit different DCASE editions (" + "; ".join(
        f"{t}: {e} ({r})" for t, (e, r) in detected.items()) + "); pass --config.dcase_edition to choose one")
