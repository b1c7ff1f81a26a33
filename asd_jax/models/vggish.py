"""VGGish (Hershey et al., 2017) in JAX/Flax: the TF-Hub model's log-mel frontend and its VGG body.

A reimplementation of ``research/audioset/vggish`` in tensorflow/models (``vggish_params``, ``mel_features``,
``vggish_slim``) and of the frontend the TF-Hub export (``google/vggish/1``) runs in its graph:

* frontend: 16 kHz waveform -> frames of 400 samples (25 ms) every 160 (10 ms), periodic Hann window, magnitude of a
  512-point real FFT, 64 mel bands over 125-7500 Hz (HTK mel scale, DC bin zeroed), ``log(mel + 0.01)``, then
  non-overlapping patches of 96 frames x 64 bands (0.96 s). No padding anywhere, as in the TF-Hub model: only full
  frames and full patches are kept, so a waveform shorter than :data:`MIN_SAMPLES` (0.975 s) yields no patch.
* body: conv64-pool, conv128-pool, conv256 x2-pool, conv512 x2-pool, fc4096 x2, fc128 (3x3 SAME convolutions,
  stride 1; 2x2 max-pools, stride 2; ReLU after every layer but the last). The output is the raw 128-d ``fc2``
  embedding, before the PCA/quantisation postprocessing of the AudioSet release.

Pure computation: no I/O; weights come from :mod:`asd_jax.embeddings.convert`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

SAMPLE_RATE = 16_000
STFT_WINDOW = 400  # 25 ms
STFT_HOP = 160  # 10 ms
FFT_LENGTH = 512  # next power of two above the window
NUM_BANDS = 64
MEL_MIN_HZ, MEL_MAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s of frames per patch; patches do not overlap
EMBEDDING_SIZE = 128
MIN_SAMPLES = STFT_WINDOW + (PATCH_FRAMES - 1) * STFT_HOP  # 15600: the shortest waveform that yields one patch

# (Flax layer name, output width) in order; each conv is followed by ReLU, a pool follows the last conv of a block.
CONV_BLOCKS = ((("conv1", 64),), (("conv2", 128),), (("conv3_1", 256), ("conv3_2", 256)),
               (("conv4_1", 512), ("conv4_2", 512)))
DENSE_LAYERS = (("fc1_1", 4096), ("fc1_2", 4096), ("fc2", EMBEDDING_SIZE))


def num_frames(num_samples: int) -> int:
    """STFT frames of a waveform: only full 400-sample windows, as ``tf.signal.stft(pad_end=False)``."""
    return 0 if num_samples < STFT_WINDOW else 1 + (num_samples - STFT_WINDOW) // STFT_HOP


def num_patches(num_samples: int) -> int:
    """Full 96-frame patches of a waveform: 10 for 10 s, 0 below :data:`MIN_SAMPLES`."""
    return num_frames(num_samples) // PATCH_FRAMES


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, ``1127 ln(1 + f / 700)``, as ``mel_features.hertz_to_mel`` and ``tf.signal``."""
    return 1127.0 * np.log1p(np.asarray(hertz, np.float64) / 700.0)


