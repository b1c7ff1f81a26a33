"""Synthetic slide-rail recordings in a DCASE Task 2 dev layout: the project's built-in default data set.

The real DCASE/MIMII recordings cannot be shipped or downloaded everywhere, so the project makes its own. A clip is a
physical toy model of a slide rail (carriage moving back and forth under a motor) mixed with factory background:

* motion: back-and-forth strokes with a trapezoidal velocity profile and a dwell at each end; per-clip phase and a
  slight speed jitter;
* motor hum: a fundamental and harmonics whose frequency follows the speed, with slow drift, plus mains hum;
* friction: band-passed noise whose amplitude follows |velocity| and the rail's roughness at the carriage position;
* end stops: decaying multi-mode resonances where each stroke stops, a softer one where the next stroke starts;
* background: pink/brown noise, distant machinery hum and random distant clanks, mixed at ``snr_db``.

Each machine id has its own mechanics, drawn from (seed, id). Anomalous test clips carry one fault with a severity in
(0, 1]: ``rail_damage`` (clicks where the rollers cross a damaged spot, on every pass), ``no_lubrication`` (squeal
that follows the velocity), ``loose_belt`` (bursts of rattle clicks while moving) or ``speed_change`` (strokes
faster or slower than the machine's normal speed).

Every clip draws its randomness from generators seeded by (seed, id, split, label, index, component), so a clip is
byte-identical however many clips or workers there are, and a fault draws from its own stream: a clip rendered
with severity 0 is the same recording without the fault.

Layouts (``SynthConfig.layout``):

* ``"dcase2020"`` (default): ``<root>/slider/{train,test}/{normal|anomaly}_id_XX_NNNNNNNN.wav``, one unit per
  machine id.
* ``"dcase2023"``: ``<root>/slider/{train,test}/section_XX_{source|target}_{split}_{label}_NNNN_vel_V_snr_S.wav``
  plus ``<root>/slider/attributes_XX.csv`` (``file_name,d1p,d1v,d2p,d2v``), one section per machine id (default:
  section 00 only, as in DCASE 2023+). The source domain runs at nominal carriage speed and ``snr_db``; the target
  domain is a shifted operating condition: ``target_speed`` times faster and ``target_snr_offset_db`` more
  background. Source clips are the very recordings of the dcase2020 layout (same seeds); target clips draw from
  their own streams. Training sets are scarce in the target domain, as in DCASE 2022+ (990 source + 10 target
  per section): by default 120 source + 10 target training clips and, per domain, 40 normal + 40 anomalous test
  clips (DCASE: 50 + 50); :meth:`SynthConfig.dcase2023_dev_size` gives DCASE's counts.

Made with ``python launch.py --mode=synth --data_dir=DIR`` (``--config.synthetic.layout=dcase2023``,
``--config.synthetic.size=dcase_dev``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import re
import time
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import soundfile as sf
from scipy import signal

from asd_jax import fileio
from asd_jax import progress as progress_output
from asd_jax.data.dcase import normalise_id

GENERATOR_VERSION = 1  # bump when the sound changes, so cached data sets are made again
ANOMALY_KINDS = ("rail_damage", "no_lubrication", "loose_belt", "speed_change")
MANIFEST = "synthetic.json"
NOTE = ("Synthetic slide-rail audio made by asd_jax.data.synthetic; NOT MIMII/DCASE recordings. Results on it say "
        "nothing about performance on real machines.")
# The real DCASE 2020 Task 2 slider dev set: (train normal, test normal, test anomaly) per machine id.
DCASE_DEV_COUNTS = {"00": (968, 100, 356), "02": (968, 100, 267), "04": (434, 100, 178), "06": (434, 100, 89)}

_OUTPUT_DBFS = -30.0  # mixture level before the per-clip gain jitter
_DEV_NAME = re.compile(r"^((normal|anomaly)_id_\d+_\d+|section_\d+_(source|target)_(train|test)_(normal|anomaly)_\d+.*)"
                       r"\.wav$")
_ATTRIBUTES_CSV = re.compile(r"^attributes_\d+\.csv$")
LAYOUTS = ("dcase2020", "dcase2023")
DOMAINS = ("source", "target")
_DCASE2023_FIELDS = ("layout", "num_train_target", "target_speed", "target_snr_offset_db")
# The DCASE 2022-2024 dev sets per section: (source train, target train, test normal and test anomaly per domain).
DCASE2023_DEV_COUNTS = (990, 10, 50, 50)

Count = int | tuple[int, ...]


def _per_id(value, machine_ids: tuple[str, ...], name: str, scalar_type: type) -> object:
    """A setting given once for all ids, per id as a mapping, or as a sequence aligned with ``machine_ids``."""
    if isinstance(value, scalar_type):
        return value
    if isinstance(value, Mapping):
        mapping = {normalise_id(k): v for k, v in value.items()}
        missing = [i for i in machine_ids if i not in mapping]
        if missing:
            raise ValueError(f"{name} gives no value for machine ids {missing}")
        value = [mapping[i] for i in machine_ids]
    value = tuple(value)
    if len(value) != len(machine_ids):
        raise ValueError(f"{name} has {len(value)} entries for {len(machine_ids)} machine ids {machine_ids}")
    return value


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """What to generate. Counts and anomaly kinds are given once for all ids, or per id (a mapping id -> value, or a
    tuple aligned with ``machine_ids``); per-id values are stored as aligned tuples so the config stays hashable.

    In the ``"dcase2023"`` layout each machine id is a section; ``num_train`` counts the source-domain training
    clips, ``num_train_target`` the target-domain ones, and the test counts are per domain. ``machine_ids`` None
    gives ids 00, 02, 04, 06 (dcase2020) or section 00 (dcase2023). The dcase2023-only fields are left out of
    :meth:`to_json` for the dcase2020 layout, so its manifest and cache folder are what they were before they
    existed.
    """

    machine_type: str = "slider"
    machine_ids: tuple[str, ...] | None = None
    num_train: Count = 120  # normal training clips per id (dcase2023: source domain)
    num_test_normal: Count = 40  # per id (dcase2023: per domain)
    num_test_anomaly: Count = 40
    snr_db: float = 0.0  # machine-to-background ratio (MIMII used +6, 0 and -6 dB)
    severity: tuple[float, float] = (0.15, 1.0)  # fault severity is drawn uniformly from this range
    anomaly_kinds: tuple[str, ...] | tuple[tuple[str, ...], ...] = ANOMALY_KINDS
    sample_rate: int = 16_000
    duration_s: float = 10.0
    seed: int = 0
    layout: str = "dcase2020"
    num_train_target: Count = 10  # dcase2023: target-domain training clips per section
    target_speed: float = 1.3  # dcase2023: carriage speed of the target domain relative to the source domain
    target_snr_offset_db: float = -3.0  # dcase2023: target-domain SNR relative to snr_db

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        machine_ids = self.machine_ids
        if machine_ids is None:
            machine_ids = ("00", "02", "04", "06") if self.layout == "dcase2020" else ("00",)
        ids = tuple(normalise_id(i) for i in ((machine_ids,) if isinstance(machine_ids, str) else machine_ids))
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"machine_ids must be distinct and non-empty, got {self.machine_ids!r}")
        object.__setattr__(self, "machine_ids", ids)
        for name in ("num_train", "num_test_normal", "num_test_anomaly", "num_train_target"):
            value = _per_id(getattr(self, name), ids, name, int)
            counts = (value,) if isinstance(value, int) else value
            if any(not isinstance(c, (int, np.integer)) or c < 0 for c in counts):
                raise ValueError(f"{name} must be non-negative integers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value if isinstance(value, int) else tuple(int(c) for c in value))
        kinds = self.anomaly_kinds
        if isinstance(kinds, str) or (not isinstance(kinds, Mapping) and all(isinstance(k, str) for k in kinds)):
            kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
            _check_kinds(kinds)
        else:
            kinds = tuple(tuple((k,) if isinstance(k, str) else k) for k in _per_id(kinds, ids, "anomaly_kinds", str))
            for per_id in kinds:
                _check_kinds(per_id)
        object.__setattr__(self, "anomaly_kinds", kinds)
        low, high = (float(s) for s in self.severity)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"severity range must satisfy 0 < low <= high <= 1, got {self.severity!r}")
        object.__setattr__(self, "severity", (low, high))
        if not np.isfinite(self.snr_db):
            raise ValueError(f"snr_db must be finite, got {self.snr_db!r}")
        if self.sample_rate < 8_000 or self.duration_s <= 0 or self.seed < 0:
            raise ValueError("need sample_rate >= 8000, duration_s > 0 and seed >= 0")
        if not (0.5 <= self.target_speed <= 2.0 and np.isfinite(self.target_snr_offset_db)):
            raise ValueError(f"need 0.5 <= target_speed <= 2 and a finite target_snr_offset_db, got "
                             f"{self.target_speed!r} and {self.target_snr_offset_db!r}")

    @classmethod
    def dcase_dev_size(cls, **overrides) -> SynthConfig:
        """A config with the clip counts of the real DCASE 2020 slider dev set (4,094 clips); ``overrides`` win."""
        ids = tuple(normalise_id(i) for i in overrides.get("machine_ids", tuple(DCASE_DEV_COUNTS)))
        unknown = [i for i in ids if i not in DCASE_DEV_COUNTS]
        if unknown:
            raise ValueError(f"the DCASE 2020 slider dev set has no machine ids {unknown}")
        counts = {name: tuple(DCASE_DEV_COUNTS[i][column] for i in ids)
                  for column, name in enumerate(("num_train", "num_test_normal", "num_test_anomaly"))}
        return cls(**{"machine_ids": ids, **counts, **overrides})

    @classmethod
    def dcase2023_dev_size(cls, **overrides) -> SynthConfig:
        """A dcase2023-layout config with the DCASE 2022-2024 dev counts per section (990 source + 10 target
        training clips, 50 normal + 50 anomalous test clips per domain); ``overrides`` win."""
        train, train_target, normal, anomaly = DCASE2023_DEV_COUNTS
        return cls(**{"layout": "dcase2023", "num_train": train, "num_train_target": train_target,
                      "num_test_normal": normal, "num_test_anomaly": anomaly, **overrides})

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def counts(self, machine_id: str) -> dict[str, int]:
        """{"train", "test_normal", "test_anomaly"} clip counts for one machine id, and "train_target" in the
        dcase2023 layout (there the test counts are per domain)."""
        position = self.machine_ids.index(normalise_id(machine_id))
        values = {"train": self.num_train, "test_normal": self.num_test_normal, "test_anomaly": self.num_test_anomaly}
        if self.layout == "dcase2023":
            values["train_target"] = self.num_train_target
        return {name: value if isinstance(value, int) else value[position] for name, value in values.items()}

    def domain_attributes(self, domain: str) -> dict[str, str]:
        """The operating condition of a dcase2023 domain as DCASE-style attributes: carriage speed in percent of
        nominal (``vel``) and SNR in dB (``snr``)."""
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        target = domain == "target"
        speed = self.target_speed if target else 1.0
        snr = self.snr_db + (self.target_snr_offset_db if target else 0.0)
        return {"vel": f"{round(100 * speed):d}", "snr": f"{snr:g}"}

    def kinds(self, machine_id: str) -> tuple[str, ...]:
        """The fault kinds used for one machine id's anomalous clips."""
        if all(isinstance(k, str) for k in self.anomaly_kinds):
            return self.anomaly_kinds
        return self.anomaly_kinds[self.machine_ids.index(normalise_id(machine_id))]

    def to_json(self) -> dict:
        """The config as plain JSON data (tuples become lists; dcase2023-only fields only in that layout)."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        if self.layout == "dcase2020":
            for name in _DCASE2023_FIELDS:
                data.pop(name)
        return data

    def short_hash(self) -> str:
        """10 hex digits naming this config and generator version (the cache folder name)."""
        text = json.dumps({"config": self.to_json(), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = [k for k in kinds if k not in ANOMALY_KINDS]
    if not kinds or unknown:
        raise ValueError(f"anomaly kinds must be a non-empty selection of {ANOMALY_KINDS}, got {tuple(kinds)!r}")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One clip to generate: where it goes and which fault (if any) it carries."""

    machine_id: str  # the section in the dcase2023 layout
    split: str  # "train" | "test"
    index: int
    anomaly: str | None = None
    severity: float = 0.0
    domain: str | None = None  # "source" | "target" in the dcase2023 layout
    attributes: str = ""  # dcase2023: the attribute part of the name, e.g. "vel_100_snr_0"

    @property
    def label(self) -> str:
        return "normal" if self.anomaly is None else "anomaly"

    @property
    def filename(self) -> str:
        if self.domain is None:
            return f"{self.label}_id_{self.machine_id}_{self.index:08d}.wav"
        suffix = f"_{self.attributes}" if self.attributes else ""
        return f"section_{self.machine_id}_{self.domain}_{self.split}_{self.label}_{self.index:04d}{suffix}.wav"

    def relpath(self, machine_type: str) -> str:
        return os.path.join(machine_type, self.split, self.filename)


