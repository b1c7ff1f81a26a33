"""Members spread over devices (faked on CPU) train exactly as on one device."""

import os
import subprocess
import sys

import numpy as np

_SCRIPT = r"""
import sys
import jax, jax.numpy as jnp, numpy as np
from asd_jax.config import get_config
from asd_jax.methods import registry
from asd_jax.train import ensemble
config = get_config()
config.lstm.hidden_size = 8
features = jnp.asarray(np.random.default_rng(0).standard_normal((6, 40, 16)).astype(np.float32))
model = registry.get("lstm").window_model(config)
members = [ensemble.Member.create(seed) for seed in range(4)]
train = ensemble.TrainConfig(epochs=2, batch_size=8, windows_per_clip=4, steps_per_call=2)
states = ensemble.train_ensemble(model, members, features, train, None, progress=False).states
leaf = states.params["lstm_1"]["w_hidden"]
print(jax.device_count(), type(leaf.sharding).__name__, len(leaf.sharding.device_set))
np.save(sys.argv[1], np.asarray(leaf))
"""


def _train(tmp_path, devices: int):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = tmp_path / f"params_{devices}.npy"
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], env=env, capture_output=True, text=True,
                            check=True)
    return result.stdout.split(), np.load(out)


def test_members_are_sharded_across_devices_and_match_one_device(tmp_path):
    (count, kind, spread), sharded = _train(tmp_path, 4)
    assert (count, kind, spread) == ("4", "NamedSharding", "4")
    (count, _, spread), single = _train(tmp_path, 1)
    assert (count, spread) == ("1", "1")
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)
