"""Shared harness of the PyTorch reference benchmarks (``bench_torch_*.py``), so that every reference is timed the
way ``python launch.py --mode=benchmark`` times the JAX training step.

Windows are drawn inside every step from random features of the real shape [num_clips, 313 frames, 128 mels] (the
gather is timed, as in the JAX step); each timed call runs ``--steps`` Adam steps; ``step_time_s`` is the median per
step over ``--timed_calls`` calls after ``--warmup_calls``; the share of peak uses the same hand-counted model FLOPs as
``asd_jax.methods.registry`` and a float32 matmul peak measured before and after in the same run. Needs torch in an
environment of its own, not the project's:

    python3 -m venv /work/torchvenv && /work/torchvenv/bin/pip install torch==2.13.0 numpy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the torch venv lacks asd_jax
from asd_jax.hardware import cpu_name  # noqa: E402  (stdlib only: no JAX in the torch venv)


def make_parser(description: str, batch_size: int, steps: int) -> argparse.ArgumentParser:
    """The options every reference shares; ``batch_size`` and ``steps`` default to the method's JAX config."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--mels", type=int, default=128)
    parser.add_argument("--num_clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=313, help="frames per clip")
    parser.add_argument("--steps", type=int, default=steps, help="steps per timed call")
    parser.add_argument("--warmup_calls", type=int, default=2)
    parser.add_argument("--timed_calls", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="", help="write the result as JSON here")
    return parser


def matmul_peak(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """Best FLOP/s of float32 square matmuls over ``sizes`` and ``repeats``."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = max(best, 2.0 * size**3 / (time.perf_counter() - started))
    return best


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def benchmark(args: argparse.Namespace, method: str, build_model: Callable[[], nn.Module],
              loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], window_length: int,
              flops_per_window: float) -> dict:
    """Time Adam training steps of ``build_model()`` on ``loss_fn(model, windows [B, window_length, mels])``; prints
    a summary line, writes ``args.output`` (when set) and returns the result."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = load_average()
    features = torch.randn(args.num_clips, args.frames, args.mels)
    model = build_model()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    offsets = torch.arange(window_length)

    def step() -> torch.Tensor:
        clips = torch.randint(0, args.num_clips, (args.batch_size,))
        starts = torch.randint(0, args.frames - window_length + 1, (args.batch_size,))
        windows = features[clips[:, None], starts[:, None] + offsets]  # [B, window_length, mels]
        loss = loss_fn(model, windows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def call() -> float:
        started = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        loss.item()
        return time.perf_counter() - started

    peak_before = matmul_peak()
    for _ in range(args.warmup_calls):
        call()
    step_times = [call() / args.steps for _ in range(args.timed_calls)]
    peak = max(peak_before, matmul_peak())
    step_time = statistics.median(step_times)
    flops_per_s = flops_per_window * args.batch_size / step_time
    result = {
        "method": method, "framework": f"torch {torch.__version__}", "torch_version": torch.__version__,
        "threads": args.threads, "cpu_count": os.cpu_count(), "cpu": cpu_name(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "batch_size": args.batch_size,
        "steps_per_call": args.steps, "step_time_s": step_time, "step_time_best_s": min(step_times),
        "step_times_s": step_times, "windows_per_s": args.batch_size / step_time,
        "flops_per_window": flops_per_window, "flops_per_s": flops_per_s, "peak_flops_per_s": peak,
        "share_of_peak": flops_per_s / peak, "parameters": sum(p.numel() for p in model.parameters()),
        "load_average_before": load_before, "load_average_after": load_average(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "options": vars(args),
    }
    print(f"{method}: torch {torch.__version__}, {args.threads} threads on {result['cpu']}: "
          f"{1e3 * step_time:.2f} ms/step (best {1e3 * min(step_times):.2f}), {result['windows_per_s']:,.0f} "
          f"windows/s, {flops_per_s / 1e9:.1f} GFLOP/s = {100 * result['share_of_peak']:.1f}% of its float32 matmul "
          f"peak {peak / 1e9:.1f} GFLOP/s (load average {load_before[0] if load_before else float('nan'):.2f} "
          f"before / {result['load_average_after'][0] if result['load_average_after'] else float('nan'):.2f} after)")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=2)
    return result
