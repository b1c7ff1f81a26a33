"""PyTorch reference for the LSTM training step of ``python launch.py --mode=benchmark --method=lstm``.

The same model and step as ``asd_jax`` (2-layer LSTM, hidden 128, 128 mels, context 10, a Linear head predicting
the next frame, MSE, Adam 1e-3, batch 256), timed as described in ``experiments/torch_reference.py``:

    /work/torchvenv/bin/python experiments/bench_torch_lstm.py --threads=2 --output=bench_torch_lstm.json
"""

from __future__ import annotations

import torch
from torch import nn

from torch_reference import benchmark, make_parser


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
    """3x the forward matmul FLOPs, as ``asd_jax.methods.registry`` counts them for ``lstm``."""
    inputs = [mels] + [hidden] * (layers - 1)
    forward = sum(context * 2 * (i + hidden) * 4 * hidden for i in inputs) + 2 * hidden * mels
    return 3.0 * forward


def main() -> None:
    parser = make_parser(__doc__, batch_size=256, steps=10)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=10)
    args = parser.parse_args()

    def loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:  # windows [B, context + 1, mels]
        return torch.mean((model(windows[:, :-1]) - windows[:, -1]) ** 2)

    benchmark(args, "lstm", lambda: LSTMPredictor(args.mels, args.hidden_size, args.num_layers), loss,
              args.context + 1, model_flops_per_window(args.mels, args.hidden_size, args.num_layers, args.context))


if __name__ == "__main__":
    main()
