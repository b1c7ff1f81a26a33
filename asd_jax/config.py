"""Typed defaults for every run, following the write-up and the DCASE 2020 baseline.

One :class:`ml_collections.ConfigDict` holds the shared settings and one section per method; ``launch.py`` exposes the
common ones as flags and everything else as ``--config.<path>=value``. The resolved config is saved into every run dir.
"""

from __future__ import annotations

import ml_collections

METHODS = ("lstm", "gru_ae", "dense_ae", "vggish_ocsvm", "logmel_ocsvm")
SEQUENCE_METHODS = ("lstm", "gru_ae", "dense_ae")
MODES = ("train", "synth", "score", "benchmark")


def _train(epochs: int, batch_size: int, learning_rate: str, windows_per_clip: int, steps_per_call: int = 10):
    """Optimisation settings of one sequence method.

    An epoch is ``windows_per_clip`` windows per training clip, drawn at random positions (with replacement) inside
    the compiled step; ``steps_per_call`` steps run per dispatch (``lax.scan``).
    """
    return ml_collections.ConfigDict(dict(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, windows_per_clip=windows_per_clip,
        steps_per_call=steps_per_call, optimizer="adam", grad_clip_norm=0.0, checkpoint_every_epochs=1))


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "gru_ae"
    config.mode = "train"
    config.data_dir = ""  # empty: the embedded synthetic slide-rail set, generated once and cached
    config.machine_type = "slider"
    config.machine_ids = ""  # comma-separated ids; empty: all found
    config.test_data_dir = ""  # empty: test clips come from data_dir too
    config.ground_truth_csv = ""  # labels for 2020 eval-set names (id_XX_NNNNNNNN.wav)
    config.workdir = ""  # empty: runs/<method>_<machine_type>
    config.cache_dir = ""  # empty: $ASD_JAX_CACHE_DIR or ~/.cache/asd_jax
    config.num_workers = 0  # feature extraction processes; 0: one per core
    config.seed = 0
    config.num_seeds = 1  # ensemble members (one seed each), trained together in one compiled program
    config.val_fraction = 0.1  # normal training clips held out per machine id, for thresholds (never trained on)
    config.progress = True
    config.output = ""  # JSON written by --mode=score and --mode=benchmark

    config.features = ml_collections.ConfigDict(dict(
        sample_rate=16_000, duration_s=10.0, n_fft=1024, hop_length=512, n_mels=128, power=2.0))

    config.threshold = ml_collections.ConfigDict(dict(policy="normal_quantile", quantile=0.9, value=0.0))

    # Write-up Method II: a 2-layer LSTM predicts frame t from frames t-10..t-1.
    config.lstm = ml_collections.ConfigDict(dict(
        hidden_size=128, num_layers=2, context=10, score_hop=1,
        train=_train(epochs=10, batch_size=256, learning_rate="1e-3", windows_per_clip=32)))
    # Write-up Method III: 2-layer GRU encoder/decoder, hidden 256, Adam 1e-3, batch 64, 10 epochs.
    config.gru_ae = ml_collections.ConfigDict(dict(
        hidden_size=256, num_layers=2, sequence_length=32, score_hop=16,
        train=_train(epochs=10, batch_size=64, learning_rate="1e-3", windows_per_clip=8)))
    # DCASE 2020 baseline: 5 frames -> 640-d, dense 128x4 -> 8 -> 128x4 -> 640, BatchNorm + ReLU; Adam, batch 512.
    config.dense_ae = ml_collections.ConfigDict(dict(
        frames=5, hidden_size=128, bottleneck=8, score_hop=1,
        train=_train(epochs=100, batch_size=512, learning_rate="1e-3", windows_per_clip=309, steps_per_call=20)))

    # Write-up Method I: clip embedding -> StandardScaler -> OneClassSVM(rbf), gamma and nu tuned.
    config.ocsvm = ml_collections.ConfigDict(dict(
        gammas="scale,0.001,0.003,0.01,0.03,0.1", nus="0.01,0.05,0.1,0.2", select="label_free", holdout_fraction=0.2,
        pooling="mean"))
    config.vggish = ml_collections.ConfigDict(dict(
        handle="https://tfhub.dev/google/vggish/1", backend="tf", batch_size=16))

    config.synthetic = ml_collections.ConfigDict(dict(seed=0, snr_db=0.0))
    config.benchmark = ml_collections.ConfigDict(dict(ensemble_sizes="1,8", num_clips=64, warmup_calls=2,
                                                      timed_calls=5))
    return config


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [item.strip() for item in str(text).split(",") if item.strip()]