def clip_plan(config: SynthConfig) -> list[ClipSpec]:
    """Every clip of the data set. Fault kinds cycle through the id's kinds by index (balanced); a clip's severity
    is drawn from its own seed, so the plan for one clip never depends on the others."""
    if config.layout == "dcase2023":
        return _domain_plan(config)
    plan = []
    low, high = config.severity
    for machine_id in config.machine_ids:
        counts, kinds = config.counts(machine_id), config.kinds(machine_id)
        plan += [ClipSpec(machine_id, "train", i) for i in range(counts["train"])]
        plan += [ClipSpec(machine_id, "test", i) for i in range(counts["test_normal"])]
        for i in range(counts["test_anomaly"]):
            severity = float(_rng(config.seed, "severity", machine_id, i).uniform(low, high))
            plan.append(ClipSpec(machine_id, "test", i, kinds[i % len(kinds)], round(severity, 4)))
    return plan


def _domain_plan(config: SynthConfig) -> list[ClipSpec]:
    """The dcase2023 plan: per section and domain, training clips then test normals then test anomalies. Source
    severities are drawn as in the dcase2020 plan, target ones from their own stream."""
    plan = []
    low, high = config.severity
    for machine_id in config.machine_ids:
        counts, kinds = config.counts(machine_id), config.kinds(machine_id)
        for domain in DOMAINS:
            attributes = "_".join(f"{k}_{v}" for k, v in config.domain_attributes(domain).items())
            tags = () if domain == "source" else (domain,)
            spec = functools.partial(ClipSpec, machine_id, domain=domain, attributes=attributes)
            train = counts["train"] if domain == "source" else counts["train_target"]
            plan += [spec("train", i) for i in range(train)]
            plan += [spec("test", i) for i in range(counts["test_normal"])]
            for i in range(counts["test_anomaly"]):
                severity = float(_rng(config.seed, "severity", machine_id, *tags, i).uniform(low, high))
                plan.append(spec("test", i, kinds[i % len(kinds)], round(severity, 4)))
    return plan


