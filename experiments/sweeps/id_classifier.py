"""The id classifier's options on the default synthetic data: plain ArcFace, ArcFace with mixup and SpecAugment-style
masks, and sub-cluster AdaCos; 2 seeds each (each setting is its own group: augmentation and loss are static).

    python launch.py --mode=sweep --sweep=experiments/sweeps/id_classifier.py --workdir=runs/id_classifier

sweep.json selects by the label-free criterion (lowest mean kNN score of the held-out normal clips) and shows the
best setting by test AUC beside it, labelled test-tuned.
"""

from asd_jax import config as default_config
from asd_jax import experiment

SEEDS = [0, 1]


def get_config():
    config = default_config.get_config()
    config.method = "id_classifier"
    return config


def get_sweep():
    return experiment.chain(
        experiment.product({"id_classifier.loss": ["arcface"], "seed": SEEDS}),
        experiment.product({"id_classifier.mixup_alpha": [0.2], "id_classifier.time_masks": [2],
                            "id_classifier.freq_masks": [2], "seed": SEEDS}),
        experiment.product({"id_classifier.loss": ["adacos"], "id_classifier.subclusters": [4], "seed": SEEDS}),
    )
