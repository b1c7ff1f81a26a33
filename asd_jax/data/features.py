"""Log-mel features as the DCASE 2020 baseline computes them, whole-clip log magnitude spectra (the spectrum branch
of the id classifier), and their on-disk caches.

Both kinds share one mechanism (:class:`_FrontEnd`): clips are decoded by :func:`asd_jax.data.audio.load_clip`, a
clip that cannot be read is skipped and listed, extraction runs over a process pool, and the result is cached as one
float32 array plus an index (an :class:`asd_jax.fileio.CacheEntry` under its own kind folder) with the same file
lock and checksums.

Every clip's level (:func:`asd_jax.data.audio.level_dbfs`) is measured while it is decoded and kept in the cache
index, so silent and near-silent clips (a dead microphone) are reported by name on every run, cache hits included.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import math
import logging
import multiprocessing
import os
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from asd_jax import fileio
from asd_jax import progress as progress_output
from asd_jax.data import audio
from asd_jax.data.audio import QUIET_DBFS, AudioError, ChannelError, load_clip, normalise_channel, quiet_problem

log = logging.getLogger(__name__)


SCALES = ("mel", "linear")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """DCASE 2020 baseline front end: librosa mel, n_fft 1024, hop 512, 128 mels, power 2, 10*log10(mel + eps).

    ``scale="linear"``: no mel filterbank, the STFT bins themselves between ``fmin`` and ``fmax`` (the input of the
    reference id classifiers: ASDKit's 1024-point STFT from 200 Hz to 8 kHz, 500 bins 15.6 Hz apart),
    10*log10(|STFT|^power + eps); ``n_mels`` is then not read (:attr:`num_bins` is the feature width).

    ``channel``: how a multichannel file becomes mono, ``"mean"`` (channel average) or a channel index such as
    ``0`` (DCASE 2020 took channel 0 of raw MIMII); see :func:`asd_jax.data.audio.select_channel`.
    """

    sample_rate: int = 16_000
    duration_s: float = 10.0
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    power: float = 2.0
    fmin: float = 0.0
    fmax: float | None = None
    eps: float = float(np.finfo(np.float32).eps)
    channel: str | int = "mean"
    scale: str = "mel"  # see SCALES

    def __post_init__(self):
        object.__setattr__(self, "channel", normalise_channel(self.channel))
        if self.scale not in SCALES:
            raise ValueError(f"features.scale={self.scale!r}: choose one of {', '.join(SCALES)}")
        if self.scale == "linear" and not len(self.linear_bins):
            raise ValueError(f"features.fmin={self.fmin} and fmax={self.fmax} leave no STFT bin of n_fft={self.n_fft} "
                             f"at {self.sample_rate} Hz: widen the range")

    @property
    def linear_bins(self) -> range:
        """The STFT bins (of n_fft // 2 + 1) that ``scale="linear"`` keeps: centre frequency in [fmin, fmax]."""
        step = self.sample_rate / self.n_fft
        top = self.sample_rate / 2 if self.fmax is None else self.fmax
        return range(int(math.ceil(self.fmin / step - 1e-9)), min(self.n_fft // 2, int(math.floor(top / step + 1e-9))) + 1)

    @property
    def num_bins(self) -> int:
        """Width of one frame of features: ``n_mels``, or (linear) the number of kept STFT bins."""
        return self.n_mels if self.scale == "mel" else len(self.linear_bins)

    @property
    def num_frames(self) -> int:
        """Frames per clip: librosa centres frames, so 1 + samples // hop (313 for 10 s at 16 kHz, hop 512)."""
        return 1 + int(round(self.duration_s * self.sample_rate)) // self.hop_length


def log_mel(wave: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """[samples] float32 -> [frames, n_mels] float32 log-mel (dB); with ``config.scale="linear"`` [frames,
    num_bins], the log of the STFT bins between fmin and fmax."""
    import librosa

    if config.scale == "linear":
        bins = config.linear_bins
        magnitude = np.abs(librosa.stft(y=wave, n_fft=config.n_fft, hop_length=config.hop_length))
        power = magnitude[bins.start:bins.stop] ** config.power
        return (10.0 * np.log10(power + config.eps)).T.astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=wave, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
        power=config.power, fmin=config.fmin, fmax=config.fmax)
    return (10.0 * np.log10(mel + config.eps)).T.astype(np.float32)


SPECTRUM_EPS = 1e-8
"""Added to the pooled magnitude before the log: -160 dB relative to full scale, so a silent clip gives finite
values (log(1e-8) = -18.4) far below any real recording's spectrum."""


def _check_pool(pool: int) -> int:
    """``pool`` as an int, or ValueError naming the setting it comes from."""
    if isinstance(pool, bool) or not isinstance(pool, (int, np.integer)) or pool < 1:
        raise ValueError(f"id_classifier.spectrum_pool must be an integer >= 1 (adjacent spectrum bins averaged), "
                         f"got {pool!r}")
    return int(pool)


def _pooled_bins(samples: int, pool: int) -> int:
    bins = (samples // 2 + 1) // _check_pool(pool)
    if bins < 1:
        raise ValueError(f"id_classifier.spectrum_pool={pool} is larger than the {samples // 2 + 1} spectrum bins of a "
                         f"{samples}-sample clip")
    return bins


def spectrum_bins(config: FeatureConfig, pool: int) -> int:
    """Length S of a clip's pooled spectrum: (samples // 2 + 1) // pool, samples = round(duration_s * sample_rate)
    (80000 for 10 s at 16 kHz and pool 1; bins are sample_rate / samples = 0.1 Hz apart, times ``pool``)."""
    return _pooled_bins(int(round(config.duration_s * config.sample_rate)), pool)


def log_spectrum(wave: np.ndarray, pool: int) -> np.ndarray:
    """[samples] float32 -> [S] float32: the natural log of the mean of ``pool`` adjacent magnitude bins plus
    :data:`SPECTRUM_EPS`, S = (samples // 2 + 1) // pool (the remainder bins at the top are dropped).

    The magnitude is ``|rfft(wave)| / samples`` (float64 FFT), i.e. relative to full scale and independent of the
    clip length: a full-scale sine (amplitude 1) on a bin reads 0.5 there, a DC offset of 1 reads 1 at bin 0.
    Pooled bin k covers frequencies [k * pool, (k + 1) * pool) * sample_rate / samples.
    """
    wave = np.asarray(wave)
    bins = _pooled_bins(len(wave), pool)
    magnitude = np.abs(np.fft.rfft(np.asarray(wave, np.float64))) / len(wave)
    pooled = magnitude[: bins * pool].reshape(bins, pool).mean(axis=1)
    return np.log(pooled + SPECTRUM_EPS).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# On-disk caches (asd_jax.fileio.CacheEntry): one float32 array [clips, *row shape] read back as a memory map, plus
# the JSON index. Log-mel entries live under <root>/features, spectra under <root>/spectra.

_CACHE_VERSION = 2  # log-mel; 2: short clips tiled, not zero-padded
_SPECTRUM_CACHE_VERSION = 2  # 2: short clips tiled
_DATA_FILE = "features.f32"


@dataclasses.dataclass(frozen=True)
class _FrontEnd:
    """What one kind of features is: the cache folder (``kind``), the cache version and settings (the key, and the
    index's ``"config"``), the shape of one clip's features, and ``transform``, wave -> features (picklable: it
    runs in spawned worker processes)."""

    kind: str
    version: int
    settings: dict
    row_shape: tuple[int, ...]
    transform: Callable[[np.ndarray], np.ndarray]


def _log_mel_front_end(config: FeatureConfig) -> _FrontEnd:
    settings = dataclasses.asdict(config)
    if settings["scale"] == "mel":
        del settings["scale"]  # keyed as before the field existed, so log-mel caches written then stay valid
    return _FrontEnd("features", _CACHE_VERSION, settings, (config.num_frames, config.num_bins),
                     functools.partial(log_mel, config=config))


def _spectrum_front_end(config: FeatureConfig, pool: int) -> _FrontEnd:
    bins = spectrum_bins(config, pool)
    settings = {"sample_rate": config.sample_rate, "duration_s": config.duration_s, "channel": config.channel,
                "pool": int(pool), "eps": SPECTRUM_EPS, "log": "natural", "magnitude": "abs(rfft)/samples"}
    return _FrontEnd("spectra", _SPECTRUM_CACHE_VERSION, settings, (bins,),
                     functools.partial(log_spectrum, pool=int(pool)))


@dataclasses.dataclass
class FeatureSet:
    """Features of the clips that loaded, in clip order, the clips that were skipped, and the loaded clips that are
    silent or near-silent (still in ``features``: they are reported, not dropped).

    ``features`` is [num_clips, frames, n_mels] from :func:`extract_features`, [num_clips, S] from
    :func:`extract_spectra`."""

    features: np.ndarray  # float32, usually a read-only memory map
    paths: list[str]
    skipped: list[dict]  # {"file": path, "error": message}
    cache_dir: str | None = None
    cache_hit: bool = False
    levels: list[float | None] = dataclasses.field(default_factory=list)  # dBFS RMS per path; None: constant
    quiet: list[dict] = dataclasses.field(default_factory=list)  # {"file", "dbfs" (None: constant), "problem"}


def _extract(path: str, config: FeatureConfig, transform: Callable[[np.ndarray], np.ndarray]
             ) -> tuple[np.ndarray | None, float | None, str | None]:
    """Worker: (``transform`` of the clip, level in dBFS or None when constant, None) or (None, None, error
    message). Never raises for a bad clip; a :class:`~asd_jax.data.audio.ChannelError` (``config.channel`` names a
    channel the file lacks) is a setting that does not fit the data and is raised."""
    try:
        wave, dbfs = load_clip(path, config.sample_rate, config.duration_s, config.channel)
        return transform(wave), (dbfs if np.isfinite(dbfs) else None), None
    except ChannelError:
        raise
    except AudioError as error:
        return None, None, str(error)
    except Exception as error:  # noqa: BLE001 - anything a broken file throws is reported, never fatal to the run
        return None, None, f"{path}: {type(error).__name__}: {error}"


def quiet_clips(paths: Sequence[str], levels: Sequence[float | None],
                threshold_dbfs: float = QUIET_DBFS) -> list[dict]:
    """The silent or near-silent clips among ``paths`` (levels in dBFS, None: constant), each logged as a warning
    naming the file and its level."""
    quiet = []
    for path, dbfs in zip(paths, levels):
        problem = quiet_problem(dbfs, threshold_dbfs)
        if problem is not None:
            log.warning("%s: %s: check the microphone (the clip is still used)", path, problem)
            quiet.append({"file": path, "dbfs": None if dbfs is None else round(float(dbfs), 2), "problem": problem})
    return quiet


def _load_cached(entry: fileio.CacheEntry, verify: str) -> FeatureSet | None:
    """The cached set (its quiet clips listed), or None when it is missing, from another key, truncated or
    corrupt."""
    index = entry.read_index()
    if index is None:
        return None
    try:
        shape = tuple(index["shape"])
        data_path = entry.file(_DATA_FILE)
        if os.path.getsize(data_path) != int(np.prod(shape)) * 4:
            return None
        features = np.memmap(data_path, dtype=np.float32, mode="r", shape=shape) if shape[0] else \
            np.zeros(shape, np.float32)
        if verify == "full":
            if index.get("full_crc") is not None and zlib.crc32(features.tobytes()) != index["full_crc"]:
                return None
        elif not entry.intact(index, features):
            return None
        levels = index.get("levels")
        if not isinstance(levels, list) or len(levels) != len(index["paths"]):
            log.info("cache %s has no clip levels (written by an older version): rebuilding it", entry.directory)
            return None
        cached = FeatureSet(features, index["paths"], index["skipped"], entry.directory, cache_hit=True,
                            levels=levels)
        cached.quiet = quiet_clips(cached.paths, cached.levels)
        return cached
    except (OSError, ValueError, KeyError, TypeError):
        return None


def extract_features(
    paths: Sequence[str],
    config: FeatureConfig = FeatureConfig(),
    cache_root: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    verify: str = "sample",
    description: str = "log-mel",
) -> FeatureSet:
    """Log-mel features of ``paths``, from the cache when it is valid, else built in parallel and cached.

    A clip that cannot be read is skipped and listed in ``FeatureSet.skipped``. A silent or near-silent clip (RMS
    below :data:`asd_jax.data.audio.QUIET_DBFS`) is kept, logged as a warning and listed in ``FeatureSet.quiet``,
    from the cache as well as on a fresh build. ``cache_root=""`` disables the cache (features are kept in memory);
    None puts it under :func:`asd_jax.fileio.cache_root`.
    ``verify="full"`` checks a CRC of the whole array on load, ``"sample"`` (default) a CRC of up to 64 rows spread
    over it plus the file size, which catches truncation at no cost. One process builds a cache folder at a time
    (a file lock beside it): a concurrent caller of the same clips (another run, or another process of a
    ``--distributed`` run) waits and then reads what it built.
    """
    return _extract_cached(paths, config, _log_mel_front_end(config), cache_root, num_workers, progress, verify,
                           description)


def extract_spectra(
    paths: Sequence[str],
    config: FeatureConfig = FeatureConfig(),
    pool: int = 1,
    cache_root: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    verify: str = "sample",
    description: str = "spectrum",
) -> FeatureSet:
    """Like :func:`extract_features`, but each clip's features are its whole-clip log magnitude spectrum
    (:func:`log_spectrum` with ``pool``): ``FeatureSet.features`` is [N, S], S = :func:`spectrum_bins`.

    Clips are decoded exactly as for log-mel (``config.sample_rate``, ``duration_s``, ``channel``; the mel fields of
    ``config`` are unused and not part of the cache key), so the same clips are skipped, with the same errors, and
    the same quiet clips reported. Cached under ``<cache root>/spectra``, keyed on the clips, the decoding settings
    and ``pool``. ``pool`` < 1: ValueError naming ``id_classifier.spectrum_pool``.
    """
    return _extract_cached(paths, config, _spectrum_front_end(config, pool), cache_root, num_workers, progress,
                           verify, description)


def _extract_cached(paths: Sequence[str], config: FeatureConfig, front_end: _FrontEnd, cache_root: str | None,
                    num_workers: int | None, progress: bool, verify: str, description: str) -> FeatureSet:
    """``front_end``'s features of ``paths``: from its cache entry when valid, else built (under the entry's lock)."""
    paths = [str(p) for p in paths]
    build = functools.partial(_build, paths, config, front_end, num_workers=num_workers, progress=progress,
                              verify=verify, description=description)
    if cache_root == "":
        return build(None)
    key = fileio.cache_key(paths, {"version": front_end.version, "config": front_end.settings})
    entry = fileio.CacheEntry.under(fileio.cache_root(cache_root), front_end.kind, key)
    return entry.load_or_build(lambda: _load_cached(entry, verify), lambda: build(entry))


def _build(paths: list[str], config: FeatureConfig, front_end: _FrontEnd, entry: fileio.CacheEntry | None,
           num_workers: int | None, progress: bool, verify: str, description: str) -> FeatureSet:
    """Extract ``paths`` into the cache ``entry`` (None: in memory)."""
    shape = (len(paths), *front_end.row_shape)
    if entry is not None:
        entry.clear(_DATA_FILE)  # the index goes first: a half-written cache is never valid
        data_path = entry.file(_DATA_FILE)
        output = np.memmap(data_path, dtype=np.float32, mode="w+", shape=shape) if paths else None
    else:
        output = np.empty(shape, np.float32)

    kept, skipped, levels = [], [], []
    results = _map_extract(paths, config, front_end.transform, num_workers, progress, description)
    for path, (features, dbfs, error) in zip(paths, results):
        if error is not None:
            log.warning("skipping clip: %s", error)
            skipped.append({"file": path, "error": error})
            continue
        output[len(kept)] = features
        kept.append(path)
        levels.append(dbfs)
    quiet = quiet_clips(kept, levels)

    if entry is None:
        return FeatureSet(output[: len(kept)], kept, skipped, levels=levels, quiet=quiet)
    final_shape = (len(kept), *shape[1:])
    if output is not None:
        output.flush()
        del output
    with open(data_path, "ab"):
        os.truncate(data_path, int(np.prod(final_shape)) * 4)
    features = np.memmap(data_path, dtype=np.float32, mode="r", shape=final_shape) if kept else \
        np.zeros(final_shape, np.float32)
    entry.write_index({"shape": list(final_shape), "config": front_end.settings, "paths": kept,
                       "skipped": skipped, "levels": levels, "checksum": fileio.sampled_checksum(features),
                       "full_crc": zlib.crc32(features.tobytes()) if verify == "full" else None})
    return FeatureSet(features, kept, skipped, entry.directory, cache_hit=False, levels=levels, quiet=quiet)


def _map_extract(paths, config, transform, num_workers, progress, description):
    """(features, level, error) per path in order, over a pool of processes (spawned: the parent may hold JAX
    threads)."""
    workers = min(num_workers or os.cpu_count() or 1, max(len(paths), 1))
    audio.forget_reported_lengths()  # one warning per clip length in each extraction (a pool's workers start anew)
    bar = progress_output.bar(total=len(paths), desc=description, unit="clip", enabled=progress)
    try:
        if workers <= 1 or len(paths) < 8:
            for path in paths:
                result = _extract(path, config, transform)
                bar.update()  # before the yield: the consumer may stop right after the last result
                yield result
            return
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for result in pool.map(_extract, paths, itertools.repeat(config), itertools.repeat(transform),
                                   chunksize=8):
                bar.update()
                yield result
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------------------------------
# Normalisation: per-mel-bin statistics of the training clips only, stored with the run.


@dataclasses.dataclass(frozen=True)
class Normalizer:
    mean: np.ndarray  # [n_mels]
    std: np.ndarray  # [n_mels]

    @classmethod
    def fit(cls, features: np.ndarray, chunk: int = 256) -> "Normalizer":
        """Per-bin mean and std over all frames of ``features`` [clips, frames, mels], streamed in chunks."""
        if len(features) == 0:
            raise ValueError("cannot fit normalisation statistics on zero training clips")
        total = np.zeros(features.shape[-1], np.float64)
        total_sq = np.zeros_like(total)
        for start in range(0, len(features), chunk):
            block = np.asarray(features[start:start + chunk], np.float64)
            total += block.sum(axis=(0, 1))
            total_sq += np.square(block).sum(axis=(0, 1))
        count = features.shape[0] * features.shape[1]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        return cls(mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)

    def save(self, path: str) -> None:
        """Write the statistics to ``path`` (in a multi-process run only process 0 writes: every process fits the
        same statistics from the same clips)."""
        from asd_jax import distributed

        if distributed.is_primary():
            np.savez(path, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str) -> "Normalizer":
        with np.load(path) as stats:
            return cls(stats["mean"], stats["std"])
