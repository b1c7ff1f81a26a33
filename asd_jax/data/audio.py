"""Decode any WAV into mono float32 at the target rate and duration.

Handles 8/16/24/32-bit integer and float PCM, WAVE_FORMAT_EXTENSIBLE and multichannel files. A multichannel file
(raw 8-channel MIMII, DCASE 2026's two channels: 0 the microphone near the machine, 1 the far one) becomes mono by
averaging its channels (``channel="mean"``, the default) or by taking one channel (``channel=0``: what DCASE 2020 did
with MIMII and the 2026 baseline does, see :func:`select_channel`). Problems raise
:class:`AudioError`, whose message names the file, what is wrong and what to do about it. :func:`level_dbfs` and
:func:`quiet_problem` flag clips that decode but are silent or near-silent (a dead or unplugged microphone): those
are usable, so they are reported, not rejected.
"""

from __future__ import annotations

import logging
import os
import struct

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE = 16_000
DURATION_S = 10.0
QUIET_DBFS = -70.0
"""RMS level (dBFS) below which a clip is reported as near-silent.

Measured levels of real recordings (mono, or the channel average of 8-channel MIMII, after DC removal): the 219
clips in shared/realdata lie between -50.0 dBFS (raw 8-channel MIMII slider, whose downmix partly cancels) and
-18.2 dBFS; DCASE 2020 dev clips are at -40 to -18, DCASE 2023 at -46 to -30, raw MIMII fan at -45 to -43. The
synthetic data is mixed at -30 dBFS with a few dB of jitter (-31 to -23). -70 dBFS leaves a 20 dB margin below the
quietest real clip, so quiet but working machines are not flagged, while staying ~30 dB above the 16-bit
quantisation floor (about -101 dBFS), where a dead input with only converter or preamp noise ends up.
"""

log = logging.getLogger(__name__)


class AudioError(ValueError):
    """A clip that cannot be used. ``path`` names the file; the message says what is wrong and the fix."""

    def __init__(self, path: str, problem: str, fix: str = "replace or remove the file"):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: {problem}; {fix}")

    def __reduce__(self):
        """Pickle by the constructor's arguments, so the error crosses a process pool intact."""
        return self.__class__, (self.path, self.problem, self.fix)


def _check_riff(path: str) -> None:
    """Catch WAV files whose data chunk is shorter than its header promises (libsndfile reads them silently)."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
            return  # not RIFF/WAVE: leave the verdict to libsndfile
        if header[:4] == b"RF64":
            return
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size > available:
                    raise AudioError(path, f"truncated WAV: the header promises {chunk_size} bytes of audio but only "
                                     f"{available} are present", "re-copy or re-download the file")
                return
            offset += 8 + chunk_size + (chunk_size & 1)
        raise AudioError(path, "WAV file has no data chunk", "re-copy or re-download the file")


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """(samples [frames, channels] float32 in [-1, 1], sample rate), or AudioError."""
    if not os.path.isfile(path):
        raise AudioError(path, "file not found", "check the path")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    _check_riff(path)
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(path, f"not a readable audio file ({error})") from None
    if samples.shape[0] == 0:
        raise AudioError(path, "audio has no samples")
    if not np.isfinite(samples).all():
        raise AudioError(path, "audio holds NaN or inf samples")
    return samples, rate


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames], averaging channels (MIMII's 8-channel array becomes one virtual microphone)."""
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]


class ChannelError(AudioError):
    """The requested channel does not exist in a file: a setting that does not fit the data, not a bad clip."""


def normalise_channel(channel: str | int) -> str | int:
    """``"mean"`` or a channel index >= 0 (``"0"`` and ``0`` both name channel 0); ValueError for anything else."""
    text = str(channel).strip().lower()
    if text == "mean":
        return "mean"
    if not text.isdigit():
        raise ValueError(f"channel must be 'mean' or a channel index >= 0, got {channel!r}")
    return int(text)


def select_channel(samples: np.ndarray, channel: str | int = "mean", path: str = "<array>") -> np.ndarray:
    """[frames, channels] -> [frames]: the channel average (``"mean"``, :func:`to_mono`) or channel ``channel``.

    Raises :class:`ChannelError` naming the file and its channel count when the index is out of range.
    """
    channel = normalise_channel(channel)
    if channel == "mean":
        return to_mono(samples)
    if channel >= samples.shape[1]:
        raise ChannelError(path, f"channel {channel} requested but the file has {samples.shape[1]} channel(s)",
                           f"pass channel='mean' or an index from 0 to {samples.shape[1] - 1}")
    return np.ascontiguousarray(samples[:, channel])


