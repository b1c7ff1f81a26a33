"""--mode=benchmark --sweep: the sweep as one program per group against its members as separate processes, in one
JSON; the separate runs train the same members (same mean AUC)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import compile_cache_env
from tests.test_sweep import write_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # about a minute: `make test-slow` runs it
def test_benchmark_of_a_sweep_times_both_ways_and_gets_the_same_figures(tmp_path, tiny_dataset, jax_compile_cache):
    path = write_sweep(tmp_path, "tiny", tiny_dataset, seeds=(0,))
    output, workdir = tmp_path / "bench_sweep.json", tmp_path / "bench"
    command = [sys.executable, "launch.py", "--mode=benchmark", f"--sweep={path}", f"--workdir={workdir}",
               f"--output={output}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **compile_cache_env(jax_compile_cache)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["members"] == 4 and len(report["groups"]) == 2  # hidden {8, 12} x lr {1e-3, 3e-3}
    assert all(group["members"] == 2 and group["compiles"] == 1 for group in report["groups"])
    assert len(report["separate"]) == 4 and len({row["member"] for row in report["separate"]}) == 4
    assert report["together_s"] > 0 and all(row["seconds"] > 0 for row in report["separate"])
    assert report["separate_s"] == pytest.approx(sum(row["seconds"] for row in report["separate"]))
    assert report["speedup"] == pytest.approx(report["separate_s"] / report["together_s"])
    for row in report["separate"]:  # each separate process trained the member the sweep trained
        assert row["mean_auc"] == pytest.approx(row["mean_auc_together"], abs=1e-6)
    assert report["max_mean_auc_difference"] <= 1e-6
    # both ways left ordinary run directories: the sweep's tables and one run per member
    assert (workdir / "together" / "sweep.json").is_file()
    assert sorted(os.listdir(workdir / "separate")) == sorted(f"{i:03d}_{row['member']}"
                                                               for i, row in enumerate(report["separate"]))
    assert report["cpu"] and report["device"].startswith("cpu")
