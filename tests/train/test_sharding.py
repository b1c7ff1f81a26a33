"""Members spread over devices (4 faked CPU devices) train as on one device, whatever their count: 4, 8 (two per
device), 6 (padded with 2 masked members), and 3 or 1 (fewer than the devices: each batch is split over them)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from asd_jax.config import get_config
from asd_jax.methods import registry
from asd_jax import distributed
from asd_jax.train import ensemble
members = int(sys.argv[2])
config = get_config()
config.lstm.hidden_size = 8
features = jnp.asarray(np.random.default_rng(0).standard_normal((6, 40, 16)).astype(np.float32))
model = registry.get("lstm").window_model(config)
train = ensemble.TrainConfig(epochs=2, batch_size=8, windows_per_clip=4, steps_per_call=2, member_map="vmap")
result = ensemble.train_ensemble(model, [ensemble.Member.create(seed) for seed in range(members)], features, train,
                                 None, progress=False)
layout = distributed.plan_layout(members, 8, "vmap")
leaf = result.states.params["lstm_1"]["w_hidden"]
print(json.dumps({"devices": jax.device_count(), "padded": layout.padded, "batch_axis": layout.batch_axis,
                  "spread": len(leaf.sharding.device_set), "losses": [r["loss"] for r in result.history]}))
np.save(sys.argv[1], np.asarray(leaf))
"""


def _train(tmp_path, devices: int, members: int):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = tmp_path / f"params_{devices}_{members}.npy"
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(out), str(members)], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.mark.parametrize("members, padded, batch_axis", [
    (4, 4, False), pytest.param(1, 1, True, marks=pytest.mark.slow),
    pytest.param(8, 8, False, marks=pytest.mark.slow), pytest.param(6, 8, False, marks=pytest.mark.slow),
    pytest.param(3, 3, True, marks=pytest.mark.slow)])
def test_members_over_four_devices_match_one_device(tmp_path, members, padded, batch_axis):
    info, sharded = _train(tmp_path, 4, members)
    assert (info["devices"], info["padded"], info["batch_axis"]) == (4, padded, batch_axis)
    assert info["spread"] == (4 if batch_axis else min(4, padded))  # every device holds part of the work
    single_info, single = _train(tmp_path, 1, members)
    assert single_info["devices"] == 1 and sharded.shape == single.shape == (members, 8, 32)
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info["losses"], single_info["losses"], rtol=1e-4)
