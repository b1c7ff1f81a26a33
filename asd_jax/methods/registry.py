"""Every method, declared once: what the CLI, the config, the pipeline, the benchmark and the tests know of it.

A :class:`Method` names its config section and that section's defaults, the kind of detector that runs it, and, for
methods trained on the ensemble trainer, its model factory, window length and FLOPs per window. Adding a method is
its model file plus one :func:`register` call (see the README, "Adding a method").

Detector kinds:

* ``"ensemble"``: a Flax model trained on log-mel windows by :mod:`asd_jax.train.ensemble` (members = seeds and
  shape-free hyper-parameters in one compiled program). ``labels`` says what class label each window carries:
  ``None`` for the reconstruction/prediction methods, e.g. ``"machine_id"`` for a classifier of machine ids.
* ``"clip_vector"``: one vector per clip (VGGish embedding, log-mel statistics) into a scikit-learn detector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import ml_collections

from asd_jax.models import dense_ae, gru_autoencoder, id_classifier, lstm_predictor
from asd_jax.train.ensemble import WindowModel

KINDS = ("ensemble", "clip_vector")


def train_section(epochs: int, batch_size: int, learning_rate: float, windows_per_clip: int,
                  steps_per_call: int = 10) -> ml_collections.ConfigDict:
    """The ``train`` section of an ensemble method: optimiser (see :mod:`asd_jax.train.optim`) and epoch schedule.

    An epoch is ``windows_per_clip`` windows per training clip, drawn at random positions (with replacement) inside
    the compiled step; ``steps_per_call`` steps run per dispatch (``lax.scan``).
    """
    return ml_collections.ConfigDict(dict(
        epochs=epochs, batch_size=batch_size, windows_per_clip=windows_per_clip, steps_per_call=steps_per_call,
        optimizer="adam", learning_rate=learning_rate, weight_decay=0.0,
        momentum=ml_collections.config_dict.placeholder(float), grad_clip_norm=0.0, schedule="constant",
        warmup_epochs=0.0, checkpoint_every_epochs=1, validate_every_epochs=1,
        member_map="auto"))  # auto: on one CPU the method's faster way (Method.cpu_member_map), vmap elsewhere


@dataclasses.dataclass(frozen=True)
class Method:
    """One method. ``section`` is the config section it reads (methods may share one, as the OC-SVMs do);
    ``extra_sections`` are further sections it reads. For ``kind="ensemble"``: ``build_model(section)`` returns the
    Flax module, ``window_length(section)`` the frames per training window, ``flops_per_window(section, mels)`` the
    forward + backward matmul FLOPs of one window (3x forward), and ``errors(module, variables, batch, train)`` the
    per-window error [B] (the loss and the score) and the updated batch statistics (or None);
    ``init_inputs(sample_batch)`` gives the keyword arguments of ``module.init`` (default: ``frames=`` the windows);
    ``detector`` names a detector class of its own ("module:Class") when the kind's default does not fit;
    ``cpu_member_map`` is what ``train.member_map=auto`` means on one CPU device, the faster of ``map`` and
    ``vmap`` there for this model (measured with ``make bench``)."""

    name: str
    summary: str
    kind: str
    section: str
    default_config: Callable[[], ml_collections.ConfigDict]
    extra_sections: tuple[str, ...] = ()
    build_model: Callable | None = None
    window_length: Callable[[ml_collections.ConfigDict], int] | None = None
    flops_per_window: Callable[[ml_collections.ConfigDict, int], float] | None = None
    errors: Callable | None = None
    init_inputs: Callable[[dict], dict] | None = None
    labels: str | None = None
    detector: str = ""  # "module:Class" of a detector of its own; default: the kind's (pipeline.DETECTORS)
    cpu_member_map: str = "map"  # member_map="auto" on one CPU: map (recurrent, CNN) or vmap (dense_ae)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}; got {self.kind!r}")
        ensemble_fields = (self.build_model, self.window_length, self.flops_per_window, self.errors)
        if self.kind == "ensemble" and any(field is None for field in ensemble_fields):
            raise ValueError(f"method {self.name!r}: an ensemble method needs build_model, window_length, "
                             "flops_per_window and errors")

    @property
    def reads(self) -> tuple[str, ...]:
        """Every config section this method reads."""
        return (self.section, *self.extra_sections)

    def window_model(self, config: ml_collections.ConfigDict) -> WindowModel:
        """The :class:`WindowModel` the trainer sees, from the full config."""
        if self.kind != "ensemble":
            raise ValueError(f"method {self.name!r} is not trained on windows (kind {self.kind!r})")
        section = config[self.section]
        module = self.build_model(section)
        length = int(self.window_length(section))

        def init(key, mels):
            sample = {"windows": jnp.zeros((2, length, mels)), "labels": jnp.zeros((2,), jnp.int32)}
            inputs = self.init_inputs(sample) if self.init_inputs else {"frames": sample["windows"]}
            return module.init(key, **inputs)

        return WindowModel(self.name, length, init=init,
                           errors=lambda variables, batch, train: self.errors(module, variables, batch, train),
                           cpu_member_map=self.cpu_member_map)


_REGISTRY: dict[str, Method] = {}


def register(method: Method, replace: bool = False) -> Method:
    """Add a method; ``replace=True`` overwrites an entry of the same name."""
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(name for name, method in _REGISTRY.items() if kind is None or method.kind == kind)


def methods() -> tuple[Method, ...]:
    return tuple(_REGISTRY.values())


# ----------------------------------------------------------------------------------------------------------------------
# The built-in methods.


def _lstm_config():  # write-up Method II: a 2-layer LSTM predicts frame t from frames t-10..t-1
    return ml_collections.ConfigDict(dict(hidden_size=128, num_layers=2, frames=10, score_hop=1,
                                          train=train_section(10, 256, 1e-3, windows_per_clip=32)))


def _lstm_flops(section, mels: int) -> float:
    hidden, inputs = section.hidden_size, [mels] + [section.hidden_size] * (section.num_layers - 1)
    forward = sum(section.frames * 2 * (i + hidden) * 4 * hidden for i in inputs) + 2 * hidden * mels
    return 3.0 * forward


register(Method(
    "lstm", "2-layer LSTM predicts log-mel frame t from the `frames` before it; score: mean next-frame MSE",
    "ensemble", "lstm", _lstm_config,
    build_model=lambda section: lstm_predictor.LSTMPredictor(section.hidden_size, section.num_layers),
    window_length=lambda section: section.frames + 1,  # the frames read, then the frame predicted
    flops_per_window=_lstm_flops,
    errors=lambda module, variables, batch, train: (
        lstm_predictor.prediction_errors(module, variables, batch["windows"]), None),
    init_inputs=lambda sample: {"frames": sample["windows"][:, :-1]}))


def _gru_config():  # write-up Method III: 2-layer GRU encoder/decoder, hidden 256, Adam 1e-3, batch 64, 10 epochs
    return ml_collections.ConfigDict(dict(hidden_size=256, num_layers=2, frames=32, score_hop=16,
                                          train=train_section(10, 64, 1e-3, windows_per_clip=8)))


def _gru_flops(section, mels: int) -> float:
    hidden, steps = section.hidden_size, section.frames
    encoder = [mels] + [hidden] * (section.num_layers - 1)
    decoder = [hidden] * section.num_layers
    forward = sum(steps * 2 * (i + hidden) * 3 * hidden for i in encoder + decoder) + steps * 2 * hidden * mels
    return 3.0 * forward


register(Method(
    "gru_ae", "2-layer GRU encoder + decoder reconstruct `frames`-frame sequences; score: mean reconstruction MSE",
    "ensemble", "gru_ae", _gru_config,
    build_model=lambda section: gru_autoencoder.GRUAutoencoder(section.hidden_size, section.num_layers),
    window_length=lambda section: section.frames,
    flops_per_window=_gru_flops,
    errors=lambda module, variables, batch, train: (
        gru_autoencoder.reconstruction_errors(module, variables, batch["windows"]), None)))


def _dense_config():  # DCASE 2020 baseline: 5 frames -> 640-d, 128x4 -> 8 -> 128x4 -> 640, BatchNorm; Adam, batch 512
    return ml_collections.ConfigDict(dict(
        frames=5, hidden_size=128, bottleneck=8, score_hop=1,
        train=train_section(100, 512, 1e-3, windows_per_clip=309, steps_per_call=20)))


def _dense_flops(section, mels: int) -> float:
    widths = [section.frames * mels] + [section.hidden_size] * 4 + [section.bottleneck] + \
        [section.hidden_size] * 4 + [section.frames * mels]
    return 3.0 * sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


register(Method(
    "dense_ae", "the DCASE 2020 baseline autoencoder on `frames` concatenated frames; score: mean reconstruction MSE",
    "ensemble", "dense_ae", _dense_config,
    build_model=lambda section: dense_ae.DenseAutoencoder(section.hidden_size, section.bottleneck),
    window_length=lambda section: section.frames,
    flops_per_window=_dense_flops,
    errors=lambda module, variables, batch, train: dense_ae.reconstruction_errors(
        module, variables, batch["windows"], train),
    init_inputs=lambda sample: {"frames": sample["windows"], "train": False},
    cpu_member_map="vmap"))  # large batched matmuls: vmap 1.15-1.38x map at E=8 (2-vCPU AMD EPYC, 2 runs)


def _ocsvm_config():  # write-up Method I: clip vector -> StandardScaler -> OneClassSVM(rbf), gamma and nu tuned
    return ml_collections.ConfigDict(dict(
        gammas="scale,0.001,0.003,0.01,0.03,0.1", nus="0.01,0.05,0.1,0.2", select="label_free", holdout_fraction=0.2,
        pooling="mean"))


register(Method("vggish_ocsvm", "VGGish embeddings (TF-Hub or the Flax port) -> StandardScaler -> OneClassSVM",
                "clip_vector", "ocsvm", _ocsvm_config, extra_sections=("vggish",)))
register(Method("logmel_ocsvm", "per-bin log-mel mean and std -> StandardScaler -> OneClassSVM",
                "clip_vector", "ocsvm", _ocsvm_config))


def _classifier_config():  # a machine-id classifier with an angular-margin head (the field's leading family)
    return ml_collections.ConfigDict(dict(
        frames=64, score_hop=16, channels="16,32,64,128", stem_stride=2, embedding_dim=128,
        conv="auto",  # auto: convolutions as im2col matmuls on a CPU (much faster there), XLA's elsewhere
        loss="arcface", margin=0.5, scale=30.0, subclusters=1,  # ArcFace's m and s; adacos sets s itself
        classes="unit", backend="knn", knn_k=1,
        mixup_alpha=0.0, time_masks=0, time_mask_frames=8, freq_masks=0, freq_mask_bins=16,
        train=train_section(20, 64, 1e-3, windows_per_clip=8)))


register(Method(
    "id_classifier", "a CNN tells the machine ids (sections, attributes) of normal clips apart with an ArcFace / "
    "AdaCos head; score: kNN cosine distance to the clip's own unit, or -log p(unit)",
    "ensemble", "id_classifier", _classifier_config,
    build_model=lambda section: id_classifier.build_module(section),
    window_length=lambda section: section.frames,
    flops_per_window=id_classifier.conv_flops,
    errors=id_classifier.classifier_errors,
    init_inputs=lambda sample: {"frames": sample["windows"], "train": False},
    labels="class", detector="asd_jax.methods.classifier:ClassifierDetector"))


def _knn_config():  # clip vectors -> (StandardScaler) -> per-unit cosine kNN
    return ml_collections.ConfigDict(dict(k=1, standardize=True, pooling="mean"))


register(Method("vggish_knn", "VGGish embeddings -> StandardScaler -> cosine kNN to the clip's own unit",
                "clip_vector", "knn", _knn_config, extra_sections=("vggish",),
                detector="asd_jax.methods.clip_vectors:KNNVectorDetector"))
register(Method("logmel_knn", "per-bin log-mel mean and std -> StandardScaler -> cosine kNN to the clip's own unit",
                "clip_vector", "knn", _knn_config, detector="asd_jax.methods.clip_vectors:KNNVectorDetector"))
