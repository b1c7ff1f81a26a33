"""A declared experiment: a base config and the points of its swept axes -> members -> groups -> settings.

* A **point** assigns values to config paths (``{"lstm.hidden_size": 32, "seed": 1}``). :func:`product`,
  :func:`quasi_random` (a Halton sequence over continuous axes) and :func:`chain` build lists of points; a sweep
  file returns such a list from ``get_sweep()``.
* A **member** is one point with one seed: the unit that trains. Its name is unique (the swept values, then the
  seed) and names its ``score_<member>`` column.
* A **group** is the members that share every array shape and the step count: they train together in one compiled
  program, the member axis carrying the seed and the shape-free optimiser values (:data:`SHAPE_FREE`). Members of a
  method that does not train on the ensemble trainer (the OC-SVMs) are one group each.
* A **setting** is a point without its seed; its figures are the mean and the sample standard deviation over its
  seeds of each member's figures (:func:`asd_jax.evaluate.results.setting_figures`).

A swept path must exist in the config and be read by the member's method (``gru_ae.hidden_size`` in a sweep of
``lstm`` is refused), and every member's config must pass :func:`asd_jax.config.check`: a sweep never silently
varies a setting that nothing reads.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from asd_jax import config as config_lib
from asd_jax.evaluate.results import unique
from asd_jax.evaluate.tables import format_value
from asd_jax.methods import registry
from asd_jax.train import ensemble, optim

SHAPE_FREE = optim.HYPERPARAMETERS  # under <section>.train: vary per member inside one compiled program
ABBREVIATIONS = {"learning_rate": "lr", "hidden_size": "hidden", "num_layers": "layers", "weight_decay": "wd",
                 "grad_clip_norm": "clip", "batch_size": "batch", "warmup_epochs": "warmup", "machine_type": "",
                 "method": ""}


# ----------------------------------------------------------------------------------------------------------------------
# Declaring points.


def product(axes: Mapping[str, Sequence]) -> list[dict]:
    """Every combination of the axes' values, the first axis varying slowest."""
    paths = list(axes)
    for path in paths:
        if isinstance(axes[path], (str, bytes)) or not isinstance(axes[path], Iterable):
            raise ValueError(f"axis {path!r}: give a list of values, not {axes[path]!r}")
    return [dict(zip(paths, values)) for values in itertools.product(*(list(axes[p]) for p in paths))]


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)
SCALES = ("linear", "log")


def _radical_inverse(index: int, base: int) -> float:
    """The ``index``-th element of the van der Corput sequence in ``base`` (digits mirrored about the point)."""
    value, fraction = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        value += digit * fraction
        fraction /= base
    return value


def quasi_random(n: int, seed: int, axes: Mapping[str, tuple]) -> list[dict]:
    """``n`` points of the continuous ``axes`` ({path: (low, high, "log" | "linear")}) from a Halton sequence, as
    the deep-learning tuning playbook recommends over a grid or plain random search: the points cover the box
    evenly at any ``n``, so a sweep can be stopped or extended. One prime base per axis; ``seed`` shifts every
    coordinate by a seeded random offset modulo 1 (a Cranley-Patterson rotation), so different seeds give
    different, equally even point sets. "log" axes are spread evenly in log space (learning rates, weight decay)."""
    if n < 1:
        raise ValueError(f"quasi_random needs n >= 1 points; got {n}")
    if not axes or len(axes) > len(_PRIMES):
        raise ValueError(f"quasi_random takes 1 to {len(_PRIMES)} axes; got {len(axes)}")
    for path, spec in axes.items():
        if len(spec) != 3 or spec[2] not in SCALES:
            raise ValueError(f"axis {path!r}: give (low, high, 'log' | 'linear'); got {spec!r}")
        low, high, scale = spec
        if not low < high or (scale == "log" and low <= 0):
            raise ValueError(f"axis {path!r}: need low < high (and low > 0 on a log scale); got {spec!r}")
    shifts = np.random.default_rng(seed).random(len(axes))
    points = []
    for index in range(1, n + 1):  # index 0 is the corner (0, ..., 0) of every Halton sequence: skipped
        point = {}
        for (path, (low, high, scale)), base, shift in zip(axes.items(), _PRIMES, shifts):
            unit = (_radical_inverse(index, base) + shift) % 1.0
            if scale == "log":
                point[path] = float(np.exp(np.log(low) + unit * (np.log(high) - np.log(low))))
            else:
                point[path] = float(low + unit * (high - low))
        points.append(point)
    return points


def chain(*point_lists: Sequence[Mapping]) -> list[dict]:
    """Several lists of points one after another (e.g. a product plus a few explicit points)."""
    return [dict(point) for points in point_lists for point in points]


# ----------------------------------------------------------------------------------------------------------------------
# Members and groups.


@dataclasses.dataclass
class MemberSpec:
    name: str
    seed: int
    setting: dict  # swept path -> value, without the seed
    config: ml_collections.ConfigDict  # the member's whole config (seed = its seed, num_seeds = 1)

    @property
    def setting_label(self) -> str:
        """The setting's name in tables ("default" for a plain run)."""
        return setting_name(self.setting) or "default"

    @property
    def method(self) -> registry.Method:
        return registry.get(self.config.method)

    def member(self) -> ensemble.Member:
        """The trainer's view: seed and shape-free optimiser values (none for a non-ensemble method)."""
        if self.method.kind != "ensemble":
            return ensemble.Member.create(self.seed, self.name)
        return ensemble.Member.create(self.seed, self.name,
                                      **optim.hyperparameters(self.config[self.method.section].train))

    def describe(self) -> dict:
        return {"name": self.name, "seed": self.seed, "setting": self.setting, "hparams": self.member().values}


