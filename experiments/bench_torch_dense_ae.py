"""PyTorch reference for the dense autoencoder training step of ``python launch.py --mode=benchmark
--method=dense_ae``.

The same model and step as ``asd_jax.models.dense_ae`` (the DCASE 2020 baseline: 5 frames of 128 mels flattened to
640 -> Linear 128 x4 -> 8 -> Linear 128 x4 -> 640, each hidden Linear followed by BatchNorm (Keras momentum 0.99,
i.e. torch momentum 0.01; eps 1e-3) and ReLU; MSE, Adam 1e-3, batch 512, BatchNorm in training mode), timed as
described in ``experiments/torch_reference.py``:

    /work/torchvenv/bin/python experiments/bench_torch_dense_ae.py --threads=2 --output=bench_torch_dense_ae.json
"""

from __future__ import annotations

import torch
from torch import nn

from torch_reference import benchmark, make_parser


def dense_autoencoder(inputs: int, hidden: int, bottleneck: int, depth: int) -> nn.Sequential:
    """[B, inputs] -> reconstruction [B, inputs]."""
    widths = [inputs] + [hidden] * depth + [bottleneck] + [hidden] * depth
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.BatchNorm1d(width_out, eps=1e-3, momentum=0.01), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], inputs))


def model_flops_per_window(inputs: int, hidden: int, bottleneck: int, depth: int) -> float:
    """3x the forward matmul FLOPs, as ``asd_jax.methods.registry`` counts them for ``dense_ae``."""
    widths = [inputs] + [hidden] * depth + [bottleneck] + [hidden] * depth + [inputs]
    return 3.0 * sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


def main() -> None:
    parser = make_parser(__doc__, batch_size=512, steps=20)
    parser.add_argument("--window", type=int, default=5, help="frames per window")
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--bottleneck", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args()
    inputs = args.window * args.mels

    def loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        flat = windows.reshape(windows.shape[0], -1)
        return torch.mean((model(flat) - flat) ** 2)

    benchmark(args, "dense_ae", lambda: dense_autoencoder(inputs, args.hidden_size, args.bottleneck, args.depth),
              loss, args.window, model_flops_per_window(inputs, args.hidden_size, args.bottleneck, args.depth))


if __name__ == "__main__":
    main()
