"""asd_jax entry point: flags -> config -> the mode's job (train, sweep, synth, score, benchmark).

  python launch.py --method=gru_ae                       # train + evaluate on the embedded synthetic slider data
  python launch.py --method=lstm --data_dir=/data/dcase  # the real DCASE 2020 Task 2 dev set
  python launch.py --mode=synth --data_dir=DIR           # write a synthetic slide-rail data set
  python launch.py --mode=score --workdir=RUN a.wav b.wav
  python launch.py --mode=benchmark --method=lstm --ensemble_sizes=1,8 --output=bench.json
  python launch.py --mode=sweep --sweep=experiments/sweeps/smoke.py --workdir=runs/smoke
  python launch.py --config=experiments/configs/dcase_baseline.py --epochs=20

--config is a config file (default asd_jax/config.py; variants in experiments/configs/); any value can be set with
--config.<path>=<value>, e.g. --config.gru_ae.hidden_size=128. The shortcut flags below are applied after those.
"""

import json
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from asd_jax import bench, bench_sweep, distributed, pipeline, scoring, sweep, workdir
from asd_jax import config as config_lib
from asd_jax.data import loading
from asd_jax.data.audio import AudioError
from asd_jax.data.dcase import DatasetError
from asd_jax.embeddings.vggish import VGGishUnavailableError
from asd_jax.methods import registry
from asd_jax.runlock import LockHeldError
from asd_jax.train.checkpoints import CheckpointError

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(config_lib.__file__)), "config.py")
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file with a get_config() (default asd_jax/config.py; "
                                "variants in experiments/configs/).")
flags.DEFINE_string("method", None, f"One of {', '.join(registry.names())} (benchmark: a comma list).")
flags.DEFINE_enum("mode", None, config_lib.MODES, "train (default), sweep, synth, score or benchmark.")
flags.DEFINE_string("sweep", None, "--mode=sweep: a sweep file, experiments/sweeps/<name>.py.")
flags.DEFINE_string("data_dir", None, "DCASE data root; empty: the synthetic slide-rail set.")
flags.DEFINE_string("test_data_dir", None, "Take the test clips from this folder instead of --data_dir.")
flags.DEFINE_string("machine_type", None, "Machine type folder, e.g. slider.")
flags.DEFINE_string("machine_ids", None, "Comma-separated machine ids, e.g. 00,02; empty: all.")
flags.DEFINE_string("dcase_edition", None, "dcase2020 ... dcase2026: the scoring protocol; empty: detected from the names.")
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
flags.DEFINE_bool("distributed", False, "One process of a multi-process (multi-host) run: jax.distributed.initialize "
                  "with the three flags below, or from the cluster's environment (SLURM, Open MPI, TPU) where absent; "
                  "--mode=train or sweep. See asd_jax/distributed.py.")
