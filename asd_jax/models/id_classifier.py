"""A machine-id classifier with an angular-margin head: the discriminative family that leads DCASE Task 2.

A small residual CNN maps a log-mel patch [frames, mels] to an embedding; the head compares the L2-normalised
embedding with one learnt centre per class (or ``subclusters`` centres per class) by cosine similarity. Training
tells the classes of *normal* training clips apart (machine ids, or sections x attributes); a test clip is anomalous
when it fits its own class badly: the negative log-probability of its class, or the cosine distance of its
embedding to the training embeddings of its unit (the kNN backend, :mod:`asd_jax.methods.knn`).

Losses (``loss``):

* ``arcface`` (Deng et al. 2019): logits ``s * cos(theta_j)``, the target's ``s * cos(theta_y + m)``;
* ``adacos`` (Zhang et al. 2019): no margin, the scale ``s`` set from the batch: ``s = log(B_avg) /
  cos(min(pi/4, theta_med))``, ``B_avg`` the batch mean of ``sum_{j != y} exp(s_old * cos(theta_j))`` and
  ``theta_med`` the median target angle. It lives in the ``batch_stats`` collection (updated in training, frozen
  when scoring), starting from the fixed AdaCos scale ``sqrt(2) * log(C - 1)``. With ``subclusters > 1`` it is
  sub-cluster AdaCos (Wilkinghoff 2021): a class's probability is the sum over its sub-clusters' softmax
  probabilities;
* ``adaproj`` (Wilkinghoff 2024): each class is the subspace spanned by its ``subclusters`` centres; a window's
  similarity to a class is the cosine between its embedding and the embedding's projection onto that subspace (the
  norm of the projection of the normalised embedding), scaled as in AdaCos.

Frontends (``frontend``): ``spectrogram``, a 2-D residual CNN over log-mel windows of ``frames`` frames (the whole
clip when ``frames`` is its frame count, which ``frames=0`` asks for); ``spectrum``, 1-D convolutions over the log
magnitude spectrum of the whole clip (one FFT over all its samples: 0.1 Hz bins for 10 s, pooled by
``spectrum_pool``), which keeps the fine frequency resolution tonal faults live in; ``dual``, both, their embeddings
concatenated (Wilkinghoff's dual-branch systems, DCASE 2021-2024). Bodies (``body``): ``compact`` (a 3x3 stem and one
residual block per stage; 1-D residual blocks over the spectrum) or ``asdkit``, the networks of ASDKit's
``dis_spec`` / ``dis_multispec`` recipes (a 7x7 stem, a max pool and two pre-activation blocks per stage; three
wide strided 1-D convolutions over the spectrum).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

LOSSES = ("arcface", "adacos", "adaproj")
FRONTENDS = ("dual", "spectrogram", "spectrum")
CLIP_SAMPLES = 160_000  # the clip the FLOPs count assumes for the spectrum branch: 10 s at 16 kHz
CLASS_MODES = ("auto", "unit", "unit_attributes")
CENTRES = ("trainable", "fixed")
POOLINGS = ("frequency", "mean")  # how a branch's last feature map becomes one vector (see ConvEmbedder)
# the branches' layers: "compact" (ConvEmbedder, SpectrumEmbedder: one block per stage, a 3x3 stem) or "asdkit"
# (ASDKitConvEmbedder, ASDKitSpectrumEmbedder: the networks of ASDKit's dis_spec / dis_multispec recipes)
BODIES = ("compact", "asdkit")
# the asdkit spectrum branch's convolutions after the first (whose kernel and stride are spectrum_kernel and
# spectrum_stride): (kernel, stride), as ASDKit's Conv1dEncoderLayer
ASDKIT_SPECTRUM_CONVS = ((64, 32), (16, 4))
ASDKIT_STEM_KERNEL, ASDKIT_POOL = 7, 3  # the asdkit spectrogram branch's 7x7 stride-2 stem and 3x3 stride-2 max pool
SE_RATIO = 16  # squeeze-excitation's channel reduction (ASDKit's SEBlock)
SPECTRUM_HIDDEN_LAYERS = 4  # dense layers after the spectrum branch's first one, as in ASDKit's Conv1dEncoderLayer
TYPE_MODES = ("joint", "separate")  # machine_type=all: one model over every type, or one per type
CONVS = ("auto", "patches", "xla")  # auto: patches on a CPU, XLA's convolution elsewhere (see Conv)
BENCHMARK_CLASSES = 4  # classes of the model the benchmark times (the default synthetic set's machine ids)


def _widths(text) -> tuple[int, ...]:
    """'16,32,64' (or a sequence) -> (16, 32, 64)."""
    items = text.split(",") if isinstance(text, str) else text
    return tuple(int(str(item).strip()) for item in items if str(item).strip())


def l2_normalise(x: jax.Array, axis: int = -1) -> jax.Array:
    return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + 1e-12)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME" padding of one axis: the output has ceil(size / stride) entries."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _shifted_slices(x: jax.Array, kh: int, kw: int, stride: int, padding: str,
                    fill: float = 0.0) -> tuple[list[jax.Array], int, int]:
    """The ``kh * kw`` strided slices of x [B, H, W, C] that a kh x kw window of ``stride`` reads ("SAME": padded
    with ``fill`` to ceil(H/s) x ceil(W/s) outputs; "VALID": no padding, (H - kh) // s + 1 x ...), and the output's
    height and width."""
    _, height, width, _ = x.shape
    if padding == "SAME":
        (top, bottom), (left, right) = _same_padding(height, kh, stride), _same_padding(width, kw, stride)
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
        out_h, out_w = -(-height // stride), -(-width // stride)
    elif padding == "VALID":
        out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"a {kh}x{kw} window does not fit a {height}x{width} map (VALID padding): give the "
                             "id classifier longer windows (id_classifier.frames) or more bins (features.n_mels)")
    else:
        raise ValueError(f"padding={padding!r}: choose SAME or VALID")
    return ([x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride, :]
             for i in range(kh) for j in range(kw)], out_h, out_w)


def patch_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: str = "SAME") -> jax.Array:
    """A convolution as shifted strided slices concatenated along channels, then one matmul (im2col).

    x [B, H, W, C_in], kernel [kh, kw, C_in, C_out] -> [B, ceil(H/s), ceil(W/s), C_out] ("SAME") or
    [B, (H - kh) // s + 1, (W - kw) // s + 1, C_out] ("VALID"); equal to ``lax.conv_general_dilated`` with that
    padding. On a CPU, XLA's convolution inside a loop (the trainer's ``lax.scan`` / ``lax.map``) ran some 30x slower
    than outside one, while matmuls keep their speed in loops (:func:`uses_patches`); the gradient of a slice is a
    pad, so the backward pass is matmuls too."""
    kh, kw, c_in, c_out = kernel.shape
    columns, _, _ = _shifted_slices(x, kh, kw, stride, padding)
    patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
    return patches @ kernel.reshape(kh * kw * c_in, c_out)


def max_pool(x: jax.Array, window: int, stride: int, padding: str = "SAME") -> jax.Array:
    """Max pooling of x [B, H, W, C] over ``window`` x ``window`` as the maximum of shifted strided slices ("SAME"
    pads with -inf, as ``flax.linen.max_pool``, whose result it equals). Its gradient is slices and selects, the
    operations that keep their speed inside the trainer's loops on a CPU (see :func:`patch_conv`)."""
    columns, _, _ = _shifted_slices(x, window, window, stride, padding, fill=-jnp.inf)
    out = columns[0]
    for column in columns[1:]:
        out = jnp.maximum(out, column)
    return out


class Conv(nn.Module):
    """A bias-free "SAME" convolution with ``nn.Conv``'s parameters (``kernel`` [kh, kw, C_in, C_out], the same
    initialiser and, being named Conv, the same auto names): ``patches=True`` computes it by
    :func:`patch_conv` (the fast way on a CPU), else by ``lax.conv_general_dilated`` (cuDNN on a GPU)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: int = 1
    patches: bool = False
    padding: str = "SAME"  # or "VALID"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        if self.patches:
            return patch_conv(x, kernel, self.strides, self.padding)
        return jax.lax.conv_general_dilated(x, kernel, (self.strides, self.strides), self.padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018), as in ASDKit's residual blocks: each channel of [B, H, W, C] is
    scaled by a gate in (0, 1) computed from the channels' means: bias-free dense C -> C // ratio (at least 1),
    ReLU, dense -> C, sigmoid."""

    ratio: int = SE_RATIO

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        gate = nn.relu(nn.Dense(max(1, channels // self.ratio), use_bias=False)(jnp.mean(x, axis=(1, 2))))
        gate = nn.sigmoid(nn.Dense(channels, use_bias=False)(gate))
        return x * gate[:, None, None, :]


class ResidualBlock(nn.Module):
    """conv(stride) -> BN -> ReLU -> conv -> BN (-> squeeze-excitation with ``squeeze_excite``), plus a 1x1
    projected shortcut when the shape changes; 3x3 kernels (``kernel=(3, 1)``: the 1-D block of the spectrum
    branch, whose inputs are [B, positions, 1, C])."""

    channels: int
    stride: int = 1
    patches: bool = False
    kernel: tuple[int, int] = (3, 3)
    squeeze_excite: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
        y = Conv(self.channels, self.kernel, self.stride, self.patches)(x)
        y = nn.relu(norm()(y))
        y = norm()(Conv(self.channels, self.kernel, 1, self.patches)(y))
        if self.squeeze_excite:
            y = SqueezeExcite()(y)
        if x.shape[-1] != self.channels or self.stride != 1:
            x = norm()(Conv(self.channels, (1, 1), self.stride, self.patches)(x))
        return nn.relu(x + y)


class ConvEmbedder(nn.Module):
    """[B, frames, mels] log-mel patches -> [B, embedding_dim] embeddings (not normalised).

    A 3x3 stem of stride ``stem_stride`` (2 by default: it quarters the cost of everything after it), one
    stride-2 residual block per entry of ``channels`` after the first, then (``pooling="frequency"``, the reference
    systems' way) the maximum over time, the mel positions x channels flattened, affine-free batch normalisation and
    a bias-free linear embedding, or (``"mean"``) the mean over time and frequency and a bias-free linear layer.
    """

    channels: Sequence[int] = (16, 32, 64, 128)
    embedding_dim: int = 128
    stem_stride: int = 2
    patches: bool = False
    pooling: str = "frequency"  # see POOLINGS
    squeeze_excite: bool = False  # squeeze-excitation in every residual block (SqueezeExcite)

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool) -> jax.Array:
        x = frames[..., None]
        x = Conv(self.channels[0], (3, 3), self.stem_stride, self.patches)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        for width in self.channels[1:]:
            x = ResidualBlock(width, stride=2, patches=self.patches, squeeze_excite=self.squeeze_excite)(x, train)
        if self.pooling == "mean":
            return nn.Dense(self.embedding_dim, use_bias=False)(jnp.mean(x, axis=(1, 2)))
        x = jnp.max(x, axis=1).reshape(x.shape[0], -1)  # [B, mel positions * C]: where in frequency is kept
        x = _plain_norm(train)(x)
        return nn.Dense(self.embedding_dim, use_bias=False)(x)


def _plain_norm(train: bool) -> nn.BatchNorm:
    """Batch normalisation without scale or offset (the reference systems' affine-free normalisation)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_scale=False, use_bias=False)


def strided_conv1d(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """A "VALID" 1-D convolution whose kernel is a whole number of strides long, as one matmul: x [B, L, C_in],
    kernel [k, C_in, C_out] (k = m * stride) -> [B, L // stride - m + 1, C_out]. The signal is cut into frames of
    ``stride`` samples, each output position reads ``m`` consecutive frames: m slices instead of im2col's k."""
    k, c_in, c_out = kernel.shape
    if k % stride:
        raise ValueError(f"id_classifier.spectrum_kernel ({k}) must be a multiple of spectrum_stride ({stride})")
    batch, length, _ = x.shape
    frames = x[:, :length // stride * stride].reshape(batch, length // stride, stride * c_in)
    m = k // stride
    positions = frames.shape[1] - m + 1
    if positions < 1:
        raise ValueError(f"the spectrum ({length} bins) is shorter than id_classifier.spectrum_kernel ({k})")
    patches = jnp.concatenate([frames[:, i:i + positions] for i in range(m)], axis=-1) if m > 1 else frames
    return patches @ kernel.reshape(k * c_in, c_out)


class SpectrumEmbedder(nn.Module):
    """[B, S] whole-clip log spectra -> [B, embedding_dim] (not normalised): a wide strided 1-D convolution
    (``kernel`` bins, ``stride`` apart), stride-2 1-D residual blocks, then (``pooling="frequency"``) the flattened
    positions x channels through bias-free dense layers with affine-free batch normalisation and ReLU (one, then
    ``SPECTRUM_HIDDEN_LAYERS`` more) and a bias-free linear embedding, or (``"mean"``) the mean over positions and a
    bias-free linear layer."""

    channels: Sequence[int] = (16, 32, 64, 128)
    embedding_dim: int = 128
    kernel: int = 256
    stride: int = 64
    patches: bool = False
    pooling: str = "frequency"  # see POOLINGS
    squeeze_excite: bool = False  # squeeze-excitation in every residual block (SqueezeExcite)

    @nn.compact
    def __call__(self, spectra: jax.Array, train: bool) -> jax.Array:
        weights = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel, 1, self.channels[0]), jnp.float32)
        x = strided_conv1d(spectra[..., None], weights, self.stride)[:, :, None, :]  # [B, positions, 1, C]
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        for width in self.channels[1:]:
            x = ResidualBlock(width, stride=2, patches=self.patches, kernel=(3, 1),
                              squeeze_excite=self.squeeze_excite)(x, train)
        if self.pooling == "mean":
            return nn.Dense(self.embedding_dim, use_bias=False)(jnp.mean(x, axis=(1, 2)))
        x = x.reshape(x.shape[0], -1)  # [B, positions * C]: every frequency region keeps its own weights
        for _ in range(1 + SPECTRUM_HIDDEN_LAYERS):
            x = nn.relu(_plain_norm(train)(nn.Dense(self.embedding_dim, use_bias=False)(x)))
        return nn.Dense(self.embedding_dim, use_bias=False)(x)


class PreActivationBlock(nn.Module):
    """ASDKit's residual block: the input batch-normalised (affine-free), then ReLU -> 3x3 conv(stride) -> BN -> ReLU
    -> 3x3 conv (-> squeeze-excitation), added to the normalised input, or with ``stride`` 2 to its 3x3 max pool
    and a 1x1 convolution (also when the width changes). No activation after the sum (pre-activation ResNet)."""

    channels: int
    stride: int = 1
    patches: bool = False
    squeeze_excite: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = _plain_norm(train)(x)
        y = Conv(self.channels, (3, 3), self.stride, self.patches)(nn.relu(x))
        y = Conv(self.channels, (3, 3), 1, self.patches)(nn.relu(_plain_norm(train)(y)))
        if self.squeeze_excite:
            y = SqueezeExcite()(y)
        if self.stride != 1:
            x = max_pool(x, ASDKIT_POOL, self.stride)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = Conv(self.channels, (1, 1), 1, self.patches)(x)
        return x + y


class ASDKitConvEmbedder(nn.Module):
    """[B, frames, mels] -> [B, embedding_dim]: the spectrogram network of ASDKit's ``dis_spec`` recipes (its
    Conv2dEncoderLayer). Each frequency bin batch-normalised over batch and time (affine-free), a 7x7 stride-2
    "VALID" convolution to ``channels[0]``, BN, ReLU and a 3x3 stride-2 max pool, then one stage per entry of
    ``channels`` of two :class:`PreActivationBlock` (the first stage at stride 1, the others starting with stride 2),
    the maximum over time and (``pooling="frequency"``) the frequency positions x channels flattened, affine-free
    BN and a bias-free linear embedding, or (``"mean"``, ASDKit's ``gap``) their mean over frequency and a bias-free
    linear layer. All normalisation is affine-free and every layer bias-free, as ASDKit's ``use_bias: false``."""

    channels: Sequence[int] = (16, 32, 64, 128)
    embedding_dim: int = 128
    patches: bool = False
    pooling: str = "frequency"
    squeeze_excite: bool = False

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool) -> jax.Array:
        x = _plain_norm(train)(frames)[..., None]  # per frequency bin
        x = Conv(self.channels[0], (ASDKIT_STEM_KERNEL,) * 2, 2, self.patches, padding="VALID")(x)
        x = max_pool(nn.relu(_plain_norm(train)(x)), ASDKIT_POOL, 2, "VALID")
        for stage, width in enumerate(self.channels):
            x = PreActivationBlock(width, 1 if stage == 0 else 2, self.patches, self.squeeze_excite)(x, train)
            x = PreActivationBlock(width, 1, self.patches, self.squeeze_excite)(x, train)
        x = jnp.max(x, axis=1)  # [B, frequency positions, C]
        if self.pooling == "mean":
            return nn.Dense(self.embedding_dim, use_bias=False)(jnp.mean(x, axis=1))
        return nn.Dense(self.embedding_dim, use_bias=False)(_plain_norm(train)(x.reshape(x.shape[0], -1)))


class ASDKitSpectrumEmbedder(nn.Module):
    """[B, S] whole-clip spectra -> [B, embedding_dim]: the spectrum network of ASDKit's recipes (its
    Conv1dEncoderLayer). Three bias-free "VALID" 1-D convolutions of ``embedding_dim`` channels, each followed by ReLU
    (and squeeze-excitation with ``squeeze_excite``): ``kernel`` bins ``stride`` apart, then
    :data:`ASDKIT_SPECTRUM_CONVS`; then (``pooling="frequency"``) the positions x channels flattened, or (``"mean"``)
    their mean, through ``1 + SPECTRUM_HIDDEN_LAYERS`` bias-free dense layers with affine-free BN and ReLU and a
    bias-free linear embedding. Each convolution is one matmul (:func:`strided_conv1d`)."""

    embedding_dim: int = 128
    kernel: int = 256
    stride: int = 64
    pooling: str = "frequency"
    squeeze_excite: bool = False

    @nn.compact
    def __call__(self, spectra: jax.Array, train: bool) -> jax.Array:
        x, convs, length = spectra[..., None], ((self.kernel, self.stride), *ASDKIT_SPECTRUM_CONVS), spectra.shape[-1]
        for kernel, stride in convs:
            length = length // stride - kernel // stride + 1
        if length < 1:
            raise ValueError(f"the spectrum ({spectra.shape[-1]} bins) is too short for id_classifier.body=asdkit's "
                             f"spectrum convolutions (kernel, stride: {convs}): lower id_classifier.spectrum_pool "
                             "or spectrum_kernel, or use body=compact")
        for index, (kernel, stride) in enumerate(convs):
            weights = self.param(f"kernel_{index}", nn.initializers.lecun_normal(),
                                 (kernel, x.shape[-1], self.embedding_dim), jnp.float32)
            x = nn.relu(strided_conv1d(x, weights, stride))
            if self.squeeze_excite:
                x = SqueezeExcite()(x[:, :, None, :])[:, :, 0, :]
        x = jnp.mean(x, axis=1) if self.pooling == "mean" else x.reshape(x.shape[0], -1)
        for _ in range(1 + SPECTRUM_HIDDEN_LAYERS):
            x = nn.relu(_plain_norm(train)(nn.Dense(self.embedding_dim, use_bias=False)(x)))
        return nn.Dense(self.embedding_dim, use_bias=False)(x)


def projection_cosines(embeddings: jax.Array, centres: jax.Array, num_classes: int) -> jax.Array:
    """AdaProj's similarities: [B, D] embeddings and [C * K, D] centres (class-major) -> [B, C], the norm of each
    normalised embedding's projection onto the span of its class's K centres (the cosine between the embedding and
    that projection)."""
    bases = centres.reshape(num_classes, -1, centres.shape[-1]).transpose(0, 2, 1)  # [C, D, K]
    orthonormal, _ = jnp.linalg.qr(bases)  # [C, D, K]
    coordinates = jnp.einsum("bd,cdk->bck", l2_normalise(embeddings), orthonormal)
    return jnp.sqrt(jnp.sum(jnp.square(coordinates), axis=-1) + 1e-12)


class IdClassifier(nn.Module):
    """Embedder(s) + cosine head. ``__call__(frames [B, T, mels], train, spectra [B, S] or None)`` returns
    (embeddings [B, D] (2D for ``dual``), cosines [B, classes * subclusters]; [B, classes] for ``projection``)."""

    num_classes: int
    channels: Sequence[int] = (16, 32, 64, 128)
    embedding_dim: int = 128
    subclusters: int = 1
    stem_stride: int = 2
    patches: bool = False  # convolutions as im2col matmuls (see Conv); build_module picks it by backend
    trainable_centres: bool = True  # False: the class (sub-cluster) centres stay at their random start
    frontend: str = "spectrogram"  # see FRONTENDS
    spectrum_channels: Sequence[int] = (16, 32, 64, 128)
    spectrum_kernel: int = 256
    spectrum_stride: int = 64
    projection: bool = False  # AdaProj: a class is the span of its centres
    pooling: str = "frequency"  # see POOLINGS
    squeeze_excite: bool = False  # squeeze-excitation in both branches' residual blocks
    body: str = "compact"  # see BODIES

    @property
    def uses_spectra(self) -> bool:
        return self.frontend in ("dual", "spectrum")

    @property
    def adaptive_scale(self) -> bool:
        """Whether the scale is a ``batch_stats`` variable ``adacos_scale`` (AdaCos) rather than a constant."""
        return False

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool = False,
                 spectra: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"id_classifier.frontend={self.frontend!r}: choose one of {', '.join(FRONTENDS)}")
        if self.adaptive_scale:  # created at init; read and written by the loss (classifier_errors)
            self.variable("batch_stats", "adacos_scale",
                          lambda: jnp.asarray(fixed_adacos_scale(self.num_classes), jnp.float32))
        if self.body not in BODIES:
            raise ValueError(f"id_classifier.body={self.body!r}: choose one of {', '.join(BODIES)}")
        asdkit = self.body == "asdkit"
        parts = []
        if self.frontend in ("dual", "spectrogram"):
            if asdkit:
                parts.append(ASDKitConvEmbedder(tuple(self.channels), self.embedding_dim, self.patches, self.pooling,
                                                self.squeeze_excite)(frames, train))
            else:
                parts.append(ConvEmbedder(tuple(self.channels), self.embedding_dim, self.stem_stride,
                                          self.patches, self.pooling, self.squeeze_excite)(frames, train))
        if self.uses_spectra:
            if spectra is None:
                raise ValueError(f"id_classifier.frontend={self.frontend} reads each clip's spectrum: pass spectra "
                                 "[B, bins] (their length sets the spectrum branch's parameters)")
            if asdkit:
                parts.append(ASDKitSpectrumEmbedder(self.embedding_dim, self.spectrum_kernel, self.spectrum_stride,
                                                    self.pooling, self.squeeze_excite)(spectra, train))
            else:
                parts.append(SpectrumEmbedder(tuple(self.spectrum_channels), self.embedding_dim,
                                              self.spectrum_kernel, self.spectrum_stride, self.patches, self.pooling,
                                              self.squeeze_excite)(spectra, train))
        embeddings = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        centres = self.param("centres", nn.initializers.glorot_uniform(),
                             (self.num_classes * self.subclusters, embeddings.shape[-1]))
        if not self.trainable_centres:  # Wilkinghoff's sub-cluster AdaCos keeps them fixed; ASDKit's scac_trainable
            centres = jax.lax.stop_gradient(centres)  # learns them (decay only rescales them: cosines ignore it)
        if self.projection:
            return embeddings, projection_cosines(embeddings, centres, self.num_classes)
        cosines = l2_normalise(embeddings) @ l2_normalise(centres).T
        return embeddings, cosines


def fixed_adacos_scale(num_classes: int) -> float:
    """The fixed AdaCos scale ``sqrt(2) * log(C - 1)`` (at least 1: a two-class problem would give 0)."""
    return max(1.0, math.sqrt(2.0) * math.log(max(num_classes - 1, 2)))


def arcface_logits(cosines: jax.Array, labels: jax.Array, scale: float, margin: float) -> jax.Array:
    """``s * cos(theta_j)`` for the other classes and ``s * cos(min(theta_y + m, pi))`` for the target.

    cosines [B, C], labels [B] (class indices) -> logits [B, C]."""
    theta = jnp.arccos(jnp.clip(cosines, -1.0 + 1e-7, 1.0 - 1e-7))
    target = jax.nn.one_hot(labels, cosines.shape[-1], dtype=bool)
    with_margin = jnp.cos(jnp.minimum(theta + margin, jnp.pi))
    return scale * jnp.where(target, with_margin, cosines)


def class_log_probs(logits: jax.Array, subclusters: int) -> jax.Array:
    """[B, C * K] logits (class-major: the K sub-clusters of class c are columns c*K .. c*K+K-1) -> [B, C] class
    log-probabilities: a class's probability is the sum of its sub-clusters' softmax probabilities."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jax.nn.logsumexp(log_probs.reshape(logits.shape[0], -1, subclusters), axis=-1)


def soft_cross_entropy(class_log_p: jax.Array, targets: jax.Array) -> jax.Array:
    """[B, C] log-probabilities and [B, C] target distributions (one-hot or mixed up) -> [B] cross-entropy."""
    return -jnp.sum(targets * class_log_p, axis=-1)


def adacos_scale(cosines: jax.Array, targets: jax.Array, scale: jax.Array, subclusters: int) -> jax.Array:
    """The dynamic AdaCos scale from a batch: ``log(B_avg) / cos(min(pi/4, theta_med))`` (no gradient).

    ``targets`` [B, C] are the class targets (a class's sub-clusters all count as its target)."""
    cosines = jax.lax.stop_gradient(cosines)
    is_target = jnp.repeat(targets, subclusters, axis=-1) > 0
    others = jnp.where(is_target, 0.0, jnp.exp(scale * cosines))
    b_avg = jnp.mean(jnp.sum(others, axis=-1))
    target_cos = jnp.max(jnp.where(is_target, cosines, -1.0), axis=-1)
    theta_med = jnp.median(jnp.arccos(jnp.clip(target_cos, -1.0 + 1e-7, 1.0 - 1e-7)))
    return jnp.log(jnp.maximum(b_avg, 1.0 + 1e-6)) / jnp.cos(jnp.minimum(jnp.pi / 4, theta_med))


@dataclasses.dataclass(frozen=True)
class Augment:
    """On-device augmentation of a training batch. ``mixup_alpha`` > 0: each window is, with probability
    ``mixup_prob``, mixed with another of the batch, ``lam ~ Beta(alpha, alpha)`` (alpha 1: uniform, as ASDKit),
    and so is its target; masks: ``time_masks`` bands of up to
    ``time_mask_frames`` frames and ``freq_masks`` bands of up to ``freq_mask_bins`` mel bins set to 0 (the
    normalised features' mean) per window."""

    mixup_alpha: float = 0.0
    mixup_prob: float = 1.0  # the share of windows mixed (ASDKit: 0.5); the others keep lam = 1
    time_masks: int = 0
    time_mask_frames: int = 8
    freq_masks: int = 0
    freq_mask_bins: int = 16

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.time_masks > 0 or self.freq_masks > 0


@dataclasses.dataclass(frozen=True)
class Head:
    """The loss and its constants, static for one compiled program (see :mod:`asd_jax.models.id_classifier`).
    ``class_units[c]`` is the unit index of class c."""

    loss: str
    margin: float
    scale: float
    subclusters: int
    class_units: tuple[int, ...]


def mask_bands(key: jax.Array, windows: jax.Array, count: int, width: int, axis: int) -> jax.Array:
    """Zero ``count`` random bands of 0..``width`` entries along ``axis`` (1: frames, 2: mels) of each window."""
    if count <= 0 or width <= 0:
        return windows
    size = windows.shape[axis]
    batch = windows.shape[0]
    width_key, start_key = jax.random.split(key)
    widths = jax.random.randint(width_key, (batch, count), 0, min(width, size) + 1)
    starts = jax.random.randint(start_key, (batch, count), 0, size)
    starts = jnp.minimum(starts, size - widths)
    positions = jnp.arange(size)
    inside = (positions[None, None, :] >= starts[..., None]) & (positions[None, None, :] < (starts + widths)[..., None])
    keep = ~jnp.any(inside, axis=1)  # [B, size]
    shape = [batch, 1, 1]
    shape[axis] = size
    return windows * keep.reshape(shape).astype(windows.dtype)


def augment(key: jax.Array, windows: jax.Array, labels: jax.Array, settings: Augment,
            spectra: jax.Array | None = None):
    """(windows, spectra, partner labels [B], lam [B]): the masked and mixed windows (and the clips' spectra, mixed
    with the same partners; not masked); the loss is ``lam * CE(labels) + (1 - lam) * CE(partner)`` (lam = 1 and
    partner = labels without mixup)."""
    time_key, freq_key, mix_key, perm_key = jax.random.split(key, 4)
    windows = mask_bands(time_key, windows, settings.time_masks, settings.time_mask_frames, axis=1)
    windows = mask_bands(freq_key, windows, settings.freq_masks, settings.freq_mask_bins, axis=2)
    if settings.mixup_alpha <= 0:
        return windows, spectra, labels, jnp.ones(labels.shape, windows.dtype)
    lam = jax.random.beta(mix_key, settings.mixup_alpha, settings.mixup_alpha, labels.shape).astype(windows.dtype)
    if settings.mixup_prob < 1:  # the unmixed windows keep lam = 1 (their partner's weight is 0)
        chosen = jax.random.uniform(jax.random.fold_in(mix_key, 1), labels.shape) < settings.mixup_prob
        lam = jnp.where(chosen, lam, 1.0)
    partner = jax.random.permutation(perm_key, labels.shape[0])
    mix = lambda x: None if x is None else (
        lam.reshape(-1, *[1] * (x.ndim - 1)) * x + (1 - lam.reshape(-1, *[1] * (x.ndim - 1))) * x[partner])
    return mix(windows), mix(spectra), labels[partner], lam


class ClassifierModule(IdClassifier):
    """:class:`~asd_jax.models.id_classifier.IdClassifier` plus what the trainer's error needs: the head's loss
    constants, the augmentation, and (AdaCos) the adaptive scale in ``batch_stats``."""

    head: Head = Head("arcface", 0.5, 30.0, 1, (0,))
    augmentation: Augment = Augment()

    @property
    def adaptive_scale(self) -> bool:
        return self.head.loss in ("adacos", "adaproj")


def _class_ce(cosines: jax.Array, labels: jax.Array, head: Head, scale) -> jax.Array:
    """[B] cross-entropy of each window's class ``labels`` (ArcFace: with the margin on that class)."""
    num_classes = len(head.class_units)
    if head.loss == "arcface":
        logits = arcface_logits(cosines, labels, head.scale, head.margin)
    else:
        logits = scale * cosines
    log_p = class_log_probs(logits, head.subclusters)
    return soft_cross_entropy(log_p, jax.nn.one_hot(labels, num_classes))


def classifier_errors(module: ClassifierModule, variables: dict, batch: dict, train: bool):
    """The trainer's per-window error. Training (``batch["labels"]``: class indices): the angular-margin loss of
    the (augmented) windows, and the updated batch statistics. Scoring (``batch["labels"]``: unit indices, -1 for
    a unit not trained on): minus the log-probability of the unit (-max class log-probability for -1)."""
    head = module.head
    windows, spectra = batch["windows"], batch.get("spectra")
    if module.uses_spectra and spectra is None:
        raise ValueError("id_classifier.frontend=" + module.frontend + " needs each clip's spectrum (batch 'spectra')")
    adaptive = module.adaptive_scale
    if train:
        labels = batch["labels"]
        partner, lam = labels, jnp.ones(labels.shape, windows.dtype)
        if module.augmentation.active:
            windows, spectra, partner, lam = augment(batch["key"], windows, labels, module.augmentation, spectra)
        (_, cosines), updates = module.apply(variables, windows, train=True, spectra=spectra, mutable=["batch_stats"])
        stats = dict(updates["batch_stats"])
        scale = variables["batch_stats"]["adacos_scale"] if adaptive else head.scale
        errors = lam * _class_ce(cosines, labels, head, scale) + (1 - lam) * _class_ce(cosines, partner, head, scale)
        if adaptive:
            num_classes = len(head.class_units)
            targets = lam[:, None] * jax.nn.one_hot(labels, num_classes) + \
                (1 - lam[:, None]) * jax.nn.one_hot(partner, num_classes)
            stats["adacos_scale"] = adacos_scale(cosines, targets, scale, head.subclusters)
        return errors, stats
    _, cosines = module.apply(variables, windows, train=False, spectra=spectra)
    scale = variables["batch_stats"]["adacos_scale"] if adaptive else head.scale
    log_p = class_log_probs(scale * cosines, head.subclusters)  # [B, C], no margin when scoring
    units = jnp.asarray(head.class_units)
    labels = batch["labels"]
    mine = units[None, :] == labels[:, None]
    unit_log_p = jax.nn.logsumexp(jnp.where(mine, log_p, -jnp.inf), axis=-1)
    return jnp.where(jnp.any(mine, axis=-1), -unit_log_p, -jnp.max(log_p, axis=-1)), None


def build_module(section, classes: Sequence[str] | None = None, class_units: Sequence[int] | None = None):
    """The Flax module of a config section; ``classes`` / ``class_units`` from the training data (default: the
    benchmark's ``BENCHMARK_CLASSES`` classes, one per unit)."""
    num_classes = len(classes) if classes is not None else BENCHMARK_CLASSES
    units = tuple(int(u) for u in class_units) if class_units is not None else tuple(range(num_classes))
    check_section(section)
    projection = section.loss == "adaproj"
    return ClassifierModule(
        num_classes=num_classes, channels=_widths(section.channels),
        embedding_dim=int(section.embedding_dim), subclusters=int(section.subclusters),
        stem_stride=int(section.stem_stride), patches=uses_patches(section.conv),
        trainable_centres=section.get("centres", "trainable") == "trainable",
        frontend=section.get("frontend", "spectrogram"),
        spectrum_channels=_widths(section.get("spectrum_channels", "16,32,64,128")),
        spectrum_kernel=int(section.get("spectrum_kernel", 256)),
        spectrum_stride=int(section.get("spectrum_stride", 64)),
        projection=projection, pooling=pooling_of(section),
        squeeze_excite=bool(section.get("squeeze_excite", False)), body=section.get("body", "compact"),
        head=Head(section.loss, float(section.margin), float(section.scale),
                  1 if projection else int(section.subclusters), units),  # AdaProj's classes are whole subspaces
        augmentation=Augment(float(section.mixup_alpha), float(section.get("mixup_prob", 1.0)),
                             int(section.time_masks), int(section.time_mask_frames),
                             int(section.freq_masks), int(section.freq_mask_bins)))


def pooling_of(section) -> str:
    """The section's ``pooling``; a config saved before the option existed has none and pooled by the mean."""
    return section.get("pooling", "mean")


def uses_patches(conv: str) -> bool:
    """Whether convolutions run as im2col matmuls (:func:`patch_conv`). ``auto``: on a CPU, where XLA's convolution
    inside the trainer's loops (``lax.scan`` over steps, ``lax.map`` over members) runs some 30x slower than the
    same convolution outside a loop (AMD EPYC, jax 0.10.2), while the matmul form runs at the same speed in both."""
    if conv not in CONVS:
        raise ValueError(f"id_classifier.conv={conv!r}: choose one of {', '.join(CONVS)}")
    return conv == "patches" or (conv == "auto" and jax.default_backend() == "cpu")


def check_section(section) -> None:
    """Refuse settings the method cannot use, naming the fix."""
    if section.loss not in LOSSES:
        raise ValueError(f"id_classifier.loss={section.loss!r}: choose one of {', '.join(LOSSES)}")
    if section.classes not in CLASS_MODES:
        raise ValueError(f"id_classifier.classes={section.classes!r}: choose one of {', '.join(CLASS_MODES)}")
    if section.get("centres", "trainable") not in CENTRES:
        raise ValueError(f"id_classifier.centres={section.centres!r}: choose one of {', '.join(CENTRES)}")
    if int(section.subclusters) < 1:
        raise ValueError(f"id_classifier.subclusters must be >= 1; got {section.subclusters}")
    if int(section.subclusters) > 1 and section.loss == "arcface":
        raise ValueError("id_classifier.subclusters > 1 is sub-cluster AdaCos (loss=adacos) or AdaProj's subspace "
                         "dimension (loss=adaproj); ArcFace has one centre per class")
    if section.loss != "arcface" and float(section.margin) != 0.5:
        raise ValueError(f"id_classifier.margin is ArcFace's; {section.loss} has none: leave it at 0.5 or use "
                         "loss=arcface")
    if section.get("types", "joint") not in TYPE_MODES:
        raise ValueError(f"id_classifier.types={section.types!r}: choose one of {', '.join(TYPE_MODES)}")
    if not 0.0 <= float(section.get("mixup_prob", 1.0)) <= 1.0:
        raise ValueError(f"id_classifier.mixup_prob is the share of windows mixed, in [0, 1]; got {section.mixup_prob}")
    if pooling_of(section) not in POOLINGS:
        raise ValueError(f"id_classifier.pooling={pooling_of(section)!r}: choose one of {', '.join(POOLINGS)}")
    frontend = section.get("frontend", "spectrogram")
    if frontend not in FRONTENDS:
        raise ValueError(f"id_classifier.frontend={frontend!r}: choose one of {', '.join(FRONTENDS)}")
    if frontend != "spectrogram":
        kernel, stride = int(section.spectrum_kernel), int(section.spectrum_stride)
        if stride < 1 or kernel < stride or kernel % stride:
            raise ValueError(f"id_classifier.spectrum_kernel ({kernel}) must be a positive multiple of "
                             f"spectrum_stride ({stride})")
        if int(section.spectrum_pool) < 1:
            raise ValueError("id_classifier.spectrum_pool must be >= 1 (1: every FFT bin); got "
                             f"{section.spectrum_pool}")
        if len(_widths(section.spectrum_channels)) < 1:
            raise ValueError("id_classifier.spectrum_channels needs at least one width, e.g. '16,32,64,128'")
    uses_patches(section.conv)
    body = section.get("body", "compact")
    if body not in BODIES:
        raise ValueError(f"id_classifier.body={body!r}: choose one of {', '.join(BODIES)}")
    if body == "asdkit":  # settings its networks do not read
        if int(section.stem_stride) != 2:
            raise ValueError("id_classifier.body=asdkit has its own stem (7x7 stride 2 and a 3x3 stride-2 max pool) "
                             f"and does not read stem_stride={section.stem_stride}: leave it at 2")
        if _widths(section.get("spectrum_channels", "16,32,64,128")) != (16, 32, 64, 128):
            raise ValueError("id_classifier.body=asdkit's spectrum branch has embedding_dim channels in each of its "
                             f"three convolutions and does not read spectrum_channels={section.spectrum_channels!r}: "
                             "leave it at '16,32,64,128'")
    if int(section.stem_stride) < 1:
        raise ValueError(f"id_classifier.stem_stride must be >= 1 (1: full resolution); got {section.stem_stride}")
    if len(_widths(section.channels)) < 1:
        raise ValueError("id_classifier.channels needs at least one width, e.g. '16,32,64,128'")


def _squeeze_excite_flops(section, channels: int) -> float:
    """The two dense layers of one block's squeeze-excitation (0 without it; the mean and the scaling are not
    matmuls)."""
    if not section.get("squeeze_excite", False):
        return 0.0
    return 2.0 * 2 * channels * max(1, channels // SE_RATIO)


def spectrogram_flops(section, mels: int) -> float:
    """Forward FLOPs of the spectrogram branch on one window: every convolution and the embedding layer."""
    if section.get("body", "compact") == "asdkit":
        return asdkit_spectrogram_flops(section, mels)
    frames, channels, stride = int(section.frames), list(_widths(section.channels)), int(section.stem_stride)
    height, width = -(-frames // stride), -(-mels // stride)
    forward = 2.0 * height * width * 9 * channels[0]
    previous = channels[0]
    for out in channels[1:]:
        height, width = -(-height // 2), -(-width // 2)
        forward += 2.0 * height * width * (9 * previous * out + 9 * out * out + previous * out)
        forward += _squeeze_excite_flops(section, out)
        previous = out
    flattened = previous * (width if pooling_of(section) == "frequency" else 1)
    return forward + 2.0 * flattened * int(section.embedding_dim)


def asdkit_spectrogram_flops(section, mels: int) -> float:
    """Forward FLOPs of the asdkit spectrogram branch (:class:`ASDKitConvEmbedder`) on one window."""
    channels, se = list(_widths(section.channels)), lambda c: _squeeze_excite_flops(section, c)
    height, width = (int(section.frames) - ASDKIT_STEM_KERNEL) // 2 + 1, (mels - ASDKIT_STEM_KERNEL) // 2 + 1
    forward = 2.0 * height * width * ASDKIT_STEM_KERNEL ** 2 * channels[0]
    height, width = (height - ASDKIT_POOL) // 2 + 1, (width - ASDKIT_POOL) // 2 + 1
    previous = channels[0]
    for stage, out in enumerate(channels):
        if stage:
            height, width = -(-height // 2), -(-width // 2)
        shortcut = previous * out if stage or previous != out else 0
        forward += 2.0 * height * width * (9 * previous * out + 9 * out * out + shortcut) + se(out)
        forward += 2.0 * height * width * 18 * out * out + se(out)
        previous = out
    flattened = previous * (width if pooling_of(section) == "frequency" else 1)
    return forward + 2.0 * flattened * int(section.embedding_dim)


def asdkit_spectrum_flops(section, samples: int = CLIP_SAMPLES) -> float:
    """Forward FLOPs of the asdkit spectrum branch (:class:`ASDKitSpectrumEmbedder`) on one clip."""
    length, dim, c_in, forward = (samples // 2 + 1) // int(section.spectrum_pool), int(section.embedding_dim), 1, 0.0
    for kernel, stride in ((int(section.spectrum_kernel), int(section.spectrum_stride)), *ASDKIT_SPECTRUM_CONVS):
        length = length // stride - kernel // stride + 1
        forward += 2.0 * length * kernel * c_in * dim + _squeeze_excite_flops(section, dim)
        c_in = dim
    flattened = dim * (length if pooling_of(section) == "frequency" else 1)
    return forward + 2.0 * flattened * dim + 2.0 * (1 + SPECTRUM_HIDDEN_LAYERS) * dim * dim


def spectrum_flops(section, samples: int = CLIP_SAMPLES) -> float:
    """Forward FLOPs of the spectrum branch on one clip of ``samples`` samples (10 s at 16 kHz by default)."""
    if section.get("body", "compact") == "asdkit":
        return asdkit_spectrum_flops(section, samples)
    bins = (samples // 2 + 1) // int(section.spectrum_pool)
    kernel, stride, channels = int(section.spectrum_kernel), int(section.spectrum_stride), \
        list(_widths(section.spectrum_channels))
    positions = bins // stride - kernel // stride + 1
    forward = 2.0 * positions * kernel * channels[0]
    previous = channels[0]
    for out in channels[1:]:
        positions = -(-positions // 2)
        forward += 2.0 * positions * (3 * previous * out + 3 * out * out + previous * out)
        forward += _squeeze_excite_flops(section, out)
        previous = out
    dim = int(section.embedding_dim)
    if pooling_of(section) != "frequency":
        return forward + 2.0 * previous * dim
    return forward + 2.0 * positions * previous * dim + 2.0 * (1 + SPECTRUM_HIDDEN_LAYERS) * dim * dim


def flops_per_window(section, mels: int) -> float:
    """Forward + backward (3x forward) FLOPs of one training window: the frontend's branches (the spectrum branch
    on a 10-s 16-kHz clip) and the head against ``BENCHMARK_CLASSES`` classes."""
    frontend = section.get("frontend", "spectrogram")
    forward, dim = 0.0, 0
    if frontend in ("dual", "spectrogram"):
        forward, dim = forward + spectrogram_flops(section, mels), dim + int(section.embedding_dim)
    if frontend in ("dual", "spectrum"):
        forward, dim = forward + spectrum_flops(section), dim + int(section.embedding_dim)
    forward += 2.0 * dim * BENCHMARK_CLASSES * int(section.subclusters)
    return 3.0 * forward
