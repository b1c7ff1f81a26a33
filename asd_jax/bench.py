"""Training-step throughput benchmark (not a test): ``python launch.py --mode=benchmark``.

Times the real compiled training call (``ensemble.make_train_fn``: jit + vmap over members + scan over steps, windows
gathered on the device) on random features of the real shapes, after warm-up, for every method and ensemble size,
and compares the achieved FLOP rate with a float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.config import split_list
from asd_jax.methods.sequence import build_model
from asd_jax.train import ensemble


PEAK_SIZES = (1024, 2048, 4096)


def matmul_peak(sizes: tuple[int, ...] = PEAK_SIZES, repeats: int = 5) -> float:
    """FLOP/s of large jitted float32 square matmuls, the best over ``sizes`` and ``repeats``: the peak the
    training step is compared with (taking the best makes the share of peak a conservative figure)."""
    matmul = jax.jit(lambda x, y: x @ y)
    best = 0.0
    for size in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
        matmul(a, b).block_until_ready()
        seconds = min(_timed(lambda: matmul(a, b).block_until_ready()) for _ in range(repeats))
        best = max(best, 2.0 * size**3 / seconds)
    return best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cost_flops(compiled) -> float | None:
    """FLOPs XLA counts for one compiled call, if it reports them."""
    try:
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        return float(analysis["flops"]) if analysis and "flops" in analysis else None
    except Exception:  # noqa: BLE001 - cost analysis is optional per backend
        return None


def analytic_flops_per_window(method: str, config, mels: int) -> float:
    """Forward + backward FLOPs of one window (3x the forward matmul FLOPs; elementwise work not counted)."""
    section = config[method]
    if method == "lstm":
        hidden, steps = section.hidden_size, section.context
        inputs = [mels] + [hidden] * (section.num_layers - 1)
        forward = sum(steps * 2 * (i + hidden) * 4 * hidden for i in inputs) + 2 * hidden * mels
    elif method == "gru_ae":
        hidden, steps = section.hidden_size, section.sequence_length
        encoder = [mels] + [hidden] * (section.num_layers - 1)
        decoder = [hidden] * section.num_layers
        forward = sum(steps * 2 * (i + hidden) * 3 * hidden for i in encoder + decoder) + steps * 2 * hidden * mels
    elif method == "dense_ae":
        widths = [section.frames * mels] + [section.hidden_size] * 4 + [section.bottleneck] + \
            [section.hidden_size] * 4 + [section.frames * mels]
        forward = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    else:
        raise ValueError(f"no benchmark for {method!r}: the benchmark covers lstm, gru_ae and dense_ae")
    return 3.0 * forward


def bench_one(method: str, config, ensemble_size: int, features: jax.Array) -> dict:
    model = build_model(method, config)
    train = config[method].train
    steps = int(train.steps_per_call)
    members = ensemble.members_grid(range(ensemble_size), [1e-3])
    states = ensemble.init_states(model, members, features.shape[-1])
    states, features = ensemble.place(states, features)
    train_fn = ensemble.make_train_fn(model, train.batch_size, steps)
    started = time.perf_counter()
    compiled = train_fn.lower(states, features).compile()
    compile_time = time.perf_counter() - started
    for _ in range(config.benchmark.warmup_calls):
        states, losses = compiled(states, features)
    jax.block_until_ready(losses)
    times = []
    for _ in range(config.benchmark.timed_calls):
        started = time.perf_counter()
        states, losses = compiled(states, features)
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - started)
    step_time = float(np.median(times)) / steps
    windows = train.batch_size * ensemble_size
    analytic = analytic_flops_per_window(method, config, features.shape[-1])
    counted = _cost_flops(compiled)
    return {"method": method, "ensemble_size": ensemble_size, "batch_size": int(train.batch_size),
            "steps_per_call": steps, "step_time_s": step_time, "compile_time_s": compile_time,
            "windows_per_s_total": windows / step_time, "windows_per_s_per_member": train.batch_size / step_time,
            "flops_per_window": analytic,
            "xla_flops_per_window": counted / windows if counted else None,
            "flops_per_s": analytic * windows / step_time}


def run(config) -> dict:
    """Benchmark every method in ``config.method`` (comma list) at every ``config.benchmark.ensemble_sizes``."""
    peak = matmul_peak()
    device = jax.devices()[0]
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.standard_normal(
        (config.benchmark.num_clips, config.features.get("num_frames", 313), config.features.n_mels), np.float32))
    results = []
    for method in split_list(config.method):
        for size in [int(s) for s in split_list(config.benchmark.ensemble_sizes)]:
            row = bench_one(method, config, size, features)
            row["share_of_peak"] = row["flops_per_s"] / peak
            results.append(row)
            print(f"{method:9s} E={size:<3d} batch {row['batch_size']:4d}: {row['step_time_s'] * 1e3:8.2f} ms/step, "
                  f"{row['windows_per_s_total']:10.0f} windows/s ({row['windows_per_s_per_member']:.0f} per member), "
                  f"{row['flops_per_s'] / 1e9:6.1f} GFLOP/s = {100 * row['share_of_peak']:5.1f}% of peak "
                  f"(compile {row['compile_time_s']:.1f} s)")
    output = {"device": f"{device.platform}: {getattr(device, 'device_kind', '')}".strip(),
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "jax_version": jax.__version__, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "peak_flops_per_s": peak, "peak_kind": f"float32 square matmul, best of sizes {PEAK_SIZES}",
              "flops_note": "flops_per_window counts matmul FLOPs, forward + backward = 3x forward; "
                            "xla_flops_per_window is XLA's cost analysis of the compiled call per window of one step "
                            "(it counts a scan body once), all ops included, for reference",
              "results": results}
    print(f"peak: {peak / 1e9:.1f} GFLOP/s ({output['peak_kind']}) on {output['device']}")
    if config.output:
        with open(config.output, "w") as handle:
            json.dump(output, handle, indent=2)
        print(f"wrote {config.output}")
    return output