flags.DEFINE_string("coordinator_address", None, "--distributed: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "--distributed: how many processes take part.")
flags.DEFINE_integer("process_id", None, "--distributed: this process's id, 0 .. num_processes - 1.")

FLAGS = flags.FLAGS

# flag -> config path; "{method}" is the chosen method's section.
_SHORTCUTS = {
    "method": "method", "mode": "mode", "data_dir": "data_dir", "test_data_dir": "test_data_dir",
    "machine_type": "machine_type", "machine_ids": "machine_ids", "dcase_edition": "dcase_edition", "workdir": "workdir", "num_seeds": "num_seeds",
    "seed": "seed", "epochs": "{method}.train.epochs", "batch_size": "{method}.train.batch_size",
    "learning_rate": "{method}.train.learning_rate", "threshold_policy": "threshold.policy", "output": "output",
    "ensemble_sizes": "benchmark.ensemble_sizes", "vggish_handle": "vggish.handle",
    "vggish_backend": "vggish.backend", "ocsvm_select": "ocsvm.select", "cache_dir": "cache_dir",
    "progress": "progress", "sweep": "sweep",
}


def resolve_config():
    """(config, axes): the config with every given flag applied on top of --config and its overrides, and the swept
    values of a plain run (``--learning_rate=1e-3,3e-4`` makes one member per rate)."""
    config = FLAGS.config
    mode = FLAGS.mode or config.mode
    if mode == "sweep" or (mode == "benchmark" and FLAGS.sweep):  # the sweep file's get_config() is the base
        if any(arg.startswith("--config") for arg in sys.argv[1:]):
            raise app.UsageError(f"--mode={mode} --sweep takes its config from the sweep file's get_config(): put "
                                 "--config changes there (shortcut flags such as --data_dir and --workdir still apply)")
        config = sweep.load(FLAGS.sweep or "").get_config()
    axes = {}
    with config.unlocked():
        if FLAGS.method is not None:
            config.method = FLAGS.method
        methods = loading.split_list(config.method)
        unknown = [m for m in methods if m not in registry.names()]
        if unknown or not methods or (len(methods) > 1 and mode != "benchmark"):
            raise app.UsageError(f"--method={config.method}: choose one of {', '.join(registry.names())} "
                                 "(a comma list only with --mode=benchmark)")
        for flag, path in _SHORTCUTS.items():
            value = getattr(FLAGS, flag)
            if value is None or flag == "method":
                continue
            if "{method}" in path:
                targets = [registry.get(m) for m in methods]
                if any(m.kind != "ensemble" for m in targets):
                    raise app.UsageError(f"--{flag} applies to the methods trained on windows "
                                         f"({', '.join(registry.names('ensemble'))})")
                for target in targets:
                    values = _values(flag, value)
                    node = config[target.section].train
                    node[path.rsplit(".", 1)[-1]] = values[0]
                    if len(values) > 1:
                        axes[f"{target.section}.{path.split('.', 1)[1]}"] = values
                continue
            *parents, leaf = path.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = value
    return config, axes


def _values(flag: str, value):
    """A shortcut's value(s): ``--learning_rate`` takes a comma list."""
    if flag != "learning_rate":
        return [value]
    try:
        return [float(v) for v in loading.split_list(value)]
    except ValueError:
        raise app.UsageError(f"--learning_rate={value}: give a number or a comma list of numbers") from None


def run(config, files: list[str] | None = None, axes: dict | None = None):
    """Run ``config.mode``; ``files`` are the clips of ``--mode=score``, ``axes`` the swept values of a plain run
    (``--learning_rate=a,b``)."""
    if distributed.multiprocess():
        if config.mode not in ("train", "sweep"):
            raise ValueError(f"--distributed runs --mode=train and --mode=sweep; run --mode={config.mode} as one "
                             "process")
        distributed.check_same(json.dumps(config.to_dict(), sort_keys=True, default=str), "settings")
    if config.mode == "train":
        return pipeline.train_and_evaluate(config, axes)
    if config.mode == "sweep":
        return sweep.run(config)
    if config.mode == "synth":
        return loading.synthesize(config)
    if config.mode == "score":
        return scoring.score_files(workdir.default_workdir(config), files or [], config.output, config.progress)
    if config.mode == "benchmark":
        return bench_sweep.run(config) if config.sweep else bench.run(config)
    raise ValueError(f"unknown --mode={config.mode!r}; choose one of {', '.join(config_lib.MODES)}")


def main(argv):
    if not FLAGS["verbosity"].present:  # absl's INFO lines (backend probing and the like) only on request
        absl_logging.set_verbosity(absl_logging.WARNING)
    if FLAGS.distributed:  # before anything starts a JAX backend; a failing process ends every process
        with distributed.fail_together():
            try:
                distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
            except ValueError as error:  # a flag out of range, or no cluster environment to take the rest from
                sys.exit(f"error: --distributed: {error}")
            return _main(argv)
    return _main(argv)


def _main(argv):
    try:
        config, axes = resolve_config()
        run(config, files=argv[1:], axes=axes)
    except (DatasetError, AudioError, VGGishUnavailableError, CheckpointError, LockHeldError, FileNotFoundError,
            ValueError) as error:
        if os.environ.get("ASD_JAX_TRACEBACK"):
            raise
        sys.exit(f"error: {error}\n(set ASD_JAX_TRACEBACK=1 for the full traceback)")


if __name__ == "__main__":
    app.run(main)