def attribute_rows(config: SynthConfig, plan: Sequence[ClipSpec]) -> dict[str, list[list[str]]]:
    """{"attributes_XX.csv": rows} for the dcase2023 layout, in DCASE's format: header ``file_name,d1p,d1v,d2p,d2v``,
    then ``<type>/<split>/<name>,vel,<speed>,snr,<dB>`` for every clip of section XX."""
    files = {}
    for spec in plan:
        rows = files.setdefault(f"attributes_{spec.machine_id}.csv", [["file_name", "d1p", "d1v", "d2p", "d2v"]])
        pairs = config.domain_attributes(spec.domain)
        rows.append(["/".join((config.machine_type, spec.split, spec.filename)),
                     *(cell for key, value in pairs.items() for cell in (key, value))])
    return files


# ---------------------------------------------------------------------------------------------------------- sound


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one named stream; keys are hashed with CRC32, which (unlike hash()) is stable across runs."""
    words = [int(k) if isinstance(k, (int, np.integer)) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


@dataclasses.dataclass(frozen=True)
class MachineParams:
    """The mechanics of one slide rail (one machine id)."""

    cycle_s: float  # one forward + backward stroke at nominal speed
    dwell: float  # fraction of each half cycle spent standing at the end
    accel: float  # fraction of the moving time spent accelerating (and again decelerating)
    motor_hz: float  # motor fundamental at full speed
    motor_harmonics: tuple[float, ...]  # relative amplitudes of harmonics 1, 2, ...
    motor_level: float
    drift: float  # relative depth of the slow motor-speed drift
    mains_hz: float
    mains_level: float
    friction_band: tuple[float, float]  # Hz
    friction_level: float
    roughness: tuple[tuple[float, float, float], ...]  # (cycles per stroke, depth, phase) of the rail's texture
    stop_modes: tuple[tuple[tuple[float, float, float], ...], ...]  # per end stop: (Hz, decay s, amplitude) per mode
    impact_level: float


@functools.lru_cache(maxsize=64)
def machine_params(seed: int, machine_id: str) -> MachineParams:
    """The mechanics of ``machine_id``, drawn from (seed, id) alone."""
    rng = _rng(seed, "machine", normalise_id(machine_id))
    friction_low = rng.uniform(900.0, 2200.0)
    base_modes = [(rng.uniform(350.0, 900.0), rng.uniform(0.03, 0.07), 1.0),
                  (rng.uniform(1100.0, 2400.0), rng.uniform(0.015, 0.04), rng.uniform(0.4, 0.8)),
                  (rng.uniform(2800.0, 5200.0), rng.uniform(0.006, 0.02), rng.uniform(0.2, 0.5))]
    stops = tuple(tuple((f * rng.uniform(0.9, 1.1), d, a * rng.uniform(0.8, 1.2)) for f, d, a in base_modes)
                  for _ in range(2))
    harmonics = tuple(float(k ** -rng.uniform(0.6, 1.2) * rng.uniform(0.5, 1.5)) for k in range(1, 9))
    return MachineParams(
        cycle_s=float(rng.uniform(1.6, 3.2)), dwell=float(rng.uniform(0.08, 0.2)), accel=float(rng.uniform(0.15, 0.3)),
        motor_hz=float(rng.uniform(110.0, 240.0)), motor_harmonics=harmonics, motor_level=float(rng.uniform(0.6, 1.0)),
        drift=float(rng.uniform(0.003, 0.01)), mains_hz=float(rng.choice([50.0, 60.0])),
        mains_level=float(rng.uniform(0.05, 0.15)),
        friction_band=(float(friction_low), float(friction_low * rng.uniform(2.0, 3.5))),
        friction_level=float(rng.uniform(0.5, 1.0)),
        roughness=tuple((float(rng.uniform(2.0, 14.0)), float(rng.uniform(0.1, 0.3)), float(rng.uniform(0, 2 * np.pi)))
                        for _ in range(3)),
        stop_modes=tuple(tuple((float(f), float(d), float(a)) for f, d, a in stop) for stop in stops),
        impact_level=float(rng.uniform(3.0, 6.0)))


@functools.lru_cache(maxsize=64)
def _bandpass(low: float, high: float, sample_rate: int, order: int = 2) -> np.ndarray:
    nyquist = 0.5 * sample_rate
    return signal.butter(order, [min(low, 0.9 * nyquist), min(high, 0.95 * nyquist)], btype="band", fs=sample_rate,
                         output="sos")


def _modal_kernel(modes: Sequence[tuple[float, float, float]], sample_rate: int) -> np.ndarray:
    """Impulse response of a few damped modes (Hz, decay s, amplitude) with a 0.5 ms attack."""
    length = int(min(0.4, 5.0 * max(d for _, d, _ in modes)) * sample_rate)
    t = np.arange(length) / sample_rate
    kernel = sum(a * np.sin(2 * np.pi * min(f, 0.45 * sample_rate) * t) * np.exp(-t / d) for f, d, a in modes)
    return kernel * (1.0 - np.exp(-t / 0.0005))


def _place(out: np.ndarray, kernel: np.ndarray, times: np.ndarray, amplitudes: np.ndarray, sample_rate: int) -> None:
    """Add ``amplitude * kernel`` at each event time (in place): for the few events of a clip a direct sum is
    cheaper than a convolution."""
    for position, amplitude in zip(np.round(times * sample_rate).astype(int), amplitudes):
        start, end = max(position, 0), min(len(out), position + len(kernel))
        if start < end:  # events just before the clip still ring into it
            out[start:end] += amplitude * kernel[start - position:end - position]


def _harmonics(phase: np.ndarray, amplitudes: Sequence[float], offsets: Sequence[float]) -> np.ndarray:
    """sum_k a_k sin(k * phase + o_k) by Horner's rule on exp(i * phase): one complex exponential for all harmonics."""
    z = np.exp(1j * phase)
    total = np.zeros_like(z)
    for amplitude, offset in zip(reversed(amplitudes), reversed(offsets)):
        total = (total + amplitude * np.exp(1j * offset)) * z
    return total.imag


