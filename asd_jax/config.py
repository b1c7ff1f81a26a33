"""The default config of every run (``--config`` file default), following the write-up and the DCASE 2020 baseline.

One :class:`ml_collections.ConfigDict` holds the shared settings and one section per method, taken from the method
registry (:mod:`asd_jax.methods.registry`). Variants live in ``experiments/configs/<name>.py``: each imports this
module, changes what it needs and returns the result from its own ``get_config()``, as flax's examples do.
``launch.py`` exposes the common settings as flags and everything as ``--config.<path>=value``; the resolved config
is saved into every run dir. Every setting here is read by the code (:func:`check` refuses the combinations that
would leave one unread).
"""

from __future__ import annotations

import ml_collections

from asd_jax.methods import registry
from asd_jax.train import optim

MODES = ("train", "synth", "score", "benchmark", "sweep")
# run-level settings: where and how a run executes, not what it computes (a resumed run may change them)
RUN_LEVEL = ("mode", "workdir", "output", "progress", "num_workers", "cache_dir", "sweep")


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "gru_ae"
    config.mode = "train"
    config.data_dir = ""  # empty: the embedded synthetic slide-rail set, generated once and cached
    config.machine_type = "slider"  # "all" (every type under data_dir) or a comma list: one detector per type
    config.machine_ids = ""  # comma-separated ids; empty: all found
    config.test_data_dir = ""  # empty: test clips come from data_dir too
    config.ground_truth_csv = ""  # labels for 2020 eval-set names (id_XX_NNNNNNNN.wav)
    config.dcase_edition = ""  # dcase2020 ... dcase2026: the scoring protocol; empty: detected from the file names
    # raw MIMII (<type>/id_XX/{normal,abnormal}/): normals per id that go to test; None: DCASE's rule
    # min(anomalies, normals // 2)
    config.mimii_test_normals = ml_collections.config_dict.placeholder(int)
    config.workdir = ""  # empty: runs/<method>_<machine_type>
    config.cache_dir = ""  # empty: $ASD_JAX_CACHE_DIR or ~/.cache/asd_jax
    config.num_workers = 0  # feature extraction processes; 0: one per core
    config.seed = 0  # first member seed: model initialisation and the windows each step draws
    config.num_seeds = 1  # ensemble members (one seed each), trained together in one compiled program
    config.data_seed = 0  # which normal training clips are held out (shared by all members of a run)
    config.val_fraction = 0.1  # share of each machine id's normal training clips held out for thresholds (never
    # trained on), raised towards 20 clips while five sixths still train (data.loading.holdout_count)
    # DCASE 2025 supplemental/ clips: "auto" trains on the kinds the method declares (Method.supplemental), "none"
    # on none; results.json says how many were found and used
    config.supplemental = "auto"
    # the SNR range (dB, "low,high"; empty: -5,5) at which noise-only supplemental clips are mixed into normal
    # training clips for a method that takes them as augmentation (asd_jax.data.mixing)
    config.supplemental_noise_snr_db = ""
    config.progress = True
    config.output = ""  # JSON written by --mode=score and --mode=benchmark
    config.sweep = ""  # --mode=sweep: experiments/sweeps/<name>.py

    # duration_s: every clip is tiled or cropped to this length; 0: the longest training clip's (DCASE 2020's
    # ToyCar lasts 11 s, 2023's ToyCar and ToyTrain 12 s, the rest 10 s), saved resolved in the run's config
    config.features = ml_collections.ConfigDict(dict(
        sample_rate=16_000, duration_s=0.0, n_fft=1024, hop_length=512, n_mels=128, power=2.0,
        # scale=linear: the STFT bins between fmin and fmax (fmax 0: the Nyquist frequency) instead of n_mels mel
        # bands, e.g. fmin=200, fmax=8000 as the reference id classifiers (asd_jax.data.features.FeatureConfig)
        scale="mel", fmin=0.0, fmax=0.0))
    # a multichannel file becomes mono by "mean" (channel average), one channel index as a string, e.g. "0" (what
    # DCASE 2020 took from MIMII), or "auto": channel 0 of DCASE 2026's two-channel clips (as its baseline), the
    # average otherwise (raw 8-channel MIMII)
    config.features.channel = "auto"
    config.threshold = ml_collections.ConfigDict(dict(policy="normal_quantile", quantile=0.9, value=0.0))
    # one threshold per machine id / section (and domain, where it has held-out normals) from its own held-out
    # normals; False: one global threshold over all of them
    config.threshold.per_unit = True
    config.vggish = ml_collections.ConfigDict(dict(
        handle="https://tfhub.dev/google/vggish/1", backend="tf", batch_size=16))
    for method in registry.methods():
        if method.section not in config:
            config[method.section] = method.default_config()

    # layout: dcase2020 (slide rail, machine ids 00-06), dcase2023 (slide rail, section 00, source + shifted target
    # domain) or dcase2025 (the DCASE-like world: fan, slider and valve, subtle attributes, supplemental clips);
    # size: default (small, quick) or dcase_dev (the real dev set's clip counts)
    config.synthetic = ml_collections.ConfigDict(dict(seed=0, snr_db=0.0, layout="dcase2020", size="default"))
    # member_maps: how a program of E > 1 members maps over them (auto, vmap, map; a comma list compares them)
    config.benchmark = ml_collections.ConfigDict(dict(ensemble_sizes="1,8", num_clips=64, warmup_calls=2,
                                                      timed_calls=5, member_maps="auto"))
    return config


SHARED_SECTIONS = ("features", "threshold")  # read by every method that trains
MODE_SECTIONS = {"synth": ("synthetic",), "benchmark": ("benchmark",)}


def sections_read(config) -> set[str]:
    """The config sections a run of ``config.method`` reads (plus ``synthetic`` when the default data is used)."""
    method = registry.get(config.method)
    sections = {*SHARED_SECTIONS, *method.reads}
    if not config.data_dir:
        sections.add("synthetic")
    return sections


def is_read(config, path: str) -> bool:
    """Whether a setting is read by a run of ``config`` (top-level settings always are; a section only when the
    method reads it)."""
    head = path.split(".")[0]
    if head not in config:
        return False
    if not isinstance(config[head], ml_collections.ConfigDict):
        return True
    return head in sections_read(config) or head in MODE_SECTIONS.get(config.mode, ())


def check(config) -> None:
    """Refuse a config that names an unknown method or holds a setting the run would not read."""
    method = registry.get(config.method)
    if config.mode not in MODES:
        raise ValueError(f"--mode={config.mode!r}: choose one of {', '.join(MODES)}")
    if method.kind == "ensemble":
        optim.check(config[method.section].train, f"{method.section}.train")
    if config.num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1; got {config.num_seeds}")
