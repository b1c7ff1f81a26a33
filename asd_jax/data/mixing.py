"""Noise-only recordings mixed into normal training clips: extra normal training clips (DCASE 2025 supplemental).

DCASE 2025's ``supplemental/`` folders hold noise-only recordings of each machine type's environment
(:func:`asd_jax.data.dcase.find_supplemental`, kind "noise"). The reference systems use them as augmentation: a
normal training clip plus a noise clip at a random signal-to-noise ratio is one more normal training clip.
:func:`noise_mixtures` makes such clips and caches their wav files; :func:`mix` is the mixing rule itself.

**The mixing rule** (:func:`mix`). Powers are mean squares over the whole clip. The noise is scaled so that clean
power / scaled-noise power is the drawn SNR (in dB), added to the clean clip, and when the sum's peak exceeds
:data:`PEAK` both are scaled down together (the SNR is kept) so that the 16-bit wav does not clip. A silent clean
or noise clip has no SNR: that pair is skipped and reported.

**Draws** (seeded, reproducible): the noise clips are used in turns, each turn a fresh random order, so ``count``
equal to the number of noise clips uses each once. Each noise clip is paired with a random clean clip of its machine
type and section (any clean clip of the type when no clean clip has its section) and a uniform SNR in ``snr_db``.
Clean clips are read at the run's rate and duration (:func:`asd_jax.data.audio.load_clip`, tiled or cropped as for
features); a noise clip is read whole and repeated or cropped to the clean clip's length.

**Names.** A mixture is written as ``<clean clip's name>_noisemix_NNNN.wav`` (NNNN: the mixture's number). A 2021+
dev name (``section_XX_<domain>_train_normal_NNNN[_<attributes>].wav``) still parses to the clean clip's section and
domain (:func:`asd_jax.data.dcase.unit_of`, used by the kNN and classifier code); for names whose unit would not
survive a suffix (2020 ``normal_id_XX_NNNNNNNN.wav``, raw MIMII) the file goes under ``id_XX/normal/``, which
:func:`~asd_jax.data.dcase.unit_of` reads as machine id XX without a domain, as for the clean clip. The returned
clips carry the clean clip's machine type, id, section, domain and attributes; split "train", label NORMAL.

**Cache** (:class:`asd_jax.fileio.CacheEntry` under ``<cache root>/noise_mixtures/<key>``): the key covers the
clean and noise files (path, size, mtime) and every setting; the index, written last, lists each mixture (its file
and size, clean and noise clip, SNR, peak scale) and the skipped inputs. A second call with the same inputs reads
the index and reuses the files; a concurrent caller waits for the build in progress.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np

from asd_jax import fileio
from asd_jax import progress as progress_output
from asd_jax.data import dcase
from asd_jax.data.audio import AudioError, ChannelError, load_clip
from asd_jax.data.synthetic import write_wav

log = logging.getLogger(__name__)

PEAK = 0.99  # a mixture whose peak exceeds this is scaled down (clean and noise together) to this peak
SUFFIX = "_noisemix_"
DEFAULT_SNR_DB = (-5.0, 5.0)
_CACHE_KIND = "noise_mixtures"
_CACHE_VERSION = 2  # 2: short clean clips tiled, not zero-padded


class SilentClip(ValueError):
    """A clean or noise wave with no power: no SNR can be set. ``which`` is "clean" or "noise"."""

    def __init__(self, which: str):
        self.which = which
        super().__init__(f"the {which} clip is silent: no SNR can be set")


@dataclasses.dataclass(frozen=True)
class Mixture:
    """One mixture: the wave (float32, peak-limited), the scale applied to the noise for the SNR and the scale
    applied to the sum to keep its peak at or below :data:`PEAK` (1.0 when none was needed)."""

    wave: np.ndarray
    noise_gain: float
    peak_scale: float


def power(wave: np.ndarray) -> float:
    """Mean square of ``wave`` (float64)."""
    samples = np.asarray(wave, np.float64)
    return float(np.mean(np.square(samples))) if len(samples) else 0.0


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float = PEAK) -> Mixture:
    """``clean`` plus ``noise`` scaled so that power(clean) / power(scaled noise) is ``snr_db`` dB, scaled down as a
    whole when its peak exceeds ``peak``. Both arrays have the same length; a silent one: :class:`SilentClip`."""
    clean, noise = np.asarray(clean, np.float64), np.asarray(noise, np.float64)
    if clean.shape != noise.shape:
        raise ValueError(f"clean and noise waves differ in shape: {clean.shape} and {noise.shape}")
    clean_power, noise_power = power(clean), power(noise)
    if clean_power <= 0.0:
        raise SilentClip("clean")
    if noise_power <= 0.0:
        raise SilentClip("noise")
    gain = math.sqrt(clean_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    wave = clean + gain * noise
    top = float(np.max(np.abs(wave)))
    scale = peak / top if top > peak else 1.0
    return Mixture((wave * scale).astype(np.float32), gain, scale)


def fit_noise(noise: np.ndarray, num_samples: int) -> np.ndarray:
    """``noise`` repeated (when shorter) or cropped to ``num_samples``."""
    if len(noise) == 0:
        raise ValueError("the noise clip has no samples")
    return np.resize(np.asarray(noise, np.float32), num_samples)


def parse_snr_range(value) -> tuple[float, float]:
    """(low, high) dB from a pair, a ``"low,high"`` string (brackets allowed) or one number (a fixed SNR); None or
    "" gives :data:`DEFAULT_SNR_DB`. ValueError for anything else or low > high."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_SNR_DB
    if isinstance(value, str):
        parts = [p for p in value.strip().strip("()[]").split(",") if p.strip()]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not all(map(math.isfinite, numbers)) or numbers[0] > numbers[1]:
        raise ValueError(f"SNR range {value!r}: give two numbers 'low,high' in dB (low <= high) or one number")
    return numbers[0], numbers[1]


