"""Every method, declared once: what the CLI, the config, the pipeline, the benchmark and the tests know of it.

A :class:`Method` names its config section and that section's defaults, the detector class that runs it, and, for
methods trained on the ensemble trainer, its model factory, window length, FLOPs per window and the small settings
the tests run it with. Adding a method is its model file plus one :func:`register` call (see the README, "Adding a
method"); the detector receives its ``Method``, so nothing else looks a method up by name.

Detector kinds:

* ``"ensemble"``: a Flax model trained on log-mel windows by :mod:`asd_jax.train.ensemble` (members = seeds and
  shape-free hyper-parameters in one compiled program). ``labels`` says what class label each window carries:
  ``None`` for the reconstruction/prediction methods, e.g. ``"machine_id"`` for a classifier of machine ids.
* ``"clip_vector"``: one vector per clip (VGGish embedding, log-mel statistics) into a scikit-learn detector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from asd_jax.data import features as features_lib
from asd_jax.data import loading
from asd_jax.methods.base import Detector
from asd_jax.methods.classifier import ClassifierDetector
from asd_jax.methods.clip_vectors import KNNVectorDetector, OCSVMDetector
from asd_jax.methods.sequence import SequenceDetector
from asd_jax.models import dense_ae, gru_autoencoder, id_classifier, lstm_predictor
from asd_jax.train.ensemble import WindowModel

KINDS = ("ensemble", "clip_vector")
VECTOR_SOURCES = ("vggish", "logmel")


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
    ``extra_sections`` are further sections it reads; ``detector`` is the :class:`~asd_jax.methods.base.Detector`
    class that runs it (it receives this ``Method``).

    For ``kind="ensemble"``: ``build_model(section)`` returns the Flax module (``build_model(section, classes)``
    for a method with ``labels``: ``classes`` = (class names, each class's unit index) from the training data, or
    None for a stand-in set, as the benchmark uses); ``window_length(section)`` the frames per training window;
    ``flops_per_window(section, mels)`` the forward + backward matmul FLOPs of one window (3x forward);
    ``errors(module, variables, batch, train)`` the per-window error [B] (the loss and the score) and the updated
    batch statistics (or None); ``init_inputs(sample_batch)`` the keyword arguments of ``module.init`` (default:
    ``frames=`` the windows); ``cpu_member_map`` what ``train.member_map=auto`` means on one CPU device, the faster
    of ``map`` and ``vmap`` there for this model (measured with ``make bench``); ``test_settings`` the section
    values the tests train it with (small and fast: ``tests/conftest.py`` ``tiny_config``).

    For ``kind="clip_vector"``: ``vector_source`` is where its clip vectors come from ("vggish" or "logmel").

    ``clip_inputs(config)`` names per-clip arrays a method reads beside its windows and their shapes (the id
    classifier's whole-clip spectra); ``joint_types(section)`` says whether a run over several machine types trains
    one model over all of them (:mod:`asd_jax.every_type`).

    ``resolve(config)`` fills in, in place, settings that follow the data once the clip length is known (the id
    classifier's ``frames=0``: the whole clip); :meth:`resolve_config` calls it.

    ``supplemental`` names the DCASE 2025 supplemental clips the method trains on when the data has them and
    ``--config.supplemental=auto``: "machine" adds the clean machine recordings to its normal training clips (clean
    recordings without the background shift what "normal" sounds like); "noise" uses the noise-only recordings as
    augmentation, one extra normal training clip per noise clip, a training clip mixed with it at a random SNR
    (:func:`asd_jax.data.mixing.noise_mixtures`, from ``asd_jax.pipeline._with_supplemental``)."""

    name: str
    summary: str
    kind: str
    section: str
    default_config: Callable[[], ml_collections.ConfigDict]
    detector: type[Detector]
    extra_sections: tuple[str, ...] = ()
    build_model: Callable | None = None
    window_length: Callable[[ml_collections.ConfigDict], int] | None = None
    flops_per_window: Callable[[ml_collections.ConfigDict, int], float] | None = None
    errors: Callable | None = None
    init_inputs: Callable[[dict], dict] | None = None
    labels: str | None = None
    cpu_member_map: str = "map"  # member_map="auto" on one CPU: map (recurrent, CNN) or vmap (dense_ae)
    vector_source: str | None = None
    test_settings: dict = dataclasses.field(default_factory=dict)
    supplemental: tuple[str, ...] = ()  # DCASE 2025 supplemental kinds it trains on: "machine", "noise" (mixtures)
    clip_inputs: Callable[[ml_collections.ConfigDict], dict[str, tuple[int, ...]]] | None = None
    joint_types: Callable[[ml_collections.ConfigDict], bool] | None = None
    resolve: Callable[[ml_collections.ConfigDict], None] | None = None

    def stand_in_clip_data(self, config: ml_collections.ConfigDict, num_clips: int, seed: int = 0):
        """Per-clip data of a stand-in training set (the benchmark's): zero class labels for a method with
        ``labels``, plus random arrays of the shapes ``clip_inputs(config)`` names (e.g. each clip's spectrum);
        None for a method without either."""
        shapes = self.clip_inputs(config) if self.clip_inputs else {}
        labels = jnp.zeros(num_clips, jnp.int32) if self.labels else None
        if not shapes:
            return labels
        keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
        data = {name: jax.random.normal(key, (num_clips, *shape)) for key, (name, shape) in zip(keys, shapes.items())}
        return {**({"labels": labels} if labels is not None else {}), **data}

    def resolve_config(self, config: ml_collections.ConfigDict) -> None:
        """Fill in the settings of this method that follow the data (``resolve``), in place; the clip length
        (``features.duration_s``) is resolved first, or read as 10 s when no data was seen (the benchmark)."""
        if self.resolve:
            with config.unlocked():
                self.resolve(config)

    def trains_types_jointly(self, config: ml_collections.ConfigDict) -> bool:
        """Whether a run over several machine types trains one model on all of them (``joint_types``) rather than
        one per type."""
        return bool(self.joint_types and self.joint_types(config[self.section]))

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}; got {self.kind!r}")
        ensemble_fields = (self.build_model, self.window_length, self.flops_per_window, self.errors)
        if self.kind == "ensemble" and any(field is None for field in ensemble_fields):
            raise ValueError(f"method {self.name!r}: an ensemble method needs build_model, window_length, "
                             "flops_per_window and errors")
        unknown = sorted(set(self.supplemental) - {"machine", "noise"})
        if unknown:
            raise ValueError(f"method {self.name!r}: supplemental kinds {unknown} are not known; declare any of "
                             "'machine', 'noise' (or ())")
        if self.kind == "clip_vector" and self.vector_source not in VECTOR_SOURCES:
            raise ValueError(f"method {self.name!r}: a clip-vector method needs vector_source, one of "
                             f"{', '.join(VECTOR_SOURCES)}")

    @property
    def reads(self) -> tuple[str, ...]:
        """Every config section this method reads."""
        return (self.section, *self.extra_sections)

    @property
    def multiprocess(self) -> bool:
        """Whether a run of it can span several processes (``--distributed``)."""
        return self.detector.multiprocess

    def preflight(self, config: ml_collections.ConfigDict) -> None:
        """Refuse, before any data work, a run that cannot succeed (e.g. the pretrained VGGish cannot be had)."""
        self.detector.preflight(self, config)

    def make_detector(self, config: ml_collections.ConfigDict, run, members, cache_root: str | None = None):
        """A detector of this method, to be fit."""
        return self.detector(self, config, run, members, cache_root)

    def restore_detector(self, config: ml_collections.ConfigDict, run, members):
        """The trained detector saved in the run directory ``run``."""
        return self.detector.restore(self, config, run, members)

    def module(self, section: ml_collections.ConfigDict, classes: tuple | None = None):
        """The Flax module of a section (and, for a method with ``labels``, of these classes)."""
        return self.build_model(section, classes) if self.labels else self.build_model(section)

    def window_model(self, config: ml_collections.ConfigDict, classes: tuple | None = None) -> WindowModel:
        """The :class:`WindowModel` the trainer sees, from the full config (``classes``: see :meth:`module`)."""
        if self.kind != "ensemble":
            raise ValueError(f"method {self.name!r} is not trained on windows (kind {self.kind!r})")
        section = config[self.section]
        module = self.module(section, classes)
        length = int(self.window_length(section))
        if length < 1:  # e.g. the classifier's frames=0 (the whole clip) before the clip length is known
            raise ValueError(f"{self.name}: the training window is {length} frames; settings that follow the data "
                             f"are filled in by Method.resolve_config(config), which must run before window_model")

        shapes = self.clip_inputs(config) if self.clip_inputs else {}

        def init(key, mels):  # two windows, with each clip input's shape (the parameters may depend on it)
            sample = {"windows": jnp.zeros((2, length, mels)), "labels": jnp.zeros((2,), jnp.int32),
                      **{name: jnp.zeros((2, *shape)) for name, shape in shapes.items()}}
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


