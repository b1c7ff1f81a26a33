"""Training-step throughput benchmark (not a test): ``python launch.py --mode=benchmark``.

    python launch.py --mode=benchmark --method=lstm,gru_ae,dense_ae --ensemble_sizes=1,8 --output=bench.json

For every (method, ensemble size) this times the real training program: ``ensemble.make_train_fn`` (jit + vmap over
members + scan over ``steps_per_call`` steps) on states from ``ensemble.init_states`` and the model from
the method registry, fed random device-resident features of the real shape [num_clips, frames, mels];
the windows are drawn inside the step as in training, so their gather is timed too. The program is compiled ahead
of time (``compile_time_s``), called ``warmup_calls`` times, then ``timed_calls`` calls are timed to completion:
``step_time_s`` is their median per step, ``step_time_best_s`` the fastest.

FLOPs per window (one window of one member, forward + backward):

* ``flops_per_window``: the model count, 3x the forward matmul FLOPs by hand (LSTM: 15.8 MFLOP with the head);
  ``share_of_peak`` uses it, so figures compare across implementations and with the write-up.
* ``flops_per_window_executed``: the matmul FLOPs the step really runs, counted from its traced program after
  dead-code elimination (every dot_general and convolution, loop bodies times their trip counts); lower than the
  model count where the step skips work (the first layer's input gradient, products with an all-zero initial
  state). ``share_of_peak_executed`` uses it.
* ``flops_per_window_xla``: XLA's cost analysis of the compiled call per window of one step, elementwise FLOPs
  included. XLA counts a while-loop body once (the loop over steps, and any loop in the model, e.g. the GRU's
  scan), so it is one step's count only for loop-free models such as the LSTM and the dense AE.

The peak is the best rate of jitted float32 square matmuls (default precision), measured before and after the
training programs in the same run; the load averages are recorded because other processes slow both.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax import distributed
from asd_jax.data.loading import feature_config, split_list
from asd_jax.evaluate.tables import aligned
from asd_jax.hardware import cpu_name, device_name, published_peak
from asd_jax.methods import registry
from asd_jax.train import ensemble

PEAK_SIZES = (1024, 2048, 4096)  # CPU; accelerators use ACCELERATOR_PEAK_SIZES
ACCELERATOR_PEAK_SIZES = (4096, 8192)


def run(config) -> dict:
    """Benchmark every method in ``config.method`` (comma list) at every ``config.benchmark.ensemble_sizes``; prints
    a table, writes the JSON report to ``config.output`` (when set) and returns it."""
    device = jax.devices()[0]
    sizes = PEAK_SIZES if device.platform == "cpu" else ACCELERATOR_PEAK_SIZES
    load_before = load_average()
    peak_samples = [matmul_peak(sizes)]
    frames = feature_config(config)
    shape = (config.benchmark.num_clips, frames.num_frames, frames.num_bins)
    features = jax.random.normal(jax.random.PRNGKey(config.seed), shape, jnp.float32)
    results = [bench_one(method, config, int(size), features, member_map)
               for method in split_list(config.method) for size in split_list(config.benchmark.ensemble_sizes)
               for member_map in (split_list(config.benchmark.member_maps) if int(size) > 1 else ["auto"])]
    peak_samples.append(matmul_peak(sizes))
    peak = max(peak_samples)
    for row in results:
        row["share_of_peak"] = row["flops_per_s"] / peak
        row["share_of_peak_executed"] = row["flops_per_s_executed"] / peak
    output = {
        "peak_flops_per_s": peak,
        "peak_kind": f"jitted float32 square matmul, default precision, best of sizes {tuple(sizes)} measured "
                     "before and after the training programs",
        "peak_samples_flops_per_s": peak_samples,
        "published_peak": published_peak(device),
        "flops_note": "flops_per_window: matmul FLOPs by hand, forward + backward = 3x forward (used for "
                      "share_of_peak); flops_per_window_executed: matmul FLOPs of the traced step after dead-code "
                      "elimination (share_of_peak_executed); flops_per_window_xla: XLA's cost analysis of the "
                      "compiled call per window of one step, all ops, each loop body counted once",
        "results": results,
        "features_shape": list(shape),
        **machine_facts(device, load_before),
    }
    print(format_table(output), flush=True)
    if config.output:
        with open(config.output, "w") as handle:
            json.dump(output, handle, indent=2)
        print(f"wrote {config.output}")
    return output


def bench_one(method_name: str, config, ensemble_size: int, features: jax.Array, member_map: str = "auto") -> dict:
    """Compile, warm up and time the training call of one registered method and ensemble size (``member_map``: how
    the program maps over members, see ``distributed.Layout``). Padded (masked) members are not counted."""
    method = registry.get(method_name)
    if method.kind != "ensemble":
        raise ValueError(f"no training-step benchmark for {method_name!r} (kind {method.kind!r}); the benchmark covers "
                         f"{', '.join(registry.names('ensemble'))}")
    config = config.copy_and_resolve_references()
    method.resolve_config(config)  # e.g. the id classifier's whole-clip frames, for the stand-in clips' length
    model = method.window_model(config)
    section = config[method.section]
    train = ensemble.TrainConfig.from_section(section.train)
    steps = train.steps_per_call
    members = [ensemble.Member.create(seed, learning_rate=float(section.train.learning_rate))
               for seed in range(config.seed, config.seed + ensemble_size)]
    states = ensemble.init_states(model, members, features.shape[-1], train.make_optimizer(len(features)))
    layout = distributed.plan_layout(ensemble_size, train.batch_size, member_map,
                                     cpu_member_map=model.cpu_member_map)
    states, features = distributed.place(states, features, layout)
    labels = jax.device_put(method.stand_in_clip_data(config, len(features), config.seed))
    train_fn = ensemble.make_train_fn(model, train.batch_size, steps, layout)
    started = time.perf_counter()
    compiled = train_fn.lower(states, features, labels).compile()
    compile_time = time.perf_counter() - started
    executed = count_matmul_flops(_without_dead_code(jax.make_jaxpr(train_fn)(states, features, labels).jaxpr))
    executed /= steps
    xla_flops = _xla_flops(compiled)
    for _ in range(config.benchmark.warmup_calls):
        states, losses = compiled(states, features, labels)
    jax.block_until_ready((states, losses) if config.benchmark.warmup_calls else states)
    call_times = []
    for _ in range(config.benchmark.timed_calls):
        started = time.perf_counter()
        states, losses = compiled(states, features, labels)
        jax.block_until_ready((states, losses))
        call_times.append(time.perf_counter() - started)
    step_times = np.asarray(call_times) / steps
    step_time = float(np.median(step_times))
    windows = train.batch_size * ensemble_size
    analytic = float(method.flops_per_window(section, features.shape[-1]))
    return {"method": method_name, "ensemble_size": ensemble_size, "batch_size": int(train.batch_size),
            "member_map": layout.member_map, "padded_members": layout.padded - ensemble_size,
            "batch_split_over_devices": layout.batch_axis,
            "steps_per_call": steps, "step_time_s": step_time, "step_time_best_s": float(np.min(step_times)),
            "call_times_s": call_times, "compile_time_s": compile_time,
            "windows_per_s_total": windows / step_time, "windows_per_s_per_member": train.batch_size / step_time,
            "flops_per_window": analytic, "flops_per_window_executed": executed / windows,
            "flops_per_window_xla": None if xla_flops is None else xla_flops / windows,
            "flops_per_s": analytic * windows / step_time, "flops_per_s_executed": executed / step_time,
            "parameters_per_member": sum(math.prod(leaf.shape[1:]) for leaf in jax.tree.leaves(states.params))}


def matmul_peak(sizes: Sequence[int] = PEAK_SIZES, repeats: int = 5) -> float:
    """FLOP/s of jitted float32 square matmuls, the best over ``sizes`` and ``repeats`` (the best makes the share of
    peak a conservative figure)."""
    matmul = jax.jit(jnp.matmul)
    best = 0.0
    for size in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
        matmul(a, b).block_until_ready()
        for _ in range(repeats):
            started = time.perf_counter()
            matmul(a, b).block_until_ready()
            best = max(best, 2.0 * size**3 / (time.perf_counter() - started))
    return best


def count_matmul_flops(jaxpr) -> float:
    """FLOPs (2 per multiply-add) of every dot_general and convolution in a jaxpr; a scan body counts ``length``
    times, a while body once (unknown trip count), a cond its costliest branch."""
    total = 0.0
    for equation in jaxpr.eqns:
        name = equation.primitive.name
        if name == "dot_general":
            (contracting, _), _ = equation.params["dimension_numbers"]
            lhs = equation.invars[0].aval.shape
            total += 2.0 * math.prod(lhs[d] for d in contracting) * math.prod(equation.outvars[0].aval.shape)
        elif name == "conv_general_dilated":
            kernel = equation.invars[1].aval.shape
            per_output = math.prod(kernel) / kernel[equation.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * per_output * math.prod(equation.outvars[0].aval.shape)
        elif name == "cond":
            total += max(count_matmul_flops(branch.jaxpr) for branch in equation.params["branches"])
        else:
            inner = sum(count_matmul_flops(sub) for sub in _sub_jaxprs(equation.params))
            total += inner * (equation.params["length"] if name == "scan" else 1)
    return total


def _sub_jaxprs(params: dict):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(getattr(item, "jaxpr", None), "eqns"):
                yield item.jaxpr


def _without_dead_code(jaxpr):
    """The jaxpr without the equations whose results are unused (XLA drops them too, e.g. the input gradient a
    custom VJP returns for the training windows)."""
    try:
        from jax._src.interpreters.partial_eval import dce_jaxpr
    except ImportError:  # internal API: without it the count includes the dead matmuls
        return jaxpr
    return dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0]


def _xla_flops(compiled) -> float | None:
    """FLOPs XLA counts for one compiled call, if it reports them."""
    try:
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        return float(analysis["flops"]) if analysis and "flops" in analysis else None
    except Exception:  # noqa: BLE001 - cost analysis is optional per backend
        return None


def format_table(output: dict) -> str:
    """The results as an aligned text table, with the peak, device and load underneath."""
    header = ("method", "E", "map", "batch", "step ms", "compile s", "win/s/member", "win/s total", "MFLOP/win",
              "GFLOP/s", "% peak", "% peak (executed)")
    rows = [header] + [
        (r["method"], str(r["ensemble_size"]), r["member_map"], str(r["batch_size"]), f"{1e3 * r['step_time_s']:.2f}",
         f"{r['compile_time_s']:.1f}", f"{r['windows_per_s_per_member']:,.0f}", f"{r['windows_per_s_total']:,.0f}",
         f"{r['flops_per_window'] / 1e6:.2f}", f"{r['flops_per_s'] / 1e9:.1f}", f"{100 * r['share_of_peak']:.1f}",
         f"{100 * r['share_of_peak_executed']:.1f}") for r in output["results"]]
    lines = aligned(rows, right_from=1).split("\n")
    lines.insert(1, "-" * len(lines[0]))
    before, after = output["load_average_before"], output["load_average_after"]
    load = f", load average {before[0]:.2f} before / {after[0]:.2f} after" if before and after else ""
    lines.append(f"{output['device']} ({output['cpu_count']} CPUs{load}); peak {output['peak_flops_per_s'] / 1e9:.1f} "
                 "GFLOP/s (float32 matmul, same run)")
    return "\n".join(lines)


def machine_facts(device, load_before: list[float]) -> dict:
    """What every benchmark JSON says of where and when it ran: the device, the CPU, JAX, the load averages before
    (``load_before``) and now, the XLA flags and the time."""
    return {
        "device": f"{device.platform}: {device_name(device)}",
        "jax_version": jax.__version__,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "device_count": jax.device_count(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []
