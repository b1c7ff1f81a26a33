"""The official DCASE 2020 Task 2 baseline: the dense autoencoder, 100 epochs, gamma-fit threshold.

    python launch.py --config=experiments/configs/dcase_baseline.py --data_dir=/data/dcase2020
"""

from asd_jax import config as default_config


def get_config():
    config = default_config.get_config()
    config.method = "dense_ae"
    config.threshold.policy = "gamma_fit"  # the baseline's decision threshold (0.9 quantile of a gamma fit)
    return config