register(Method(
    "lstm", "2-layer LSTM predicts log-mel frame t from the `frames` before it; score: mean next-frame MSE",
    "ensemble", "lstm", _lstm_config, SequenceDetector,
    build_model=lambda section: lstm_predictor.LSTMPredictor(section.hidden_size, section.num_layers),
    window_length=lambda section: section.frames + 1,  # the frames read, then the frame predicted
    flops_per_window=lstm_predictor.flops_per_window,
    errors=lambda module, variables, batch, train: (
        lstm_predictor.prediction_errors(module, variables, batch["windows"]), None),
    init_inputs=lambda sample: {"frames": sample["windows"][:, :-1]},
    test_settings={"hidden_size": 8, "frames": 3}))


def _gru_config():  # write-up Method III: 2-layer GRU encoder/decoder, hidden 256, Adam 1e-3, batch 64, 10 epochs
    return ml_collections.ConfigDict(dict(hidden_size=256, num_layers=2, frames=32, score_hop=16,
                                          train=train_section(10, 64, 1e-3, windows_per_clip=8)))


register(Method(
    "gru_ae", "2-layer GRU encoder + decoder reconstruct `frames`-frame sequences; score: mean reconstruction MSE",
    "ensemble", "gru_ae", _gru_config, SequenceDetector,
    build_model=lambda section: gru_autoencoder.GRUAutoencoder(section.hidden_size, section.num_layers),
    window_length=lambda section: section.frames,
    flops_per_window=gru_autoencoder.flops_per_window,
    errors=lambda module, variables, batch, train: (
        gru_autoencoder.reconstruction_errors(module, variables, batch["windows"]), None),
    test_settings={"hidden_size": 8, "frames": 4, "score_hop": 2}))