def mixture_path(directory: str, clean: dcase.Clip, index: int) -> str:
    """Where mixture ``index`` of ``clean`` is written under ``directory`` (the rule in the module docstring)."""
    stem = os.path.splitext(clean.name)[0]
    name = f"{stem}{SUFFIX}{index:04d}.wav"
    flat = os.path.join(directory, name)
    wanted = dcase.unit_of(clean.path)
    if wanted is None or dcase.unit_of(flat) == wanted:
        return flat
    return os.path.join(directory, f"id_{clean.section}", "normal", name)


def _plan(clean: Sequence[dcase.Clip], noise: Sequence, count: int, snr_db: tuple[float, float], seed: int
          ) -> tuple[list[tuple[int, int, float]], list[dict]]:
    """[(noise index, clean index, snr)] for ``count`` mixtures, and the noise clips with no clean clip of their
    type (reported)."""
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[int]] = {}
    for index, clip in enumerate(clean):
        by_type.setdefault(clip.machine_type, []).append(index)
    plan, unpaired = [], {}
    rounds = math.ceil(count / len(noise))
    order = [int(i) for _ in range(rounds) for i in rng.permutation(len(noise))][:count]
    for noise_index in order:
        clip = noise[noise_index]
        of_type = by_type.get(clip.machine_type, [])
        same_section = [i for i in of_type if clean[i].section == getattr(clip, "section", None)]
        candidates = same_section or of_type
        clean_index = int(candidates[rng.integers(len(candidates))]) if candidates else -1
        snr = float(rng.uniform(snr_db[0], snr_db[1]))
        if clean_index < 0:
            unpaired[clip.path] = {"file": clip.path,
                                   "error": f"no normal training clip of machine type {clip.machine_type!r} to mix "
                                            "this noise clip into"}
            continue
        plan.append((noise_index, clean_index, snr))
    return plan, list(unpaired.values())


def noise_mixtures(clean: Sequence[dcase.Clip], noise: Sequence[dcase.SupplementalClip | dcase.Clip], count: int,
                   snr_db: tuple[float, float] = DEFAULT_SNR_DB, seed: int = 0, sample_rate: int = 16_000,
                   duration_s: float | None = 10.0, cache_root: str | None = None, progress: bool = True,
                   channel: str | int = "mean") -> tuple[list[dcase.Clip], list[dict]]:
    """(``count`` new normal training clips, the inputs skipped as ``{"file": path, "error": message}``): each a
    clean clip plus a noise clip of its machine type at a random SNR in ``snr_db`` (rules in the module docstring),
    written once into the cache (``cache_root``: None or "" is :func:`asd_jax.fileio.cache_root`'s default).

    An input that cannot be read (or is silent) loses its pairs, which are reported, never raised; a ``channel``
    the files lack is a setting that does not fit the data and raises
    :class:`~asd_jax.data.audio.ChannelError`. The same inputs, settings and ``seed`` give the same clips."""
    snr_db = parse_snr_range(snr_db)
    if count <= 0 or not noise or not clean:
        return [], []
    clean = sorted(clean, key=lambda c: c.path)
    noise = sorted(noise, key=lambda c: c.path)
    settings = {"version": _CACHE_VERSION, "count": int(count), "snr_db": list(snr_db), "seed": int(seed),
                "sample_rate": int(sample_rate), "duration_s": duration_s, "channel": str(channel), "peak": PEAK,
                "num_clean": len(clean), "num_noise": len(noise),
                "clean": [[c.machine_type, c.section] for c in clean],
                "noise": [[c.machine_type, getattr(c, "section", "")] for c in noise]}
    key = fileio.cache_key([c.path for c in clean] + [c.path for c in noise], settings)
    entry = fileio.CacheEntry.under(fileio.cache_root(cache_root or None), _CACHE_KIND, key)
    index = entry.load_or_build(
        lambda: _load(entry),
        lambda: _build(entry, clean, noise, count, snr_db, seed, sample_rate, duration_s, channel, progress))
    return _clips(entry, index, clean), list(index["skipped"])


