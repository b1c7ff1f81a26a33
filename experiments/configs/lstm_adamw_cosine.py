"""The LSTM predictor with AdamW, gradient clipping and a warm-up + cosine learning-rate schedule.

    python launch.py --config=experiments/configs/lstm_adamw_cosine.py
"""

from asd_jax import config as default_config


def get_config():
    config = default_config.get_config()
    config.method = "lstm"
    train = config.lstm.train
    train.optimizer, train.weight_decay, train.grad_clip_norm = "adamw", 1e-4, 1.0
    train.schedule, train.warmup_epochs = "warmup_cosine", 1.0
    return config