def _dense_config():  # DCASE 2020 baseline: 5 frames -> 640-d, 128x4 -> 8 -> 128x4 -> 640, BatchNorm; Adam, batch 512
    return ml_collections.ConfigDict(dict(
        frames=5, hidden_size=128, bottleneck=8, score_hop=1,
        train=train_section(100, 512, 1e-3, windows_per_clip=309, steps_per_call=20)))


register(Method(
    "dense_ae", "the DCASE 2020 baseline autoencoder on `frames` concatenated frames; score: mean reconstruction MSE",
    "ensemble", "dense_ae", _dense_config, SequenceDetector,
    build_model=lambda section: dense_ae.DenseAutoencoder(section.hidden_size, section.bottleneck),
    window_length=lambda section: section.frames,
    flops_per_window=dense_ae.flops_per_window,
    errors=lambda module, variables, batch, train: dense_ae.reconstruction_errors(
        module, variables, batch["windows"], train),
    init_inputs=lambda sample: {"frames": sample["windows"], "train": False},
    cpu_member_map="vmap",  # large batched matmuls: vmap 1.15-1.38x map at E=8 (2-vCPU AMD EPYC, 2 runs)
    test_settings={"hidden_size": 16, "bottleneck": 4}))


def _ocsvm_config():  # write-up Method I: clip vector -> StandardScaler -> OneClassSVM(rbf), gamma and nu tuned
    return ml_collections.ConfigDict(dict(
        gammas="scale,0.001,0.003,0.01,0.03,0.1", nus="0.01,0.05,0.1,0.2", select="label_free", holdout_fraction=0.2,
        pooling="mean"))


register(Method("vggish_ocsvm", "VGGish embeddings (TF-Hub or the Flax port) -> StandardScaler -> OneClassSVM",
                "clip_vector", "ocsvm", _ocsvm_config, OCSVMDetector, extra_sections=("vggish",),
                vector_source="vggish", test_settings={"gammas": "scale,0.01", "nus": "0.1,0.2"}))
register(Method("logmel_ocsvm", "per-bin log-mel mean and std -> StandardScaler -> OneClassSVM",
                "clip_vector", "ocsvm", _ocsvm_config, OCSVMDetector, vector_source="logmel",
                test_settings={"gammas": "scale,0.01", "nus": "0.1,0.2"}))


def _whole_clip_frames(config) -> None:  # id_classifier.frames=0: windows of the whole clip
    if int(config.id_classifier.frames) <= 0:
        config.id_classifier.frames = loading.feature_config(config).num_frames