def _load(entry: fileio.CacheEntry) -> dict | None:
    """The index of a complete entry (every listed wav present at its recorded size), else None."""
    index = entry.read_index()
    if index is None:
        return None
    try:
        for mixture in index["mixtures"]:
            if os.path.getsize(entry.file(mixture["file"])) != mixture["size"]:
                return None
        if not isinstance(index["skipped"], list):
            return None
    except (OSError, KeyError, TypeError):
        return None
    return index


def _build(entry: fileio.CacheEntry, clean: list[dcase.Clip], noise: list, count: int, snr_db: tuple[float, float],
           seed: int, sample_rate: int, duration_s: float | None, channel, progress: bool) -> dict:
    entry.clear()
    plan, skipped = _plan(clean, noise, count, snr_db, seed)
    failed: dict[str, str] = {}  # path -> error, so a bad file is read (and reported) once

    def read(path: str, length: float | None) -> np.ndarray | None:
        if path in failed:
            return None
        try:
            return load_clip(path, sample_rate, length, channel)[0]
        except ChannelError:
            raise
        except AudioError as error:
            failed[path] = str(error)
        except Exception as error:  # noqa: BLE001 - anything a broken file throws is reported, never fatal
            failed[path] = f"{path}: {type(error).__name__}: {error}"
        return None

    mixtures = []
    with progress_output.bar(total=len(plan), desc="noise mixtures", unit="clip", enabled=progress) as bar:
        for number, (noise_index, clean_index, snr) in enumerate(plan):
            bar.update(1)
            noise_clip, clean_clip = noise[noise_index], clean[clean_index]
            noise_wave = read(noise_clip.path, None)
            clean_wave = read(clean_clip.path, duration_s) if noise_wave is not None else None
            if noise_wave is None or clean_wave is None:
                continue
            try:
                mixture = mix(clean_wave, fit_noise(noise_wave, len(clean_wave)), snr)
            except SilentClip as error:
                silent = noise_clip.path if error.which == "noise" else clean_clip.path
                failed.setdefault(silent, f"{silent}: {error}")
                continue
            path = mixture_path(entry.directory, clean_clip, number)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_wav(path, mixture.wave, sample_rate)
            mixtures.append({"file": os.path.relpath(path, entry.directory), "size": os.path.getsize(path),
                             "clean": clean_clip.path, "noise": noise_clip.path, "snr_db": snr,
                             "noise_gain": mixture.noise_gain, "peak_scale": mixture.peak_scale})
    skipped += [{"file": path, "error": error} for path, error in failed.items()]
    for item in skipped:
        log.warning("noise mixtures: skipped %s (%s)", item["file"], item["error"])
    index = {"mixtures": mixtures, "skipped": skipped}
    entry.write_index(index)
    return {"key": entry.key, **index}


def _clips(entry: fileio.CacheEntry, index: dict, clean: list[dcase.Clip]) -> list[dcase.Clip]:
    by_path = {c.path: c for c in clean}
    clips = []
    for mixture in index["mixtures"]:
        source = by_path[mixture["clean"]]
        clips.append(dcase.Clip(entry.file(mixture["file"]), source.machine_type, source.machine_id, "train",
                                dcase.NORMAL, source.domain, source.section, dict(source.attributes)))
    return clips


def manifest(clips: Sequence[dcase.Clip]) -> list[dict]:
    """What the cache index says of each of ``clips`` (made by :func:`noise_mixtures`): its file, clean and noise
    clip, snr_db, noise_gain and peak_scale, in clip order. KeyError for a clip that is no cached mixture."""
    tables: dict[str, dict[str, dict]] = {}
    found = []
    for clip in clips:
        directory = os.path.dirname(clip.path)
        for _ in range(3):  # the entry folder holds the file, or is two above it (id_XX/normal/)
            if directory not in tables and os.path.isfile(os.path.join(directory, fileio.CacheEntry.INDEX)):
                with open(os.path.join(directory, fileio.CacheEntry.INDEX)) as handle:
                    tables[directory] = {os.path.join(directory, m["file"]): m for m in json.load(handle)["mixtures"]}
            if clip.path in tables.get(directory, {}):
                break
            directory = os.path.dirname(directory)
        found.append(tables[directory][clip.path])
    return found
