"""Training and scoring windows as index views over a [clips, frames, mels] array, never materialised copies.

A window is named by (clip, start frame); its frames are ``features[clip, start:start + length]``. Next-frame windows
(the LSTM predictor) have length ``context + 1``: ``context`` frames in, the next one out. Sequence windows (the
autoencoders) have length L. The compiled trainer gathers windows on the device from the same (clip, start) pairs.
"""

from __future__ import annotations

import numpy as np


def num_windows(num_frames: int, length: int, hop: int = 1) -> int:
    """Windows of ``length`` frames at stride ``hop`` that fit in ``num_frames`` frames."""
    if length > num_frames:
        raise ValueError(f"a window of {length} frames does not fit in a clip of {num_frames} frames")
    return 1 + (num_frames - length) // hop


def window_starts(num_frames: int, length: int, hop: int = 1) -> np.ndarray:
    """Start frames of the windows of one clip: [num_windows] int32."""
    return np.arange(num_windows(num_frames, length, hop), dtype=np.int32) * hop


def window_index(num_clips: int, num_frames: int, length: int, hop: int = 1) -> np.ndarray:
    """(clip, start) for every window of every clip: [num_clips * windows_per_clip, 2] int32."""
    starts = window_starts(num_frames, length, hop)
    clips = np.repeat(np.arange(num_clips, dtype=np.int32), len(starts))
    return np.stack([clips, np.tile(starts, num_clips)], axis=1)


def sliding_windows(clip_features: np.ndarray, length: int, hop: int = 1) -> np.ndarray:
    """A read-only strided view [num_windows, length, mels] over one clip's [frames, mels] features (no copy)."""
    view = np.lib.stride_tricks.sliding_window_view(clip_features, length, axis=0)[::hop]
    return view.transpose(0, 2, 1)


def next_frame_windows(clip_features: np.ndarray, context: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Views (inputs [W, context, mels], targets [W, mels]): frames t-context..t-1 predict frame t."""
    windows = sliding_windows(clip_features, context + 1)
    return windows[:, :context], windows[:, context]


def gather(features: np.ndarray, index: np.ndarray, length: int) -> np.ndarray:
    """Materialise the windows named by ``index`` [B, 2] as [B, length, mels]: only ever one batch at a time."""
    offsets = np.arange(length)
    return features[index[:, :1], index[:, 1:2] + offsets]
