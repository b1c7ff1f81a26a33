"""PyTorch reference for the LSTM training step of ``python launch.py --mode=benchmark --method=lstm``.

The same model and step as ``asd_jax`` (2-layer LSTM, hidden 128, 128 mels, context 10, a Linear head predicting
the next frame, MSE, Adam 1e-3, batch 256), with the windows drawn from device-resident random features [64, 313,
128] inside every step, timed the same way (median over timed calls of ``--steps`` steps after warm-up) and compared
with a float32 matmul peak measured in the same run. Needs torch in its own environment, not the project's:

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python experiments/bench_torch_lstm.py --threads=2 --output=bench_torch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn


class LSTMPredictor(nn.Module):
    """[B, context, mels] -> predicted next frame [B, mels]: stacked LSTM, head on the top layer's last state."""

    def __init__(self, mels: int, hidden: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(mels, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, mels)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(frames)
        return self.head(outputs[:, -1])


def model_flops_per_window(mels: int, hidden: int, layers: int, context: int) -> float:
    """3x the forward matmul FLOPs, as ``asd_jax.bench.analytic_flops_per_window`` counts them."""
    inputs = [mels] + [hidden] * (layers - 1)
    forward = sum(context * 2 * (i + hidden) * 4 * hidden for i in inputs) + 2 * hidden * mels
    return 3.0 * forward


def matmul_peak(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = max(best, 2.0 * size**3 / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--mels", type=int, default=128)
    parser.add_argument("--num_clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=313)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed call")
    parser.add_argument("--warmup_calls", type=int, default=2)
    parser.add_argument("--timed_calls", type=int, default=10)
    parser.add_argument("--output", default="")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = torch.randn(args.num_clips, args.frames, args.mels)
    model = LSTMPredictor(args.mels, args.hidden_size, args.num_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    length = args.context + 1
    offsets = torch.arange(length)

    def step() -> torch.Tensor:
        clips = torch.randint(0, args.num_clips, (args.batch_size,))
        starts = torch.randint(0, args.frames - length + 1, (args.batch_size,))
        windows = features[clips[:, None], starts[:, None] + offsets]  # [B, context + 1, mels]
        loss = torch.mean((model(windows[:, :-1]) - windows[:, -1]) ** 2)
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
    flops = model_flops_per_window(args.mels, args.hidden_size, args.num_layers, args.context)
    flops_per_s = flops * args.batch_size / step_time
    result = {
        "framework": f"torch {torch.__version__}", "threads": args.threads, "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "batch_size": args.batch_size,
        "step_time_s": step_time, "step_time_best_s": min(step_times), "step_times_s": step_times,
        "windows_per_s": args.batch_size / step_time, "flops_per_window": flops, "flops_per_s": flops_per_s,
        "peak_flops_per_s": peak, "share_of_peak": flops_per_s / peak,
        "load_average": list(os.getloadavg()), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"torch {torch.__version__}, {args.threads} threads: {1e3 * step_time:.2f} ms/step "
          f"(best {1e3 * min(step_times):.2f}), {result['windows_per_s']:,.0f} windows/s, "
          f"{flops_per_s / 1e9:.1f} GFLOP/s = {100 * result['share_of_peak']:.1f}% of its float32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s (load average {result['load_average'][0]:.2f})")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
