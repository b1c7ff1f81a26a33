"""The write-up's comparison as one sweep: every method on the same data, 3 seeds each, honest and test-tuned
figures side by side (sweep.md: AUC/pAUC mean ± std over seeds, anomaly F1 at the label-free threshold and at the
F1-best threshold on the test labels, marked TEST-TUNED).

    python launch.py --mode=sweep --sweep=experiments/sweeps/writeup.py --workdir=runs/writeup [--data_dir=...]

Each method is its own group (its own shapes); the three seeds of a window method train in one compiled program,
the OC-SVM runs once per seed (its seed only changes the hold-out split of its label-free grid selection). VGGish
needs its model (a TF-Hub handle or a local SavedModel, see README): add "vggish_ocsvm" to METHODS where it is at
hand. Methods' held-out errors are on different scales, so sweep.json selects a setting per method.
"""

from asd_jax import config as default_config
from asd_jax import experiment

METHODS = ["lstm", "gru_ae", "dense_ae", "logmel_ocsvm"]
SEEDS = [0, 1, 2]


def get_config():
    return default_config.get_config()


def get_sweep():
    return experiment.product({"method": METHODS, "seed": SEEDS})