def _slow_noise(rng: np.random.Generator, num_samples: int, sample_rate: int, rate_hz: float) -> np.ndarray:
    """Smooth unit-variance random wobble with about ``rate_hz`` independent values per second."""
    knots = max(2, int(num_samples / sample_rate * rate_hz) + 2)
    values = rng.standard_normal(knots)
    return np.interp(np.linspace(0, knots - 1, num_samples), np.arange(knots), values)


@dataclasses.dataclass
class _Motion:
    t: np.ndarray
    x: np.ndarray  # carriage position along the rail, 0..1
    v: np.ndarray  # signed velocity, 1 = nominal full speed
    stops: list[tuple[np.ndarray, int]]  # (times the carriage stops at an end, which end stop) for both ends
    starts: list[tuple[np.ndarray, int]]  # (times it leaves an end, which end stop) for both ends


def _motion(params: MachineParams, num_samples: int, sample_rate: int, speed: float, phase: float) -> _Motion:
    """Back-and-forth strokes: per half cycle a dwell, then a trapezoidal velocity profile from one end to the other."""
    t = np.arange(num_samples) / sample_rate
    cycle = t * speed / params.cycle_s + phase
    stroke = np.floor(2.0 * cycle)
    u = 2.0 * cycle - stroke
    forward = stroke % 2 == 0
    d, a = params.dwell, params.accel
    w = np.clip((u - d) / (1.0 - d), 0.0, 1.0)
    shape = np.minimum(1.0, np.minimum(w, 1.0 - w) / a)
    travelled = np.where(w < a, w ** 2 / (2 * a), np.where(w < 1 - a, w - a / 2, 1 - a - (1 - w) ** 2 / (2 * a)))
    progress = travelled / (1.0 - a)
    x = np.where(forward, progress, 1.0 - progress)
    v = np.where(forward, shape, -shape) * speed
    # Stroke k ends at cycle (k + 1) / 2 against end stop (k + 1) % 2 and starts at cycle k / 2 + dwell / 2.
    first, last = int(np.floor(2 * phase)) - 1, int(np.ceil(2 * cycle[-1])) + 1
    strokes = np.arange(first, last + 1)
    seconds_per_cycle = params.cycle_s / speed
    stops = [(((strokes[(strokes + 1) % 2 == end] + 1) / 2.0 - phase) * seconds_per_cycle, end) for end in (0, 1)]
    starts = [((strokes[strokes % 2 == end] + d) / 2.0 - phase) * seconds_per_cycle for end in (0, 1)]
    return _Motion(t, x, v, stops, list(zip(starts, (0, 1))))


