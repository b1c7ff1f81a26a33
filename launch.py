"""asd_jax entry point: flags -> config -> asd_jax.pipeline.run(config).

  python launch.py --method=gru_ae                       # train + evaluate on the embedded synthetic slider data
  python launch.py --method=lstm --data_dir=/data/dcase  # the real DCASE 2020 Task 2 dev set
  python launch.py --mode=synth --data_dir=DIR           # write a synthetic slide-rail data set
  python launch.py --mode=score --workdir=RUN a.wav b.wav
  python launch.py --mode=benchmark --method=lstm --ensemble_sizes=1,8 --output=bench.json

Any config value can be set with --config.<path>=<value> (see asd_jax/config.py), e.g. --config.gru_ae.hidden_size=128.
"""

import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from asd_jax import config as config_lib

config_flags.DEFINE_config_dict("config", config_lib.get_config(), "Full configuration (asd_jax/config.py).")
flags.DEFINE_string("method", None, f"One of {', '.join(config_lib.METHODS)} (benchmark: a comma list).")
flags.DEFINE_enum("mode", None, config_lib.MODES, "train (default), synth, score or benchmark.")
flags.DEFINE_string("data_dir", None, "DCASE data root; empty: the synthetic slide-rail set.")
flags.DEFINE_string("test_data_dir", None, "Take the test clips from this folder instead of --data_dir.")
flags.DEFINE_string("machine_type", None, "Machine type folder, e.g. slider.")
flags.DEFINE_string("machine_ids", None, "Comma-separated machine ids, e.g. 00,02; empty: all.")
flags.DEFINE_string("workdir", None, "Run directory (default runs/<method>_<machine_type>); reused runs resume.")
flags.DEFINE_integer("num_seeds", None, "Ensemble members (one seed each) trained together.")
flags.DEFINE_integer("seed", None, "First seed.")
flags.DEFINE_integer("epochs", None, "Training epochs of the chosen method.")
flags.DEFINE_integer("batch_size", None, "Batch size of the chosen method.")
flags.DEFINE_string("learning_rate", None, "Learning rate, or a comma list: one member per (seed, rate).")
flags.DEFINE_enum("threshold_policy", None, ["normal_quantile", "gamma_fit", "fixed", "oracle_f1"],
                  "How the decision threshold is chosen (oracle_f1 is test-tuned and labelled so).")
flags.DEFINE_string("output", None, "JSON output of --mode=score / --mode=benchmark.")
flags.DEFINE_string("ensemble_sizes", None, "Benchmark: comma list of ensemble sizes.")
flags.DEFINE_string("vggish_handle", None, "TF-Hub handle or local SavedModel folder of VGGish.")
flags.DEFINE_enum("vggish_backend", None, ["tf", "flax"], "Run VGGish in TensorFlow or in its Flax port.")
flags.DEFINE_enum("ocsvm_select", None, ["label_free", "oracle"], "OC-SVM grid selection (oracle: test-tuned).")
flags.DEFINE_string("cache_dir", None, "Cache root for features and the synthetic data set.")
flags.DEFINE_bool("progress", None, "Show progress bars.")

FLAGS = flags.FLAGS

# flag -> config path; "{method}" is the chosen method's section.
_SHORTCUTS = {
    "method": "method", "mode": "mode", "data_dir": "data_dir", "test_data_dir": "test_data_dir",
    "machine_type": "machine_type", "machine_ids": "machine_ids", "workdir": "workdir", "num_seeds": "num_seeds",
    "seed": "seed", "epochs": "{method}.train.epochs", "batch_size": "{method}.train.batch_size",
    "learning_rate": "{method}.train.learning_rate", "threshold_policy": "threshold.policy", "output": "output",
    "ensemble_sizes": "benchmark.ensemble_sizes", "vggish_handle": "vggish.handle",
    "vggish_backend": "vggish.backend", "ocsvm_select": "ocsvm.select", "cache_dir": "cache_dir",
    "progress": "progress",
}


def resolve_config():
    """The config with every flag that was given applied on top of --config.* overrides."""
    config = FLAGS.config
    with config.unlocked():
        for flag, path in _SHORTCUTS.items():
            value = getattr(FLAGS, flag)
            if value is None:
                continue
            if "{method}" in path:
                if config.method not in config_lib.SEQUENCE_METHODS:
                    raise app.UsageError(f"--{flag} applies to the sequence methods (lstm, gru_ae, dense_ae)")
                path = path.format(method=config.method)
            *parents, leaf = path.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = str(value) if leaf == "learning_rate" else value
    methods = config_lib.split_list(config.method)
    unknown = [m for m in methods if m not in config_lib.METHODS]
    if unknown or not methods or (len(methods) > 1 and config.mode != "benchmark"):
        raise app.UsageError(f"--method={config.method}: choose one of {', '.join(config_lib.METHODS)} "
                             "(a comma list only with --mode=benchmark)")
    return config


def main(argv):
    if not FLAGS["verbosity"].present:  # absl's INFO lines (backend probing and the like) only on request
        absl_logging.set_verbosity(absl_logging.WARNING)
    from asd_jax import pipeline
    from asd_jax.data.audio import AudioError
    from asd_jax.data.dcase import DatasetError
    from asd_jax.embeddings.vggish import VGGishUnavailableError

    try:
        pipeline.run(resolve_config(), files=argv[1:])
    except (DatasetError, AudioError, VGGishUnavailableError, FileNotFoundError, ValueError) as error:
        if os.environ.get("ASD_JAX_TRACEBACK"):
            raise
        sys.exit(f"error: {error}\n(set ASD_JAX_TRACEBACK=1 for the full traceback)")


if __name__ == "__main__":
    app.run(main)