@dataclasses.dataclass
class Group:
    name: str
    shape: dict  # the swept values that are not shape-free: what sets this group apart
    members: list[MemberSpec]

    @property
    def config(self) -> ml_collections.ConfigDict:
        """The settings every member shares (the first member's config; seeds and shape-free values per member)."""
        config = copy.deepcopy(self.members[0].config)
        with config.unlocked():
            config.num_seeds = len({m.seed for m in self.members})
        return config

    @property
    def settings(self) -> list[dict]:
        return unique([m.setting for m in self.members])




def _set(config: ml_collections.ConfigDict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = config
    for parent in parents:
        if parent not in node or not isinstance(node[parent], ml_collections.ConfigDict):
            raise ValueError(f"axis {path!r}: {parent!r} is not a config section")
        node = node[parent]
    if leaf not in node:
        raise ValueError(f"axis {path!r}: no such setting (see asd_jax/config.py)")
    if isinstance(node[leaf], ml_collections.ConfigDict):
        raise ValueError(f"axis {path!r} is a whole section; sweep one of its settings")
    current = node[leaf]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    with node.unlocked():
        node[leaf] = value


def get_path(config, path: str):
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def _labels(paths: Sequence[str]) -> dict[str, str]:
    """A short label per path (its last part, abbreviated); the whole path where two last parts collide."""
    short = {path: ABBREVIATIONS.get(path.split(".")[-1], path.split(".")[-1]) for path in paths}
    counts = {label: list(short.values()).count(label) for label in short.values()}
    return {path: (label if counts[label] == 1 else path.replace(".", "-")) for path, label in short.items()}


def setting_name(setting: Mapping, labels: Mapping[str, str] | None = None) -> str:
    labels = labels or _labels(list(setting))
    return "_".join(f"{labels[path]}{format_value(value)}" for path, value in setting.items())


def expand(base: ml_collections.ConfigDict, points: Sequence[Mapping] | None = None) -> list[MemberSpec]:
    """One member per (point, seed). A point without ``seed`` takes ``base.num_seeds`` seeds from ``base.seed``."""
    points = [dict(point) for point in (points or [{}])]
    if not points:
        raise ValueError("the sweep declares no points")
    labels = _labels(list(dict.fromkeys(path for point in points for path in point if path != "seed")))
    members = []
    for point in points:
        config = copy.deepcopy(base)
        for path, value in point.items():
            if path != "seed":
                _set(config, path, value)
        for path in point:
            if not config_lib.is_read(config, path):
                raise ValueError(f"axis {path!r} is not read by method {config.method!r} (it reads "
                                 f"{', '.join(sorted(config_lib.sections_read(config)))} and the top-level "
                                 "settings): drop it from the sweep")
        config_lib.check(config)
        seeds = [int(point["seed"])] if "seed" in point else list(range(config.seed, config.seed + config.num_seeds))
        setting = {path: value for path, value in point.items() if path != "seed"}
        for seed in seeds:
            member_config = copy.deepcopy(config)
            with member_config.unlocked():
                member_config.seed, member_config.num_seeds = seed, 1
            prefix = setting_name(setting, labels)
            members.append(MemberSpec(f"{prefix}_seed{seed}" if prefix else f"seed{seed}", seed, setting,
                                      member_config))
    names = [m.name for m in members]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"the sweep declares the same member twice: {', '.join(duplicates)}")
    return members


def shape_key(member: MemberSpec) -> str:
    """What a member shares with every member of its group: its config without the seed, the shape-free values and
    the run-level settings (for a method off the ensemble trainer, the seed stays: one member per group)."""
    config = member.config.to_dict()
    for key in (*config_lib.RUN_LEVEL, "num_seeds"):
        config.pop(key, None)
    method = member.method
    if method.kind == "ensemble":
        config.pop("seed")
        for name in SHAPE_FREE:
            config[method.section]["train"].pop(name)
    return json.dumps(config, sort_keys=True, default=str)


def group(members: Sequence[MemberSpec]) -> list[Group]:
    """Members grouped by :func:`shape_key`, in the order their groups first appear; each group is named by the
    swept values that set it apart."""
    by_key: dict[str, list[MemberSpec]] = {}
    for member in members:
        by_key.setdefault(shape_key(member), []).append(member)
    swept = list(dict.fromkeys(path for m in members for path in m.setting))
    shape_paths = [p for p in swept if not _is_shape_free(members[0].config, p)]
    labels = _labels(swept)
    groups, used = [], set()
    for grouped in by_key.values():
        first = grouped[0]
        shape = {path: first.setting[path] for path in shape_paths if path in first.setting}
        name = setting_name(shape, labels) or "main"
        if first.method.kind != "ensemble":
            name = f"{name}_seed{first.seed}" if shape else f"seed{first.seed}"
        while name in used:
            name += "_"
        used.add(name)
        groups.append(Group(name, shape, grouped))
    return groups


def _is_shape_free(config, path: str) -> bool:
    parts = path.split(".")
    return path == "seed" or (len(parts) == 3 and parts[1] == "train" and parts[2] in SHAPE_FREE)