def _machine(params: MachineParams, motion: _Motion, sample_rate: int, seed_keys: tuple) -> np.ndarray:
    """The slide rail's own sound: motor, mains hum, friction and end-stop impacts."""
    seed, *keys = seed_keys
    t, v = motion.t, motion.v
    n = len(t)
    speed = np.abs(v)
    nyquist = 0.5 * sample_rate

    rng = _rng(seed, *keys, "motor")
    drift = 1.0 + params.drift * _slow_noise(rng, n, sample_rate, 0.5)
    frequency = params.motor_hz * (0.05 + speed) * drift
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    offsets = rng.uniform(0, 2 * np.pi, len(params.motor_harmonics))
    audible = [a if k * params.motor_hz * 1.3 < nyquist else 0.0 for k, a in enumerate(params.motor_harmonics, 1)]
    motor = params.motor_level * (0.15 + speed) * _harmonics(phase, audible, offsets)
    mains = params.mains_level * _harmonics(2 * np.pi * params.mains_hz * t, (1.0, 0.5, 0.33),
                                            rng.uniform(0, 2 * np.pi, 3))

    rng = _rng(seed, *keys, "friction")
    texture = 1.0 + sum(depth * np.sin(2 * np.pi * cycles * motion.x + offset)
                        for cycles, depth, offset in params.roughness)
    noise = signal.sosfilt(_bandpass(*params.friction_band, sample_rate), rng.standard_normal(n))
    friction = params.friction_level * speed ** 1.5 * texture * noise / 0.3

    rng = _rng(seed, *keys, "impacts")
    sound = motor + mains + friction
    level = params.impact_level * float(np.abs(v).max()) ** 1.5
    for events, scale in ((motion.stops, 1.0), (motion.starts, 0.25)):
        for times, end in events:
            amplitudes = scale * level * rng.lognormal(0.0, 0.2, len(times))
            _place(sound, _stop_kernel(params, end, sample_rate), times, amplitudes, sample_rate)
    return sound


@functools.lru_cache(maxsize=64)
def _stop_kernel(params: MachineParams, end: int, sample_rate: int) -> np.ndarray:
    return _modal_kernel(params.stop_modes[end], sample_rate)


@functools.lru_cache(maxsize=64)
def _machine_gain(seed: int, machine_id: str, sample_rate: int) -> float:
    """Fixed per-id gain that brings the machine's nominal sound to unit RMS, so faults add energy instead of being
    normalised away."""
    params = machine_params(seed, machine_id)
    motion = _motion(params, 10 * sample_rate, sample_rate, 1.0, 0.0)
    reference = _machine(params, motion, sample_rate, (seed, "reference", machine_id))
    return float(1.0 / np.sqrt(np.mean(reference ** 2)))


@functools.lru_cache(maxsize=8)
def _clank_kernels(sample_rate: int) -> tuple[np.ndarray, ...]:
    """Three distant metal clanks of the factory: low, dull, long."""
    modes = (((180.0, 0.15, 1.0), (530.0, 0.08, 0.5), (1210.0, 0.04, 0.3)),
             ((310.0, 0.2, 1.0), (770.0, 0.1, 0.6), (1650.0, 0.03, 0.2)),
             ((95.0, 0.25, 1.0), (420.0, 0.12, 0.7), (940.0, 0.05, 0.4)))
    return tuple(_modal_kernel(m, sample_rate) for m in modes)


