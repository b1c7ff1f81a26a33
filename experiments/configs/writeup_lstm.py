"""The write-up's Method II: a 2-layer LSTM (hidden 128) predicts each log-mel frame from the 10 before it.

    python launch.py --config=experiments/configs/writeup_lstm.py --num_seeds=4
"""

from asd_jax import config as default_config


def get_config():
    config = default_config.get_config()
    config.method = "lstm"
    return config
