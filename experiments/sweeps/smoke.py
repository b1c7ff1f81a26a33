"""The smallest real sweep (run by the checks): lstm on the default synthetic data, 1 epoch.

hidden_size {16, 32} x learning rate {1e-3, 3e-3} x seeds {0, 1}: 2 groups (one per hidden size, one compiled
program each), 4 settings, 8 members.

    python launch.py --mode=sweep --sweep=experiments/sweeps/smoke.py --workdir=runs/smoke
"""

from asd_jax import config as default_config
from asd_jax import experiment


def get_config():
    config = default_config.get_config()
    config.method = "lstm"
    config.lstm.train.epochs = 1
    return config


def get_sweep():
    return experiment.product({
        "lstm.hidden_size": [16, 32],
        "lstm.train.learning_rate": [1e-3, 3e-3],
        "seed": [0, 1],
    })
