"""A synthetic world of three machine types in the DCASE 2025 Task 2 dev layout, as hard as DCASE by design.

The slide-rail set of :mod:`asd_jax.data.synthetic` gives each machine id coarse mechanics of its own, so a
classifier separates ids by what no fault changes. Real DCASE sections are one machine recorded under several
operating conditions (attributes) that differ subtly, in a source domain of many clips and a target domain of ten.
This module renders that: one machine per type, section 00, whose attribute values each make a small, consistent
physical change (a few percent of speed, a pattern's timing, a microphone's position, a supply pressure), with
per-clip jitter so that neighbouring values overlap, and faults about as subtle as the attributes.

Machine types (physics in the functions ``_fan*``, ``_valve*`` and ``_slider``):

* ``fan``: a 7-blade duct fan at about 1500 rpm: blade-pass tone and harmonics, shaft and motor tones, bearing
  noise, broadband aerodynamic noise shaped by the duct; attributes ``spd`` (rpm) and ``mic`` (position).
  Faults: ``imbalance``, ``bearing`` (outer-race defect), ``blade_damage``.
* ``valve``: a solenoid valve on a pumped water line opening and closing in a pattern: plunger clicks with their
  resonances, a pressure thump at closing, flow hiss while open, the supply pump's hum; attributes ``pat`` (open /
  close timing) and ``pres`` (supply pressure). Faults: ``leak``, ``contamination``, ``sticking``, ``coil_buzz``.
* ``slider``: the slide rail of :mod:`asd_jax.data.synthetic` (strokes, motor hum, friction, end stops) with fixed
  mechanics; attributes ``vel`` (carriage speed) and ``ac`` (share of each stroke spent accelerating). Faults:
  ``rail_damage``, ``no_lubrication``, ``loose_belt``.

The target domain is a shifted operating condition (other values of one attribute: the fan's speed, the valve's
pattern, the carriage's speed) in another hall (another background noise, ``target_snr_offset_db`` louder). A fault
keeps the machine's power: the faulty machine is scaled to the power the same clip has without the fault, so the
clip level says nothing about the label.

Layout under ``<root>/<machine_type>/`` (DCASE 2025 dev):

* ``train/section_00_{source|target}_train_normal_NNNN_<attributes>.wav``
* ``test/section_00_{source|target}_test_{normal|anomaly}_NNNN_<attributes>.wav``
* ``supplemental/section_00_source_supplemental_machine_NNNN_<attributes>.wav`` (the machine alone, no background)
  and ``supplemental/section_00_noise_supplemental_normal_NNNN.wav`` (the source domain's background alone)
* ``attributes_00.csv``: ``file_name,d1p,d1v,d2p,d2v`` for every train and test clip

and ``<root>/synthetic.json`` (written last: a folder without it is an interrupted generation). Clips are 16 kHz,
mono, 16-bit, 10 s. Every clip draws from generators seeded by (seed, type, split, domain, label, index, component),
so a clip is byte-identical however many clips or workers there are.

Made with ``python launch.py --mode=synth --config.synthetic.layout=dcase2025 --data_dir=DIR`` (add
``--config.synthetic.size=dcase_dev`` for the DCASE dev-set counts).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import signal

from asd_jax import fileio
from asd_jax.data.synthetic import (
    MANIFEST,
    MachineParams,
    _background,
    _bandpass,
    _clank_kernels,
    _db,
    _fault,
    _harmonics,
    _machine,
    _modal_kernel,
    _motion,
    _place,
    _rng,
    _slow_noise,
    cached,
    manifest_matches,
    render,
    write_wav,
)

GENERATOR_VERSION = 1  # bump when the sound changes, so cached worlds are made again
NOTE = ("Synthetic fan, valve and slide-rail audio made by asd_jax.data.synthetic_world; NOT DCASE/MIMII "
        "recordings. Results on it say nothing about performance on real machines.")
SECTION = "00"
DOMAINS = ("source", "target")
SPLITS = ("train", "test", "supplemental")
# DCASE 2022-2025 dev counts per section: source train, target train, test normal and test anomaly per domain.
DCASE_DEV_COUNTS = (990, 10, 50, 50)
LAYOUT = "dcase2025"  # the synthetic.layout that names this world (its files follow the DCASE 2025 dev layout)

_OUTPUT_DBFS = -30.0  # mixture level before the per-clip gain jitter
_WORLD_NAME = re.compile(r"^section_\d+_.*\.wav(\.part)?$")
Streams = Callable[[str], np.random.Generator]  # a named random stream of the clip being rendered


@dataclasses.dataclass(frozen=True)
class MachineType:
    """A machine type: its attributes as (key, source-domain values, target-domain values) and its fault kinds."""

    name: str
    attributes: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    anomaly_kinds: tuple[str, ...]

    def conditions(self, domain: str) -> list[dict[str, str]]:
        """Every attribute combination of ``domain``, in a fixed order (clips cycle through it by index)."""
        column = 1 if domain == "source" else 2
        keys = [a[0] for a in self.attributes]
        return [dict(zip(keys, values)) for values in itertools.product(*(a[column] for a in self.attributes))]


MACHINE_TYPES: dict[str, MachineType] = {
    "fan": MachineType("fan", (("spd", ("1470", "1500"), ("1560", "1590")), ("mic", ("1", "2"), ("1", "2"))),
                       ("imbalance", "bearing", "blade_damage")),
    "slider": MachineType("slider", (("vel", ("600", "618"), ("660", "678")), ("ac", ("0.18", "0.22"),
                                                                                   ("0.18", "0.22"))),
                          ("rail_damage", "no_lubrication", "loose_belt")),
    "valve": MachineType("valve", (("pat", ("00", "01"), ("02", "03")), ("pres", ("4.0", "4.3"), ("4.0", "4.3"))),
                         ("leak", "contamination", "sticking", "coil_buzz")),
}


# ---------------------------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """What to generate. Counts are per machine type (section 00); test counts are per domain."""

    machine_types: tuple[str, ...] = ("fan", "slider", "valve")
    num_train: int = 100  # source-domain training clips
    num_train_target: int = 10
    num_test_normal: int = 50  # per domain
    num_test_anomaly: int = 50  # per domain
    num_supplemental_machine: int = 20  # clean machine clips (source domain, no background)
    num_supplemental_noise: int = 20  # background-only clips (source hall)
    snr_db: float = 0.0  # machine-to-background ratio in the source domain
    target_snr_offset_db: float = -3.0  # target-domain SNR relative to snr_db
    severity: tuple[float, float] = (0.1, 1.0)  # fault severity is drawn uniformly from this range
    sample_rate: int = 16_000
    duration_s: float = 10.0
    seed: int = 0

    def __post_init__(self):
        types = (self.machine_types,) if isinstance(self.machine_types, str) else tuple(self.machine_types)
        unknown = [t for t in types if t not in MACHINE_TYPES]
        if not types or unknown or len(set(types)) != len(types):
            raise ValueError(f"machine_types must be distinct names from {tuple(MACHINE_TYPES)}, got "
                             f"{self.machine_types!r}")
        object.__setattr__(self, "machine_types", types)
        for name in ("num_train", "num_train_target", "num_test_normal", "num_test_anomaly",
                     "num_supplemental_machine", "num_supplemental_noise"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        low, high = (float(s) for s in self.severity)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"severity range must satisfy 0 < low <= high <= 1, got {self.severity!r}")
        object.__setattr__(self, "severity", (low, high))
        if not (np.isfinite(self.snr_db) and np.isfinite(self.target_snr_offset_db)):
            raise ValueError(f"snr_db and target_snr_offset_db must be finite, got {self.snr_db!r} and "
                             f"{self.target_snr_offset_db!r}")
        if self.sample_rate < 16_000 or self.duration_s <= 0 or self.seed < 0:
            raise ValueError("need sample_rate >= 16000 (the valve's clicks reach 6.5 kHz), duration_s > 0 and "
                             "seed >= 0")

    @classmethod
    def dcase_dev_size(cls, **overrides) -> WorldConfig:
        """The DCASE 2022-2025 dev counts per type: 990 source + 10 target training clips, 50 normal + 50 anomalous
        test clips per domain; ``overrides`` win."""
        train, train_target, normal, anomaly = DCASE_DEV_COUNTS
        return cls(**{"num_train": train, "num_train_target": train_target, "num_test_normal": normal,
                      "num_test_anomaly": anomaly, **overrides})

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def snr(self, domain: str) -> float:
        return self.snr_db + (self.target_snr_offset_db if domain == "target" else 0.0)

    def to_json(self) -> dict:
        """The config as plain JSON data (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def short_hash(self) -> str:
        """10 hex digits naming this config and generator version (the cache folder name)."""
        text = json.dumps({"config": self.to_json(), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One file to render: a train/test clip, a clean machine clip or a noise-only clip (``kind``)."""

    machine_type: str
    split: str  # "train" | "test" | "supplemental"
    domain: str  # "source" | "target"
    index: int
    attributes: tuple[tuple[str, str], ...] = ()
    anomaly: str | None = None
    severity: float = 0.0
    kind: str = "clip"  # "clip" | "machine" (supplemental, no background) | "noise" (supplemental, no machine)

    @property
    def label(self) -> str:
        return "normal" if self.anomaly is None else "anomaly"

    @property
    def attribute_text(self) -> str:
        return "_".join(f"{k}_{v}" for k, v in self.attributes)

    @property
    def filename(self) -> str:
        if self.kind == "noise":
            return f"section_{SECTION}_noise_supplemental_normal_{self.index:04d}.wav"
        middle = "supplemental_machine" if self.kind == "machine" else f"{self.split}_{self.label}"
        return f"section_{SECTION}_{self.domain}_{middle}_{self.index:04d}_{self.attribute_text}.wav"

    @property
    def relpath(self) -> str:
        return os.path.join(self.machine_type, self.split, self.filename)

    @property
    def seed_keys(self) -> tuple:
        """What names the clip's random streams (with the config's seed)."""
        return self.machine_type, self.split, self.domain, self.label if self.kind == "clip" else self.kind, self.index


def clip_plan(config: WorldConfig) -> list[ClipSpec]:
    """Every file of the world. Clips cycle through their domain's attribute combinations and fault kinds by index
    (balanced); a clip's severity is drawn from its own seed, so the plan for one clip never depends on the others."""
    plan = []
    low, high = config.severity
    for name in config.machine_types:
        machine = MACHINE_TYPES[name]
        for domain in DOMAINS:
            conditions = [tuple(c.items()) for c in machine.conditions(domain)]
            spec = functools.partial(ClipSpec, name, domain=domain)
            train = config.num_train if domain == "source" else config.num_train_target
            plan += [spec("train", index=i, attributes=conditions[i % len(conditions)]) for i in range(train)]
            plan += [spec("test", index=i, attributes=conditions[i % len(conditions)])
                     for i in range(config.num_test_normal)]
            for i in range(config.num_test_anomaly):
                severity = float(_rng(config.seed, "severity", name, domain, i).uniform(low, high))
                kind = machine.anomaly_kinds[i % len(machine.anomaly_kinds)]
                plan.append(spec("test", index=i, attributes=conditions[(i // len(machine.anomaly_kinds))
                                                                         % len(conditions)],
                                 anomaly=kind, severity=round(severity, 4)))
        source = [tuple(c.items()) for c in machine.conditions("source")]
        plan += [ClipSpec(name, "supplemental", "source", i, source[i % len(source)], kind="machine")
                 for i in range(config.num_supplemental_machine)]
        plan += [ClipSpec(name, "supplemental", "source", i, kind="noise")
                 for i in range(config.num_supplemental_noise)]
    return plan


def attribute_rows(config: WorldConfig, plan: Sequence[ClipSpec]) -> dict[str, list[list[str]]]:
    """{machine type: rows of its ``attributes_00.csv``} in DCASE's format: header ``file_name,d1p,d1v,d2p,d2v``,
    then ``<type>/<split>/<name>,<key>,<value>,...`` for every train and test clip."""
    files = {}
    for name in config.machine_types:
        width = len(MACHINE_TYPES[name].attributes)
        files[name] = [["file_name", *(f"d{i}{k}" for i in range(1, width + 1) for k in "pv")]]
    for spec in plan:
        if spec.split != "supplemental":
            files[spec.machine_type].append(["/".join((spec.machine_type, spec.split, spec.filename)),
                                             *(cell for pair in spec.attributes for cell in pair)])
    return files


# ---------------------------------------------------------------------------------------------------- shared physics


@dataclasses.dataclass(frozen=True)
class Microphone:
    """Where the microphone stands: direct sound plus one floor reflection, a level and a high-frequency roll-off."""

    level_db: float  # distance loss relative to position 1
    reflection_gain: float  # floor reflection relative to the direct sound (the floor absorbs part)
    reflection_delay_s: float  # extra path of the reflection over the direct sound, divided by c
    rolloff_hz: float  # first-order roll-off: off-axis positions hear less of the high frequencies


def _microphone(wave: np.ndarray, sample_rate: int, mic: Microphone, rng: np.random.Generator) -> np.ndarray:
    """The machine's sound as the microphone hears it: ``(1 + g e^{-i2pi f tau}) / (1 + i f / f_r)`` times the
    level. The comb of the floor reflection puts notches at odd multiples of 1 / (2 tau): the signature of a
    position. Per clip the stand moves a little: tau varies by 4 %, g by 0.03 and the level by 0.3 dB."""
    tau = mic.reflection_delay_s * (1.0 + 0.04 * rng.standard_normal())
    gain = float(np.clip(mic.reflection_gain + 0.03 * rng.standard_normal(), 0.0, 0.9))
    level = _db(mic.level_db + 0.3 * rng.standard_normal())
    f = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    response = level * (1.0 + gain * np.exp(-2j * np.pi * f * tau)) / (1.0 + 1j * f / mic.rolloff_hz)
    return np.fft.irfft(np.fft.rfft(wave) * response, len(wave))


def _shaped_noise(rng: np.random.Generator, num_samples: int, sample_rate: int,
                  shape: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Gaussian noise with magnitude spectrum ``shape(f)`` at unit RMS, made in one inverse FFT."""
    f = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
    spectrum = (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) * shape(f)
    wave = np.fft.irfft(spectrum, num_samples)
    return wave / np.sqrt(np.mean(wave ** 2))


def _hall_background(num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The target domain's hall at unit RMS: a noise of another kind than the source factory's.

    Ventilation dominates: broadband noise with a hump at 250-450 Hz (the air handler's fan, per clip) over an
    f^-0.2..0.4 floor rolled off above 2.5 kHz by the duct lining; a refrigeration compressor hums at 87 Hz and
    harmonics (running in 60 % of the clips); pallets are set down in the distance (the factory's clank kernels,
    three times as often, half as loud)."""
    hump_hz, hump_level = rng.uniform(250.0, 450.0), rng.uniform(1.0, 2.0)
    tilt = rng.uniform(0.2, 0.4)

    def shape(f):
        f = np.maximum(f, 20.0)
        floor = f ** -tilt / (1.0 + (f / 2500.0) ** 2)
        return (floor + hump_level * 0.2 * np.exp(-0.5 * (np.log(f / hump_hz) / 0.45) ** 2)) * (f >= 25.0)

    wave = _shaped_noise(rng, num_samples, sample_rate, shape)
    t = np.arange(num_samples) / sample_rate
    if rng.uniform() < 0.6:
        wave += rng.uniform(0.1, 0.3) * _harmonics(2 * np.pi * 87.0 * (1 + 0.002 * rng.standard_normal()) * t,
                                                   (1.0, 0.6, 0.3, 0.15), rng.uniform(0, 2 * np.pi, 4))
    duration = num_samples / sample_rate
    for kernel in _clank_kernels(sample_rate):
        count = rng.poisson(0.45 * duration)
        _place(wave, kernel, rng.uniform(0, duration, count), rng.lognormal(np.log(1.0), 0.7, count), sample_rate)
    return wave / np.sqrt(np.mean(wave ** 2))


def _domain_background(domain: str, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Source: the factory of :mod:`asd_jax.data.synthetic` (pink/brown noise, distant machines, clanks); target:
    the ventilated hall of :func:`_hall_background`."""
    if domain == "source":
        return _background(num_samples, sample_rate, rng)
    return _hall_background(num_samples, sample_rate, rng)


# ---------------------------------------------------------------------------------------------------- fan

FAN_BLADES = 7
FAN_ROTOR_BARS = 28  # squirrel-cage rotor bars: rotor-slot tones at 28 f_r +- 2 f_mains
FAN_MAINS_HZ = 50.0
FAN_DUCT_HZ = 122.5  # first duct mode c / 2L of the 1.4 m duct (c = 343 m/s)
FAN_BALLS, FAN_BALL_RATIO = 9, 0.28  # rolling elements and ball / pitch diameter of the motor's bearing
FAN_MICROPHONES = {  # position 1: on the inlet axis at 1 m; position 2: 45 degrees off axis at 1.25 m
    "1": Microphone(level_db=0.0, reflection_gain=0.25, reflection_delay_s=1.10e-3, rolloff_hz=9000.0),
    "2": Microphone(level_db=-1.0, reflection_gain=0.28, reflection_delay_s=1.17e-3, rolloff_hz=7500.0),
}


def _fan_shaft(rpm: float, num_samples: int, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(shaft angle in radians over time, mean shaft rate in Hz). The induction motor's slip moves with line voltage
    and air load: per clip the speed is off its set point by 0.8 % (standard deviation, at most 2 %), and it
    wanders by 0.15 % within the clip."""
    rate = rpm / 60.0 * (1.0 + float(np.clip(0.008 * rng.standard_normal(), -0.02, 0.02)))
    wander = 1.0 + 0.0015 * _slow_noise(rng, num_samples, sample_rate, 0.5)
    return 2 * np.pi * np.cumsum(rate * wander) / sample_rate, rate


def _fan_blade_tones(shaft: np.ndarray, sample_rate: int, rng: np.random.Generator,
                     damage: float = 0.0) -> np.ndarray:
    """Blade-pass tone at 7 f_r (about 175 Hz) and harmonics falling as k^-1.3, unsteady with the inflow
    turbulence (12 % slow amplitude wobble). ``damage`` > 0: one blade is bent, so the blade-pass waveform repeats
    once per revolution, not once per blade: each harmonic is phase-modulated at f_r (index ``damage`` times k),
    which puts sidebands at (7k +- 1) f_r."""
    harmonics = 8
    amplitudes = [k ** -1.3 for k in range(1, harmonics + 1)]
    offsets = rng.uniform(0, 2 * np.pi, harmonics)
    wobble = 1.0 + 0.12 * _slow_noise(rng, len(shaft), sample_rate, 3.0)
    if damage <= 0.0:
        return wobble * _harmonics(FAN_BLADES * shaft, amplitudes, offsets)
    bend = damage * np.sin(shaft + rng.uniform(0, 2 * np.pi))
    tones = sum(a * np.sin(k * (FAN_BLADES * shaft + bend) + o)
                for k, (a, o) in enumerate(zip(amplitudes, offsets), 1))
    return wobble * tones


def _fan_motor_tones(shaft: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Residual imbalance and misalignment at 1 and 2 f_r (25, 50 Hz), magnetostriction hum at 2 f_mains (100 Hz)
    and rotor-slot tones at 28 f_r +- 100 Hz (about 600 and 800 Hz), each some 20-30 dB under the blade-pass
    tone."""
    t = np.arange(len(shaft)) / sample_rate
    shaft_tones = _harmonics(shaft, (0.08, 0.05), rng.uniform(0, 2 * np.pi, 2))
    hum = 0.04 * np.sin(2 * np.pi * 2 * FAN_MAINS_HZ * t + rng.uniform(0, 2 * np.pi))
    slot = FAN_ROTOR_BARS * shaft
    electric = 2 * np.pi * 2 * FAN_MAINS_HZ * t
    slots = 0.03 * np.sin(slot - electric + rng.uniform(0, 2 * np.pi)) + \
        0.03 * np.sin(slot + electric + rng.uniform(0, 2 * np.pi))
    return shaft_tones + hum + slots


def _fan_aerodynamic(rpm: float, num_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Broadband turbulence noise at unit RMS: a hump whose corner scales with the tip speed (Strouhal scaling,
    900 Hz at 1500 rpm), rolling off as f^-1.5 above it and f^+1 below 60 Hz, times the duct's standing waves
    (modes at n * 122.5 Hz with Q = 6, +4 dB at resonance); per clip the inflow changes the roll-off by +-0.1."""
    corner = 900.0 * rpm / 1500.0
    slope = 0.75 + 0.05 * rng.standard_normal()

    def shape(f):
        hump = (1.0 + (f / corner) ** 2) ** -slope * (f / 60.0) / np.sqrt(1.0 + (f / 60.0) ** 2)
        order = np.maximum(np.round(f / FAN_DUCT_HZ), 1.0)
        detune = (f - order * FAN_DUCT_HZ) / (order * FAN_DUCT_HZ / 6.0)
        return hump * (1.0 + 0.6 / (1.0 + 4.0 * detune ** 2))

    return _shaped_noise(rng, num_samples, sample_rate, shape)


def _fan_bearing(shaft: np.ndarray, rate: float, sample_rate: int, rng: np.random.Generator,
                 defect: float = 0.0) -> np.ndarray:
    """Rolling noise of the motor bearing: 2.5-5 kHz noise modulated at the cage rate 0.5 (1 - d/D) f_r (30 %
    depth). ``defect`` > 0: an outer-race spall; every ball passing it (BPFO = 4.5 (1 - 0.28) f_r, about 81 Hz)
    knocks the housing's 3.3 kHz mode (Q about 10: 1 ms decay), with 1.5 % slip in the spacing and 25 % jitter in
    the knocks."""
    n = len(shaft)
    cage = 0.5 * (1.0 - FAN_BALL_RATIO)
    noise = signal.sosfilt(_bandpass(2500.0, 5000.0, sample_rate), rng.standard_normal(n))
    rolling = 0.05 * noise * (1.0 + 0.3 * np.sin(cage * shaft + rng.uniform(0, 2 * np.pi)))
    if defect <= 0.0:
        return rolling
    bpfo = 0.5 * FAN_BALLS * (1.0 - FAN_BALL_RATIO) * rate
    intervals = 1.0 / bpfo * (1.0 + 0.015 * rng.standard_normal(int(n / sample_rate * bpfo) + 4))
    times = np.cumsum(intervals) - rng.uniform(0, 1.0 / bpfo)
    kernel = _modal_kernel(((3300.0, 0.001, 1.0), (5200.0, 0.0006, 0.4)), sample_rate)
    knocks = np.zeros(n)
    _place(knocks, kernel, times, rng.lognormal(0.0, 0.25, len(times)), sample_rate)
    return rolling + defect * knocks


def _fan(condition: dict[str, str], num_samples: int, sample_rate: int, streams: Streams,
         anomaly: str | None, severity: float) -> np.ndarray:
    """The fan at ``spd`` rpm: blade tones and aerodynamic noise (3 dB under the blade tones) whose level rises as
    rpm^2.5 (the fan law's speed^5 sound power: +0.9 dB for 2 % more speed), motor tones and bearing noise.
    Faults, growing with ``severity`` s in (0, 1]: ``imbalance`` (the force m r omega^2 at f_r: the 1 f_r tone
    grows to 1 + 3 s times its residual level and the whole fan is amplitude-modulated at f_r by 3 + 14 s %),
    ``bearing`` (outer-race knocks of amplitude 0.05 + 0.75 s) and ``blade_damage`` (per-revolution phase
    modulation of the blade tones, index 0.03 + 0.22 s rad)."""
    rpm = float(condition["spd"])
    rng = streams("shaft")
    shaft, rate = _fan_shaft(rpm, num_samples, sample_rate, rng)
    loudness = (rpm / 1500.0) ** 2.5
    damage = 0.03 + 0.22 * severity if anomaly == "blade_damage" else 0.0
    blades = _fan_blade_tones(shaft, sample_rate, streams("blades"), damage)
    air = 0.55 * _fan_aerodynamic(rpm, num_samples, sample_rate, streams("air"))
    sound = loudness * (blades + air) + _fan_motor_tones(shaft, sample_rate, streams("motor"))
    fault_rng = streams("fault")
    defect = 0.05 + 0.75 * severity if anomaly == "bearing" else 0.0
    sound += _fan_bearing(shaft, rate, sample_rate, fault_rng, defect)
    if anomaly == "imbalance":
        heavy_side = np.sin(shaft + fault_rng.uniform(0, 2 * np.pi))
        sound = sound * (1.0 + (0.03 + 0.14 * severity) * heavy_side) + 0.08 * (1.0 + 3.0 * severity) * heavy_side
    return sound


# ---------------------------------------------------------------------------------------------------- valve

VALVE_PATTERNS = {  # (cycle period s, ((open s, close s), ...)): the controller's schedule per pattern
    "00": (2.0, ((0.00, 0.50), (1.00, 1.40))),
    "01": (2.0, ((0.00, 0.45), (1.00, 1.42))),
    "02": (1.7, ((0.00, 0.40), (0.85, 1.20))),
    "03": (1.7, ((0.00, 0.36), (0.85, 1.22))),
}
VALVE_OPEN_MODES = ((2100.0, 0.003, 1.0), (4300.0, 0.002, 0.6), (6500.0, 0.001, 0.3))  # plunger on its stop
VALVE_CLOSE_MODES = ((1400.0, 0.005, 1.0), (3100.0, 0.003, 0.5), (5600.0, 0.0015, 0.25))  # plunger on the seat
VALVE_THUMP = ((110.0, 0.03, 1.0),)  # pressure surge of the line when the flow stops
VALVE_PUMP_HZ = 147.5  # supply pump vane pass (6 vanes at 1475 rpm) at 4 bar
VALVE_MICROPHONE = Microphone(level_db=0.0, reflection_gain=0.2, reflection_delay_s=0.9e-3, rolloff_hz=9000.0)


@dataclasses.dataclass
class _ValveEvents:
    opens: np.ndarray  # seconds
    closes: np.ndarray
    gate: np.ndarray  # flow through the valve over time, 0 (closed) .. 1 (open)
    energised: np.ndarray  # coil current on (1) or off (0) over time


def _valve_events(pattern: str, num_samples: int, sample_rate: int, rng: np.random.Generator,
                  sticking: float = 0.0) -> _ValveEvents:
    """The schedule of ``pattern`` from a random point of its cycle, each switching 4 ms late +- 2 ms (coil
    inductance, plunger travel). The flow ramps up in 12 ms and down in 6 ms. ``sticking`` > 0: a varnished
    plunger opens late by a further 10-60 ms times ``sticking`` (random per opening) and lets the flow in over
    40 ms."""
    period, schedule = VALVE_PATTERNS[pattern]
    duration = num_samples / sample_rate
    start = rng.uniform(0.0, period)
    cycles = np.arange(-1, int(duration / period) + 2)
    opens = np.concatenate([cycles * period + o - start for o, _ in schedule])
    closes = np.concatenate([cycles * period + c - start for _, c in schedule])
    order = np.argsort(opens)
    opens, closes = opens[order], closes[order]
    energise = opens.copy()
    opens = opens + 0.004 + 0.002 * rng.standard_normal(len(opens))
    closes = closes + 0.004 + 0.002 * rng.standard_normal(len(closes))
    rise = 0.012
    if sticking > 0.0:
        opens = opens + sticking * rng.uniform(0.01, 0.06, len(opens))
        rise = 0.04
    t = np.arange(num_samples) / sample_rate
    gate = np.zeros(num_samples)
    energised = np.zeros(num_samples)
    for o, c, e in zip(opens, closes, energise):
        inside = (t >= o) & (t < c + 0.006)
        gate[inside] = np.minimum(np.minimum((t[inside] - o) / rise, 1.0), (c + 0.006 - t[inside]) / 0.006)
        energised[(t >= e) & (t < c)] = 1.0
    return _ValveEvents(opens, closes, np.clip(gate, 0.0, 1.0), energised)


def _valve_clicks(events: _ValveEvents, pressure: float, num_samples: int, sample_rate: int,
                  rng: np.random.Generator, sticking: float = 0.0) -> np.ndarray:
    """Plunger clicks: opening (modes 2.1, 4.3, 6.5 kHz) and closing (1.4, 3.1, 5.6 kHz), 10 % jitter per click;
    at closing the line's pressure surge thumps at 110 Hz with amplitude rising as the flow speed sqrt(p). A
    sticking plunger opens softly (60 % of the click) and bounces back onto its stop 4-10 ms later (30 %)."""
    clicks = np.zeros(num_samples)
    opening = 0.6 if sticking > 0.0 else 1.0
    _place(clicks, _modal_kernel(VALVE_OPEN_MODES, sample_rate), events.opens,
           opening * rng.lognormal(0.0, 0.1, len(events.opens)), sample_rate)
    _place(clicks, _modal_kernel(VALVE_CLOSE_MODES, sample_rate), events.closes,
           rng.lognormal(0.0, 0.1, len(events.closes)), sample_rate)
    _place(clicks, _modal_kernel(VALVE_THUMP, sample_rate), events.closes + 0.002,
           0.6 * np.sqrt(pressure / 4.0) * rng.lognormal(0.0, 0.1, len(events.closes)), sample_rate)
    if sticking > 0.0:
        _place(clicks, _modal_kernel(VALVE_OPEN_MODES, sample_rate), events.opens + rng.uniform(0.004, 0.01,
                                                                                                 len(events.opens)),
               0.3 * rng.lognormal(0.0, 0.1, len(events.opens)), sample_rate)
    return clicks


def _valve_flow(events: _ValveEvents, pressure: float, num_samples: int, sample_rate: int,
                rng: np.random.Generator) -> np.ndarray:
    """Flow hiss while open: turbulence noise in a band whose edges scale with the jet speed sqrt(p) (1.2-6 kHz
    at 4 bar) and whose amplitude rises as p^2 (jet noise power ~ U^8 ~ p^4), fluctuating by 15 % at 20 Hz."""
    scale = np.sqrt(pressure / 4.0)
    band = _bandpass(1200.0 * scale, 6000.0 * scale, sample_rate)
    noise = signal.sosfilt(band, rng.standard_normal(num_samples))
    turbulence = 1.0 + 0.15 * _slow_noise(rng, num_samples, sample_rate, 20.0)
    return 0.25 * (pressure / 4.0) ** 2 * events.gate * turbulence * noise


def _valve_pump(events: _ValveEvents, pressure: float, num_samples: int, sample_rate: int,
                rng: np.random.Generator) -> np.ndarray:
    """The supply pump down the line: vane-pass hum at 147.5 Hz and harmonics; its controller runs it faster for
    a higher pressure (speed ~ sqrt(p): +3.7 % from 4.0 to 4.3 bar), and it slows by 1.5 % and works 1 dB harder
    while the valve draws water."""
    load = signal.sosfilt(signal.butter(1, 3.0, fs=sample_rate, output="sos"), events.gate)
    frequency = VALVE_PUMP_HZ * np.sqrt(pressure / 4.0) * (1.0 + 0.003 * rng.standard_normal()) * (1 - 0.015 * load)
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    return 0.12 * (1.0 + 0.12 * load) * _harmonics(phase, (1.0, 0.5, 0.3, 0.2, 0.1), rng.uniform(0, 2 * np.pi, 5))


def _valve(condition: dict[str, str], num_samples: int, sample_rate: int, streams: Streams,
           anomaly: str | None, severity: float) -> np.ndarray:
    """The valve at pattern ``pat`` and supply pressure ``pres`` (bar; the regulator holds it to 2 %). Faults,
    growing with ``severity`` s in (0, 1] (levels against the flow noise's unit-RMS source): ``leak`` (a worn seat
    hisses at 4-7 kHz while closed, -44 + 22 s dB), ``contamination`` (grit ticks at 2.5-5.5 kHz, 15-45 per
    second, while water flows, -12 + 16 s dB), ``sticking`` (openings 0.3 + 0.7 s times 10-60 ms late, soft,
    with a bounce and a slow flow onset) and ``coil_buzz`` (a cracked shading ring lets the AC coil's plunger buzz
    at 100 Hz and harmonics while energised, -20 + 18 s dB)."""
    pressure = float(condition["pres"]) * (1.0 + 0.02 * streams("pressure").standard_normal())
    fault_rng = streams("fault")
    sticking = 0.3 + 0.7 * severity if anomaly == "sticking" else 0.0
    events = _valve_events(condition["pat"], num_samples, sample_rate, streams("events"), sticking)
    sound = _valve_clicks(events, pressure, num_samples, sample_rate, streams("clicks"), sticking)
    sound += _valve_flow(events, pressure, num_samples, sample_rate, streams("flow"))
    sound += _valve_pump(events, pressure, num_samples, sample_rate, streams("pump"))
    if anomaly == "leak":
        noise = signal.sosfilt(_bandpass(4000.0, 7000.0, sample_rate), fault_rng.standard_normal(num_samples))
        sound += _db(-44.0 + 22.0 * severity) * (1.0 - events.gate) * noise
    elif anomaly == "contamination":
        duration = num_samples / sample_rate
        candidates = fault_rng.uniform(0, duration, fault_rng.poisson(fault_rng.uniform(15.0, 45.0) * duration))
        positions = np.minimum((candidates * sample_rate).astype(int), num_samples - 1)
        times = candidates[fault_rng.uniform(size=len(candidates)) < events.gate[positions]]
        kernel_t = np.arange(int(0.002 * sample_rate)) / sample_rate
        kernel = signal.sosfilt(_bandpass(2500.0, 5500.0, sample_rate),
                                fault_rng.standard_normal(len(kernel_t)) * np.exp(-kernel_t / 0.0006))
        ticks = np.zeros(num_samples)
        _place(ticks, kernel / np.abs(kernel).max(), times, fault_rng.lognormal(0.0, 0.4, len(times)), sample_rate)
        sound += _db(-12.0 + 16.0 * severity) * ticks
    elif anomaly == "coil_buzz":
        t = np.arange(num_samples) / sample_rate
        hum = np.abs(np.sin(2 * np.pi * 50.0 * t + fault_rng.uniform(0, 2 * np.pi))) - 2 / np.pi  # 100 Hz + harmonics
        sound += _db(-20.0 + 18.0 * severity) * events.energised * hum
    return sound


# ---------------------------------------------------------------------------------------------------- slider

SLIDER = MachineParams(  # the mechanics of the world's one slide rail (fields as in asd_jax.data.synthetic)
    cycle_s=2.2, dwell=0.12, accel=0.2, motor_hz=170.0, motor_harmonics=(1.0, 0.55, 0.4, 0.28, 0.2, 0.15, 0.11, 0.08),
    motor_level=0.8, drift=0.004, mains_hz=50.0, mains_level=0.1, friction_band=(1400.0, 3800.0), friction_level=0.8,
    roughness=((5.0, 0.2, 0.3), (9.0, 0.15, 1.9), (13.0, 0.1, 4.0)),
    stop_modes=(((520.0, 0.05, 1.0), (1650.0, 0.025, 0.6), (3900.0, 0.012, 0.35)),
                ((560.0, 0.045, 1.0), (1720.0, 0.03, 0.55), (4100.0, 0.01, 0.3))),
    impact_level=4.0)
SLIDER_NOMINAL_VELOCITY = 600.0  # mm/s at which the carriage runs SLIDER.cycle_s
SLIDER_FAULT_DB = {"rail_damage": 10.0, "no_lubrication": 6.0, "loose_belt": 4.0}  # added to synthetic's levels
SLIDER_MICROPHONE = Microphone(level_db=0.0, reflection_gain=0.2, reflection_delay_s=1.4e-3, rolloff_hz=9000.0)


def _slider(condition: dict[str, str], num_samples: int, sample_rate: int, streams: Streams,
            anomaly: str | None, severity: float) -> np.ndarray:
    """The slide rail at carriage speed ``vel`` (mm/s; motor pitch, friction and impacts follow it) with ``ac`` of
    each stroke spent accelerating: the servo's speed holds to 0.8 % per clip (at most 2 %) and its ramps to
    +-0.01. Faults are :mod:`asd_jax.data.synthetic`'s (level rising by 20-22 dB over the severity range),
    ``SLIDER_FAULT_DB`` louder: the world scales a faulty machine back to its normal power, and even 3 dB above
    synthetic's own levels the faults hardly moved the clip-mean spectrum (Mahalanobis AUC below 0.6):
    ``rail_damage`` (clicks where the rollers cross a damaged spot), ``no_lubrication`` (a squeal following the
    speed), ``loose_belt`` (bursts of rattle while moving)."""
    rng = streams("motion")
    speed = float(condition["vel"]) / SLIDER_NOMINAL_VELOCITY
    speed *= 1.0 + float(np.clip(0.008 * rng.standard_normal(), -0.02, 0.02))
    accel = float(np.clip(float(condition["ac"]) + 0.01 * rng.standard_normal(), 0.05, 0.45))
    params = dataclasses.replace(SLIDER, accel=accel)
    motion = _motion(params, num_samples, sample_rate, speed, float(rng.uniform()))
    seed = int(streams("machine").integers(2 ** 31))
    sound = _machine(params, motion, sample_rate, (seed, "slider"))
    if anomaly is not None:
        sound += _db(SLIDER_FAULT_DB[anomaly]) * _fault(anomaly, severity, params, motion, sample_rate,
                                                        streams("fault"))
    return sound


# ---------------------------------------------------------------------------------------------------- clips

_RENDERERS = {"fan": _fan, "slider": _slider, "valve": _valve}


def _machine_microphone(machine_type: str, condition: dict[str, str]) -> Microphone:
    if machine_type == "fan":
        return FAN_MICROPHONES[condition["mic"]]
    return VALVE_MICROPHONE if machine_type == "valve" else SLIDER_MICROPHONE


@functools.lru_cache(maxsize=16)
def _machine_gain(machine_type: str, sample_rate: int) -> float:
    """Fixed per-type gain that brings the machine's sound in its first source condition to unit RMS (10 s
    reference render), so attribute values keep their physical level differences."""
    condition = MACHINE_TYPES[machine_type].conditions("source")[0]
    num_samples = 10 * sample_rate
    reference = _RENDERERS[machine_type](condition, num_samples, sample_rate,
                                         lambda name: _rng(0, "reference", machine_type, name), None, 0.0)
    return float(1.0 / np.sqrt(np.mean(reference ** 2)))


def render_clip(config: WorldConfig, spec: ClipSpec) -> np.ndarray:
    """One file's samples as float32 in [-1, 1].

    The machine passes the microphone's position filter. A fault's sound is added and the faulty machine, as the
    microphone hears it, is scaled back to the power of the same clip without the fault (severity 0 renders that
    clip), so a fault changes the spectrum's shape and the time structure, not the level. The machine is mixed
    with its domain's background at the domain's SNR; the machine (1 dB), the background (1.5 dB) and the
    recorder's gain (1.5 dB) jitter per clip.
    """
    machine = MACHINE_TYPES[spec.machine_type]
    if spec.anomaly is not None and spec.anomaly not in machine.anomaly_kinds:
        raise ValueError(f"{spec.machine_type} has no fault {spec.anomaly!r}; expected one of "
                         f"{machine.anomaly_kinds}")
    sample_rate, n = config.sample_rate, config.num_samples

    def streams(component: str) -> np.random.Generator:
        return _rng(config.seed, *spec.seed_keys, component)

    levels = streams("levels")
    machine_db, background_db, gain_db = levels.normal(0.0, [1.0, 1.5, 1.5])
    mixture = np.zeros(n)
    if spec.kind != "noise":
        condition = dict(spec.attributes)
        mic = _machine_microphone(spec.machine_type, condition)

        def heard(anomaly: str | None, severity: float) -> np.ndarray:
            sound = _RENDERERS[spec.machine_type](condition, n, sample_rate, streams, anomaly, severity)
            return _microphone(sound, sample_rate, mic, streams("mic"))

        sound = heard(None, 0.0)
        if spec.anomaly is not None and spec.severity > 0.0:
            power = np.mean(sound ** 2)
            sound = heard(spec.anomaly, spec.severity)
            sound *= np.sqrt(power / np.mean(sound ** 2))
        mixture += sound * _machine_gain(spec.machine_type, sample_rate) * _db(machine_db)
    if spec.kind != "machine":
        background = _domain_background(spec.domain, n, sample_rate, streams("background"))
        mixture += background * _db(background_db - config.snr(spec.domain))
    return np.clip(mixture * _db(_OUTPUT_DBFS + gain_db), -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- worlds


def _write_clips(config: WorldConfig, root: str, specs: Sequence[ClipSpec]) -> int:
    """Render and write ``specs`` (worker entry point); each file appears atomically under its final name."""
    for spec in specs:
        write_wav(os.path.join(root, spec.relpath), render_clip(config, spec), config.sample_rate)
    return len(specs)


def _summary(config: WorldConfig, root: str, plan: Sequence[ClipSpec], seconds: float) -> dict:
    types = {}
    for spec in plan:
        entry = types.setdefault(spec.machine_type, {"clips": 0, "domains": {}, "anomaly_kinds": {},
                                                     "supplemental": {"machine": 0, "noise": 0}})
        entry["clips"] += 1
        if spec.kind != "clip":
            entry["supplemental"][spec.kind] += 1
            continue
        domain = entry["domains"].setdefault(spec.domain, {"train": {"normal": 0}, "test": {"normal": 0,
                                                                                             "anomaly": 0}})
        domain[spec.split][spec.label] += 1
        if spec.anomaly:
            entry["anomaly_kinds"][spec.anomaly] = entry["anomaly_kinds"].get(spec.anomaly, 0) + 1
    for name, entry in types.items():
        entry["attributes"] = {domain: [dict(c) for c in MACHINE_TYPES[name].conditions(domain)]
                               for domain in DOMAINS}
    return {"root": root, "clips": len(plan), "types": types, "snr_db": {d: config.snr(d) for d in DOMAINS},
            "severity": list(config.severity), "seconds": round(seconds, 2)}


def _format_summary(summary: dict) -> str:
    lines = [f"synthetic world: {summary['clips']} files in {summary['seconds']:.1f} s -> {summary['root']}",
             f"  (SNR source {summary['snr_db']['source']:+g} dB, target {summary['snr_db']['target']:+g} dB, "
             f"severity {summary['severity']}; synthetic, not DCASE)",
             "  type     train src/tgt  test src n/a  test tgt n/a  supplemental  kinds"]
    for name, entry in summary["types"].items():
        source, target = (entry["domains"].get(d, {"train": {"normal": 0}, "test": {"normal": 0, "anomaly": 0}})
                          for d in DOMAINS)
        supplemental = entry["supplemental"]
        lines.append(f"  {name:7s}  {source['train']['normal']:5d}/{target['train']['normal']:<5d}  "
                     f"{source['test']['normal']:6d}/{source['test']['anomaly']:<5d}  "
                     f"{target['test']['normal']:6d}/{target['test']['anomaly']:<5d}  "
                     f"{supplemental['machine']:5d}+{supplemental['noise']:<6d}  {', '.join(entry['anomaly_kinds'])}")
    return "\n".join(lines)


def _remove_stale(out_dir: str, plan: Sequence[ClipSpec]) -> None:
    """Delete world-named files (and unfinished ``.part`` files) that ``plan`` does not contain, in the folders of
    every machine type this module knows, so an earlier, larger config leaves nothing behind."""
    wanted = {spec.relpath for spec in plan}
    for name in MACHINE_TYPES:
        for split in SPLITS:
            folder = os.path.join(out_dir, name, split)
            if not os.path.isdir(folder):
                continue
            for file in os.listdir(folder):
                stale = file.endswith(".part") or os.path.join(name, split, file) not in wanted
                if _WORLD_NAME.match(file) and stale:
                    os.remove(os.path.join(folder, file))
        csv_path = os.path.join(out_dir, name, f"attributes_{SECTION}.csv")
        if os.path.isfile(csv_path) and not any(spec.machine_type == name for spec in plan):
            os.remove(csv_path)


def generate_world(out_dir: str, config: WorldConfig = WorldConfig(), num_workers: int | None = None,
                   progress: bool = True) -> dict:
    """Write the world under ``out_dir`` (layout in the module docstring) and its manifest ``synthetic.json``.

    The manifest (a note that the data is synthetic, the config, every test clip's fault, severity, domain and
    attributes, and what each supplemental clip is) is removed first and written last, so a folder without it is
    an interrupted generation. Files of an earlier config that this one lacks are removed. ``num_workers`` None
    uses every core; 1 renders in this process. Returns a summary, printed when ``progress``.
    """
    start = time.perf_counter()
    manifest = os.path.join(out_dir, MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        os.remove(manifest)
    plan = clip_plan(config)
    for name in config.machine_types:
        for split in SPLITS:
            os.makedirs(os.path.join(out_dir, name, split), exist_ok=True)
    _remove_stale(out_dir, plan)

    render(_write_clips, config, out_dir, plan, num_workers, progress, "synthetic world")

    for name, rows in attribute_rows(config, plan).items():
        path = os.path.join(out_dir, name, f"attributes_{SECTION}.csv")
        with fileio.atomic_open(path, "w", suffix=".part", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)

    summary = _summary(config, out_dir, plan, time.perf_counter() - start)
    test_clips = {spec.relpath: {"anomaly": spec.anomaly, "severity": spec.severity, "domain": spec.domain,
                                 "attributes": dict(spec.attributes)} for spec in plan if spec.split == "test"}
    supplemental = {spec.relpath: {"kind": spec.kind, "domain": spec.domain, "attributes": dict(spec.attributes)}
                    for spec in plan if spec.split == "supplemental"}
    content = {"note": NOTE, "generator_version": GENERATOR_VERSION, "config": config.to_json(), "summary": summary,
               "test_clips": test_clips, "supplemental": supplemental}
    fileio.atomic_write_json(manifest, content, suffix=".part", indent=1)
    if progress:
        print(_format_summary(summary))
    return summary


def is_complete(root: str, config: WorldConfig) -> bool:
    """Whether ``root`` holds a finished generation of exactly ``config`` (manifest matches, every file present)."""
    if not manifest_matches(root, GENERATOR_VERSION, config.to_json()):
        return False
    return all(os.path.isfile(os.path.join(root, spec.relpath)) for spec in clip_plan(config)) and \
        all(os.path.isfile(os.path.join(root, name, f"attributes_{SECTION}.csv")) for name in config.machine_types)


def default_world(cache_dir: str | None = None, config: WorldConfig = WorldConfig(), num_workers: int | None = None,
                  progress: bool = True) -> str:
    """The root (folder holding ``<machine_type>/``) of the cached world for ``config``, generated on first use
    under ``<cache>/synthetic_world/<config hash>/`` and returned at once afterwards (:func:`synthetic.cached`)."""
    return cached("synthetic_world", cache_dir, config, is_complete, generate_world, num_workers, progress)


def describe() -> str:
    """How the world is made, in a few lines for the README and the CLI."""
    config = WorldConfig()
    lines = ["Synthetic world (not DCASE/MIMII): one machine per type in the DCASE 2025 dev layout, section 00;",
             f"  {config.num_train} source + {config.num_train_target} target training clips, "
             f"{config.num_test_normal} normal + {config.num_test_anomaly} anomalous test clips per domain, "
             f"{config.num_supplemental_machine} clean machine + {config.num_supplemental_noise} noise-only "
             "supplemental clips per type.",
             "  Attribute values change the sound subtly (a few % of speed, a timing pattern, a microphone position, "
             "a pressure);",
             f"  the target domain runs a shifted condition in another hall ({-config.target_snr_offset_db:g} dB "
             f"lower SNR). Faults keep the machine's power; severity in {config.severity}."]
    for machine in MACHINE_TYPES.values():
        attributes = "; ".join(f"{key} {'/'.join(source)} (target {'/'.join(target)})"
                               for key, source, target in machine.attributes)
        lines.append(f"  {machine.name}: {attributes}; faults {', '.join(machine.anomaly_kinds)}")
    return "\n".join(lines)