def _classifier_config():  # a machine-id classifier with an angular-margin head (the field's leading family)
    return ml_collections.ConfigDict(dict(
        # dual: a spectrogram branch (2-D CNN over log-mel windows of `frames` frames) and a spectrum branch (1-D
        # convolutions over the whole clip's log magnitude spectrum, FFT bins pooled by spectrum_pool); or one of them
        # frames: the spectrogram branch's window; 0 (the default, as the references): the whole clip (the
        # features' frame count, 313 for 10 s), each clip twice per epoch (windows_per_clip=2); score_hop: the hop
        # of the scoring windows when frames is shorter than the clip
        frontend="dual", frames=0, score_hop=16, channels="16,32,64,128", stem_stride=2, embedding_dim=128,
        # frequency: each branch keeps where in frequency its features lie (max over time, flattened, dense), as
        # the reference systems; mean: global average over time and frequency
        pooling="frequency",
        squeeze_excite=True,  # squeeze-excitation in every residual block (and spectrum convolution), as ASDKit
        # asdkit (selected on the development world, experiments/select_id_classifier.py): the networks of ASDKit's
        # recipes (7x7 stem + max pool, two pre-activation blocks per stage; three wide strided 1-D convolutions over
        # the spectrum); compact: one residual block per stage after a 3x3 stem, 1-D residual blocks over the
        # spectrum (spectrum_channels, read by it only): asd_jax.models.id_classifier.BODIES
        body="asdkit",
        # spectrum_pool: FFT bins averaged per input bin (1: every bin, as ASDKit)
        spectrum_pool=1, spectrum_kernel=256, spectrum_stride=64, spectrum_channels="16,32,64,128",
        conv="auto",  # auto: convolutions as im2col matmuls on a CPU (much faster there), XLA's elsewhere
        # adacos with subclusters > 1: sub-cluster AdaCos; arcface: ArcFace's margin m and scale s; adaproj: AdaProj
        # (subclusters: each class's subspace dimension); adacos and adaproj set s themselves
        loss="adacos", margin=0.5, scale=30.0, subclusters=16,
        centres="trainable",  # or fixed (the class / sub-cluster centres stay at their random start)
        types="joint",  # machine_type=all (or a list): one model over every type ("joint") or one per type
        classes="auto", knn_k=1,  # auto: type x unit x attributes where clips have them, else type x unit
        # kmeans (selected on the development world: experiments/select_id_classifier.py) | knn | knn_domain |
        # smote | knn_rescale (asd_jax.methods.backends) or neg_log_prob;
        # score_normalise: standardise each unit's scores by its training clips' leave-one-out scores
        backend="kmeans", score_normalise=False,
        mixup_alpha=1.0, mixup_prob=0.5,  # lam ~ U(0, 1) on half the windows, as ASDKit's recipes
        time_masks=0, time_mask_frames=8, freq_masks=0, freq_mask_bins=16,
        train=train_section(20, 64, 1e-3, windows_per_clip=2)))


register(Method(
    "id_classifier", "a CNN tells the machine ids (sections, attributes) of normal clips apart with an ArcFace / "
    "AdaCos head; score: kNN cosine distance to the clip's own unit, or -log p(unit)",
    "ensemble", "id_classifier", _classifier_config, ClassifierDetector,
    build_model=lambda section, classes: id_classifier.build_module(section, *(classes or (None, None))),
    window_length=lambda section: section.frames,
    flops_per_window=id_classifier.flops_per_window,
    errors=id_classifier.classifier_errors,
    init_inputs=lambda sample: {"frames": sample["windows"], "train": False, "spectra": sample.get("spectra")},
    labels="class",
    clip_inputs=lambda config: ({"spectra": (features_lib.spectrum_bins(
        loading.feature_config(config), int(config.id_classifier.spectrum_pool)),)}
        if config.id_classifier.frontend in ("dual", "spectrum") else {}),
    joint_types=lambda section: section.types == "joint",
    resolve=_whole_clip_frames,
    supplemental=("machine", "noise"),  # 2025: clean clips as normal data, noise-only clips mixed in
    # 16 frames and 32-bin spectrum kernels: the smallest the asdkit body's stem and spectrum convolutions fit; no
    # squeeze-excitation: at these widths its gate has one hidden unit, which a ReLU can silence for a whole batch
    # (it is tested on its own in tests/models/test_id_classifier.py)
    test_settings={"frames": 16, "score_hop": 8, "channels": "4,8", "embedding_dim": 8, "subclusters": 2,
                   "spectrum_kernel": 32, "spectrum_stride": 8, "squeeze_excite": False}))


def _knn_config():  # clip vectors -> (StandardScaler) -> per-unit cosine kNN
    return ml_collections.ConfigDict(dict(k=1, standardize=True, pooling="mean"))


register(Method("vggish_knn", "VGGish embeddings -> StandardScaler -> cosine kNN to the clip's own unit",
                "clip_vector", "knn", _knn_config, KNNVectorDetector, extra_sections=("vggish",),
                vector_source="vggish"))
register(Method("logmel_knn", "per-bin log-mel mean and std -> StandardScaler -> cosine kNN to the clip's own unit",
                "clip_vector", "knn", _knn_config, KNNVectorDetector, vector_source="logmel"))