def resample(wave: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (exact rational ratio), float32 out."""
    if rate == target_rate:
        return wave
    divisor = np.gcd(rate, target_rate)
    return signal.resample_poly(wave, target_rate // divisor, rate // divisor).astype(np.float32)


_reported_lengths: set[tuple[int, int]] = set()
"""(clip length, target length) pairs already reported since :func:`forget_reported_lengths`: a DCASE set whose
clips have two lengths (2023's 10 s and 12 s) gets one warning per length and extraction, not one per clip."""


def forget_reported_lengths() -> None:
    """Report each clip length again (called as an extraction begins)."""
    _reported_lengths.clear()


def fit_length(wave: np.ndarray, num_samples: int, path: str = "<array>") -> np.ndarray:
    """Crop to ``num_samples``, or tile a shorter clip (repeat it from its start) up to it, as the reference
    recipes pad (ASDKit's ``pad_mode="tile"``): a machine's sound repeated is far closer to the clip than silence,
    whose log-mel frames (-160 dB) no recording holds. The first clip of each length is reported with a warning."""
    if len(wave) == num_samples:
        return wave
    if (len(wave), num_samples) not in _reported_lengths:
        _reported_lengths.add((len(wave), num_samples))
        log.warning("%s: %d samples instead of %d; %s (so is every other clip of this length; "
                    "features.duration_s sets the length, 0 takes the longest training clip's)", path, len(wave),
                    num_samples, "tiled" if len(wave) < num_samples else "cropped")
    if len(wave) > num_samples:
        return wave[:num_samples]
    return np.resize(wave, num_samples)  # repeats the clip from its start


def clip_seconds(path: str) -> float:
    """A clip's duration from its header (no decoding), or AudioError naming the file."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(path, f"not a readable audio file ({error})") from None
    return info.frames / info.samplerate if info.samplerate else 0.0


def level_dbfs(wave: np.ndarray) -> float:
    """RMS level of ``wave`` about its mean, in dB relative to full scale (RMS 1.0 is 0 dBFS; a full-scale sine is
    -3 dBFS); ``-inf`` for a constant (silent) signal. The mean is removed first so a microphone stuck at a DC
    offset reads as silent rather than loud."""
    if len(wave) == 0:
        return float("-inf")
    samples = np.asarray(wave, np.float64)
    rms = float(np.sqrt(np.mean(np.square(samples - samples.mean()))))
    return 20.0 * float(np.log10(rms)) if rms > 0.0 else float("-inf")


def quiet_problem(dbfs: float | None, threshold_dbfs: float = QUIET_DBFS) -> str | None:
    """What is wrong with a clip at level ``dbfs`` (None or -inf: constant), or None when its level is normal."""
    if dbfs is None or not np.isfinite(dbfs):
        return "silent (constant signal)"
    if dbfs < threshold_dbfs:
        return f"near-silent ({dbfs:.1f} dBFS RMS)"
    return None


def load_clip(path: str, sample_rate: int = SAMPLE_RATE, duration_s: float | None = DURATION_S,
              channel: str | int = "mean") -> tuple[np.ndarray, float]:
    """(:func:`load_audio` of the clip, its :func:`level_dbfs`). The level is measured before tiling or cropping,
    so the repeats added to a short clip do not change it."""
    samples, rate = read_wav(path)
    wave = resample(select_channel(samples, channel, path), rate, sample_rate)
    dbfs = level_dbfs(wave)
    if duration_s is not None:
        wave = fit_length(wave, int(round(duration_s * sample_rate)), path)
    return np.ascontiguousarray(wave, dtype=np.float32), dbfs


def load_audio(path: str, sample_rate: int = SAMPLE_RATE, duration_s: float | None = DURATION_S,
               channel: str | int = "mean") -> np.ndarray:
    """A clip as mono float32 at ``sample_rate``, tiled or cropped to ``duration_s`` (None keeps its length);
    ``channel`` as in :func:`select_channel`."""
    return load_clip(path, sample_rate, duration_s, channel)[0]