def mel_matrix(
    num_bands: int = NUM_BANDS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """[num_spectrogram_bins, num_bands] float32 weights mapping a linear spectrogram onto mel bands.

    Triangles with edges equally spaced on the mel scale, evaluated at each FFT bin's mel frequency (the method of
    ``mel_features.spectrogram_to_mel_matrix`` and ``tf.signal.linear_to_mel_weight_matrix``); the DC bin gets no
    weight. Computed in float64, rounded once.
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"need 0 <= lower_hz < upper_hz <= {nyquist} Hz; got {lower_hz} and {upper_hz}")
    bin_mels = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))[:, None]
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_bands + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels - lower) / (center - lower)
    falling = (upper - bin_mels) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights.astype(np.float32)


def periodic_hann(length: int = STFT_WINDOW) -> np.ndarray:
    """Periodic Hann window (the default of ``tf.signal.stft``): ``0.5 - 0.5 cos(2 pi n / length)``."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


def log_mel_spectrogram(waveform: jax.Array, frames: int | None = None) -> jax.Array:
    """[..., samples] -> [..., frames, 64] ``log(mel magnitude + 0.01)``; ``frames`` keeps only the first ones."""
    waveform = jnp.asarray(waveform, jnp.float32)
    count = num_frames(waveform.shape[-1]) if frames is None else frames
    index = np.arange(count)[:, None] * STFT_HOP + np.arange(STFT_WINDOW)[None, :]
    windowed = waveform[..., index] * periodic_hann()
    magnitude = jnp.abs(jnp.fft.rfft(windowed, n=FFT_LENGTH, axis=-1))
    mel = jnp.matmul(magnitude, mel_matrix(), precision=jax.lax.Precision.HIGHEST)
    return jnp.log(mel + LOG_OFFSET)


def log_mel_patches(waveform: jax.Array) -> jax.Array:
    """[samples] or [batch, samples] waveform at 16 kHz -> [(batch,) patches, 96, 64] VGGish input examples.

    Only the frames of full patches are computed; the tail that does not fill a patch is dropped, as the TF-Hub
    model does (zero patches below :data:`MIN_SAMPLES`).
    """
    patches = num_patches(waveform.shape[-1])
    features = log_mel_spectrogram(waveform, frames=patches * PATCH_FRAMES)
    return features.reshape(*features.shape[:-2], patches, PATCH_FRAMES, NUM_BANDS)


class VGGish(nn.Module):
    """[..., 96, 64] log-mel patches -> [..., 128] raw ``fc2`` embeddings (no ReLU on the last layer).

    Layer names follow the original checkpoint (``conv3_1`` is ``vggish/conv3/conv3_1``); kernels are laid out as
    TensorFlow's (HWIO for convolutions, [in, out] for dense layers), so weights copy over unchanged.
    ``precision`` is passed to every convolution and dense layer (``"highest"`` avoids TF32 on GPUs).
    """

    precision: str | jax.lax.Precision | None = None

    @nn.compact
    def __call__(self, patches: jax.Array) -> jax.Array:
        leading = patches.shape[:-2]
        x = patches.reshape(-1, PATCH_FRAMES, NUM_BANDS, 1)
        for block in CONV_BLOCKS:
            for name, width in block:
                x = nn.relu(nn.Conv(width, (3, 3), padding="SAME", precision=self.precision, name=name)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape(x.shape[0], -1)  # NHWC flattened row-major, as slim.flatten
        for name, width in DENSE_LAYERS:
            x = nn.Dense(width, precision=self.precision, name=name)(x)
            if name != DENSE_LAYERS[-1][0]:
                x = nn.relu(x)
        return x.reshape(*leading, EMBEDDING_SIZE)


def init_params(rng: jax.Array, precision: str | None = None) -> dict:
    """Randomly initialised VGGish params (Flax defaults), for shapes and tests; real weights come from convert."""
    return VGGish(precision).init(rng, jnp.zeros((1, PATCH_FRAMES, NUM_BANDS), jnp.float32))["params"]


@functools.partial(jax.jit, static_argnames=("precision",))
def embed(params: dict, waveforms: jax.Array, precision: str | None = "highest") -> jax.Array:
    """[batch, samples] 16 kHz waveforms -> [batch, patches, 128] embeddings, one per full 0.96 s patch.

    Compiled once per (batch, samples) shape; batch equal-length clips together.
    """
    patches = log_mel_patches(waveforms)
    if patches.shape[-3] == 0:
        return jnp.zeros((*patches.shape[:-2], EMBEDDING_SIZE), jnp.float32)
    return VGGish(precision).apply({"params": params}, patches)