def _background(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Factory noise at unit RMS: pink/brown noise with a per-clip tilt and ventilation band, distant machines' hum
    (spectral lines, added in the same inverse FFT) and distant clanks."""
    frequencies = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    f = np.maximum(frequencies, 20.0)
    tilt = rng.uniform(0.8, 1.2)
    brown = rng.uniform(0.5, 2.0)
    vent_hz, vent_level = rng.uniform(300.0, 900.0), rng.uniform(0.5, 1.5)
    shape = f ** (-tilt / 2) + brown * 20.0 / f + vent_level * 0.1 * np.exp(-0.5 * (np.log(f / vent_hz) / 0.3) ** 2)
    shape *= frequencies >= 15.0
    spectrum = np.fft.rfft(rng.standard_normal(num_samples)) * shape
    spectrum *= num_samples / np.sqrt(2.0 * np.sum(np.abs(spectrum) ** 2))  # unit RMS after the inverse FFT
    resolution = sample_rate / num_samples
    for fundamental in (73.0, 118.0, 241.0):  # distant machines, slightly off speed in each clip
        level = rng.uniform(0.0, 0.25)
        pitch = fundamental * (1.0 + 0.003 * rng.standard_normal())
        for k in (1, 2, 3):
            line = int(round(k * pitch / resolution))
            if 0 < line < len(spectrum) - 1:
                spectrum[line] += level / k * num_samples / 2 * np.exp(1j * rng.uniform(0, 2 * np.pi))
    mixture = np.fft.irfft(spectrum, num_samples)

    duration = num_samples / sample_rate
    for kernel in _clank_kernels(sample_rate):
        count = rng.poisson(0.15 * duration)
        times, amplitudes = rng.uniform(0, duration, count), rng.lognormal(np.log(2.0), 0.7, count)
        _place(mixture, kernel, times, amplitudes, sample_rate)
    return mixture / np.sqrt(np.mean(mixture ** 2))


def _db(level_db: float) -> float:
    return float(10.0 ** (level_db / 20.0))


def _fault(kind: str, severity: float, params: MachineParams, motion: _Motion, sample_rate: int,
           rng: np.random.Generator) -> np.ndarray:
    """The extra sound of a fault on the scale of the machine's unit-RMS nominal sound; its level rises by about
    20 dB from severity 0 to 1. (``speed_change`` adds no sound: it acts on the motion.)"""
    t, v, x = motion.t, motion.v, motion.x
    n, duration = len(t), len(t) / sample_rate
    speed = np.abs(v)
    if kind == "rail_damage":
        spot, wheelbase = rng.uniform(0.15, 0.85), rng.uniform(0.03, 0.06)
        modes = [(rng.uniform(700.0, 1500.0), rng.uniform(0.004, 0.01), 1.0),
                 (rng.uniform(2000.0, 4500.0), rng.uniform(0.002, 0.006), rng.uniform(0.4, 0.9))]
        kernel, clicks = _modal_kernel(modes, sample_rate), np.zeros(n)
        for position in (spot, spot + wheelbase):  # both rollers cross the damaged spot
            crossings = np.flatnonzero(np.diff(np.signbit(x - position)))
            amplitudes = speed[crossings] * rng.lognormal(0.0, 0.2, len(crossings))
            _place(clicks, kernel, crossings / sample_rate, amplitudes, sample_rate)
        return _db(17.0 + 22.0 * (severity - 1.0)) * clicks
    if kind == "no_lubrication":
        pitch = rng.uniform(1800.0, min(5500.0, 0.4 * sample_rate))
        wobble = 1.0 + 0.01 * v + 0.002 * _slow_noise(rng, n, sample_rate, 8.0)
        phase = 2 * np.pi * np.cumsum(pitch * wobble) / sample_rate
        stick_slip = np.clip(_slow_noise(rng, n, sample_rate, 6.0) + 0.6, 0.0, 1.0)
        overtone = 0.35 if 2.2 * pitch < 0.5 * sample_rate else 0.0
        tone = np.sin(phase) + overtone * np.sin(2 * phase + rng.uniform(0, 2 * np.pi))
        return _db(-6.0 + 20.0 * (severity - 1.0)) * speed ** 2 * stick_slip * tone
    if kind == "loose_belt":
        rate = rng.uniform(40.0, 80.0)
        bursts = np.clip(_slow_noise(rng, n, sample_rate, 3.0), 0.0, None)
        candidates = rng.uniform(0, duration, rng.poisson(rate * duration))
        positions = np.minimum((candidates * sample_rate).astype(int), n - 1)
        keep = rng.uniform(0, 1, len(candidates)) < speed[positions] * bursts[positions]
        amplitudes = rng.lognormal(0.0, 0.4, int(keep.sum()))
        kernel_t = np.arange(int(0.004 * sample_rate)) / sample_rate
        kernel = signal.sosfilt(_bandpass(1500.0, 6500.0, sample_rate),
                                rng.standard_normal(len(kernel_t)) * np.exp(-kernel_t / 0.0012))
        rattle = np.zeros(n)
        _place(rattle, kernel / np.abs(kernel).max(), candidates[keep], amplitudes, sample_rate)
        return _db(13.0 + 20.0 * (severity - 1.0)) * rattle
    raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {ANOMALY_KINDS}")


def synth_clip(config: SynthConfig, machine_id: str, split: str, index: int, anomaly: str | None = None,
               severity: float = 0.0, domain: str | None = None) -> np.ndarray:
    """One clip as float32 [samples] in [-1, 1].

    The clip's randomness is seeded by (config.seed, id, split, label, index), where label is ``anomaly`` when a
    fault kind is given. ``severity`` 0 with a kind renders that anomalous clip without its fault. ``domain``
    "target" renders the target domain's operating condition (``config.target_speed``, ``target_snr_offset_db``)
    from streams of its own; None and "source" give the nominal condition.
    """
    machine_id = normalise_id(machine_id)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if anomaly is not None and anomaly not in ANOMALY_KINDS:
        raise ValueError(f"unknown anomaly kind {anomaly!r}; expected one of {ANOMALY_KINDS}")
    if anomaly is not None and split == "train":
        raise ValueError("training clips are normal: pass anomaly=None for split='train'")
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index!r}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity!r}")
    if domain not in (None, *DOMAINS):
        raise ValueError(f"domain must be None, 'source' or 'target', got {domain!r}")
    target = domain == "target"
    sample_rate, n = config.sample_rate, config.num_samples
    keys = (config.seed, machine_id, split, "normal" if anomaly is None else "anomaly", int(index),
            *(("target",) if target else ()))
    params = machine_params(config.seed, machine_id)

    clip_rng = _rng(*keys, "clip")
    speed = 1.0 + float(np.clip(0.01 * clip_rng.standard_normal(), -0.025, 0.025))
    speed *= config.target_speed if target else 1.0
    snr_db = config.snr_db + (config.target_snr_offset_db if target else 0.0)
    phase = float(clip_rng.uniform())
    machine_db, background_db, gain_db = clip_rng.normal(0.0, [1.0, 1.5, 1.5])
    fault_rng = _rng(*keys, "fault")
    direction = 1.0 if fault_rng.uniform() < 0.5 else -1.0
    if anomaly == "speed_change" and severity > 0.0:  # 2 % (just above the normal jitter) to 10 % faster or slower
        speed *= 1.0 + direction * (0.02 + 0.08 * severity)

    motion = _motion(params, n, sample_rate, speed, phase)
    machine = _machine(params, motion, sample_rate, keys) * _machine_gain(config.seed, machine_id, sample_rate)
    if anomaly not in (None, "speed_change") and severity > 0.0:
        machine += _fault(anomaly, severity, params, motion, sample_rate, fault_rng)
    machine *= _db(machine_db)
    background = _background(n, sample_rate, _rng(*keys, "background")) * _db(background_db - snr_db)
    mixture = (machine + background) * _db(_OUTPUT_DBFS + gain_db)
    return np.clip(mixture, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- data sets


def _write_clips(config: SynthConfig, root: str, specs: Sequence[ClipSpec]) -> int:
    """Render and write ``specs`` (worker entry point); each file appears atomically under its final name."""
    for spec in specs:
        path = os.path.join(root, spec.relpath(config.machine_type))
        write_wav(path, synth_clip(config, spec.machine_id, spec.split, spec.index, spec.anomaly, spec.severity,
                                   spec.domain), config.sample_rate)
    return len(specs)


def write_wav(path: str, wave: np.ndarray, sample_rate: int) -> None:
    """A 16-bit WAV that appears atomically under its final name."""
    with fileio.atomic_path(path, suffix=".part") as partial:
        sf.write(partial, wave, sample_rate, subtype="PCM_16", format="WAV")


def render(write_chunk, config, out_dir: str, plan: Sequence, num_workers: int | None, progress: bool,
           description: str) -> None:
    """Render ``plan`` in chunks of 8 with ``write_chunk(config, out_dir, specs) -> files written`` (a module-level
    function, so spawned workers can run it), over ``num_workers`` processes (None: every core; 1: this one)."""
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(plan) // 8 or 1))
    chunks = [plan[start:start + 8] for start in range(0, len(plan), 8)]
    with progress_output.bar(total=len(plan), desc=description, unit="clip", enabled=progress) as bar:
        if workers == 1:
            for chunk in chunks:
                bar.update(write_chunk(config, out_dir, chunk))
            return
        context = multiprocessing.get_context("spawn")  # JAX may be loaded here, and does not survive fork
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(write_chunk, config, out_dir, chunk) for chunk in chunks]
            for future in concurrent.futures.as_completed(futures):
                bar.update(future.result())


def manifest_matches(root: str, version: int, config_json: dict) -> bool:
    """Whether ``root`` holds a finished generation's manifest of this generator ``version`` and config."""
    try:
        with open(os.path.join(root, MANIFEST)) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return False
    return manifest.get("generator_version") == version and manifest.get("config") == config_json


def cached(kind: str, cache_dir: str | None, config, complete, generate, num_workers: int | None,
           progress: bool) -> str:
    """The root of the cached data set ``<cache>/<kind>/<config hash>/`` (:func:`asd_jax.fileio.cache_root`), made
    by ``generate(root, config, num_workers=, progress=)`` on first use under a file lock (concurrent callers
    generate it once) and returned at once while ``complete(root, config)``."""
    root = os.path.join(fileio.cache_root(cache_dir), kind, config.short_hash())
    if complete(root, config):
        return root
    os.makedirs(root, exist_ok=True)
    with fileio.file_lock(root + ".lock"):
        if not complete(root, config):
            generate(root, config, num_workers=num_workers, progress=progress)
    return root


def _summary(config: SynthConfig, root: str, plan: Sequence[ClipSpec], seconds: float) -> dict:
    counts, kinds = {}, {}
    for spec in plan:
        per_id = counts.setdefault(spec.machine_id, {"train": {"normal": 0}, "test": {"normal": 0, "anomaly": 0}})
        per_id[spec.split][spec.label] += 1
        if spec.anomaly:
            kinds.setdefault(spec.machine_id, {}).setdefault(spec.anomaly, 0)
            kinds[spec.machine_id][spec.anomaly] += 1
    summary = {"root": root, "machine_type": config.machine_type, "clips": len(plan), "counts": counts,
               "anomaly_kinds": kinds, "snr_db": config.snr_db, "severity": list(config.severity),
               "seconds": round(seconds, 2)}
    if config.layout == "dcase2023":
        domains = {}
        for spec in plan:
            per_id = domains.setdefault(spec.machine_id, {})
            per_domain = per_id.setdefault(spec.domain, {"train": {"normal": 0}, "test": {"normal": 0, "anomaly": 0}})
            per_domain[spec.split][spec.label] += 1
        summary.update(layout=config.layout, domains=domains,
                       attributes={d: config.domain_attributes(d) for d in DOMAINS})
    return summary


def _format_summary(summary: dict) -> str:
    lines = [f"synthetic {summary['machine_type']} data set: {summary['clips']} clips in {summary['seconds']:.1f} s "
             f"-> {summary['root']}", f"  (SNR {summary['snr_db']:+g} dB, severity {summary['severity']}; "
             "synthetic, not MIMII)", "  id   train  test normal  test anomaly  kinds"]
    for machine_id, counts in summary["counts"].items():
        kinds = ", ".join(f"{k} {c}" for k, c in summary["anomaly_kinds"].get(machine_id, {}).items())
        lines.append(f"  {machine_id}  {counts['train']['normal']:6d}  {counts['test']['normal']:11d}  "
                     f"{counts['test']['anomaly']:12d}  {kinds}")
    return "\n".join(lines)


def generate_dataset(out_dir: str, config: SynthConfig = SynthConfig(), num_workers: int | None = None,
                     progress: bool = True) -> dict:
    """Write the data set under ``out_dir`` (``<out_dir>/<machine_type>/{train,test}/*.wav``) and its manifest.

    The manifest ``synthetic.json`` (config, a note that the data is synthetic, every test clip's fault and
    severity, and its domain in the dcase2023 layout) is removed first and written last, so a folder without it is
    an interrupted generation. Dev-named wav files in the train/test folders and ``attributes_XX.csv`` files that
    the plan does not contain (left by an earlier config) are removed. The dcase2023 layout also writes
    ``<out_dir>/<machine_type>/attributes_XX.csv`` (:func:`attribute_rows`).
    ``num_workers`` None uses every core; 1 renders in this process. Returns a summary, printed when ``progress``.
    """
    start = time.perf_counter()
    manifest = os.path.join(out_dir, MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        os.remove(manifest)
    plan = clip_plan(config)
    wanted = {spec.relpath(config.machine_type) for spec in plan}
    for split in ("train", "test"):
        folder = os.path.join(out_dir, config.machine_type, split)
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if (_DEV_NAME.match(name) and os.path.join(config.machine_type, split, name) not in wanted) or \
                    name.endswith(".wav.part"):
                os.remove(os.path.join(folder, name))
    attribute_files = attribute_rows(config, plan) if config.layout == "dcase2023" else {}
    machine_folder = os.path.join(out_dir, config.machine_type)
    for name in os.listdir(machine_folder):
        if _ATTRIBUTES_CSV.match(name) and name not in attribute_files:
            os.remove(os.path.join(machine_folder, name))

    render(_write_clips, config, out_dir, plan, num_workers, progress, "synthetic clips")

    for name, rows in attribute_files.items():
        with fileio.atomic_open(os.path.join(machine_folder, name), "w", suffix=".part", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)

    summary = _summary(config, out_dir, plan, time.perf_counter() - start)
    test_clips = {spec.relpath(config.machine_type): {"anomaly": spec.anomaly, "severity": spec.severity,
                                                      **({"domain": spec.domain} if spec.domain else {})}
                  for spec in plan if spec.split == "test"}
    content = {"note": NOTE, "generator_version": GENERATOR_VERSION, "config": config.to_json(),
               "summary": summary, "test_clips": test_clips}
    fileio.atomic_write_json(manifest, content, suffix=".part", indent=1)
    if progress:
        print(_format_summary(summary))
    return summary


def is_complete(root: str, config: SynthConfig) -> bool:
    """Whether ``root`` holds a finished generation of exactly ``config`` (manifest matches, every clip present)."""
    if not manifest_matches(root, GENERATOR_VERSION, config.to_json()):
        return False
    plan = clip_plan(config)
    attribute_files = attribute_rows(config, plan) if config.layout == "dcase2023" else {}
    return all(os.path.isfile(os.path.join(root, spec.relpath(config.machine_type))) for spec in plan) and \
        all(os.path.isfile(os.path.join(root, config.machine_type, name)) for name in attribute_files)


def default_dataset(cache_dir: str | None = None, config: SynthConfig = SynthConfig(), num_workers: int | None = None,
                    progress: bool = True) -> str:
    """The root (folder holding ``<machine_type>/``) of the cached synthetic data set for ``config``, generated on
    first use under ``<cache>/synthetic/<config hash>/`` and returned at once afterwards (:func:`cached`)."""
    return cached("synthetic", cache_dir, config, is_complete, generate_dataset, num_workers, progress)


def describe() -> str:
    """How the built-in data set is made, in a few lines for the README and the CLI."""
    config = SynthConfig()
    return (
        "Built-in data: SYNTHETIC slide-rail recordings (not MIMII/DCASE), generated once and cached.\n"
        f"  {len(config.machine_ids)} machine ids ({', '.join(config.machine_ids)}), each with its own stroke period, "
        "motor pitch, friction band and end-stop resonances;\n"
        "  a clip = trapezoidal back-and-forth strokes -> motor hum following the speed + friction noise following "
        "|velocity| + end-stop impacts,\n"
        f"  mixed with factory noise (pink/brown noise, distant machines, clanks) at {config.snr_db:+g} dB SNR; "
        f"{config.sample_rate // 1000} kHz, {config.duration_s:g} s, mono, 16-bit, DCASE 2020 dev file names.\n"
        f"  Anomalies ({', '.join(ANOMALY_KINDS)}) have a severity in {config.severity}.\n"
        "  Scores on it show that a method runs and learns; they say nothing about real machines.")
