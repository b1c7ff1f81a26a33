"""PyTorch reference for the GRU autoencoder training step of ``python launch.py --mode=benchmark --method=gru_ae``.

The same model and step as ``asd_jax.models.gru_autoencoder`` (2-layer GRU encoder and 2-layer GRU decoder, hidden
256, 32-frame windows of 128 mels; the encoder's last top-layer state is the code, fed to the decoder at every step;
the decoder starts from the encoder's final states; a Linear head per step; MSE, Adam 1e-3, batch 64), written as a
PyTorch user would (``nn.GRU`` has the same n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) gate) and timed as
described in ``experiments/torch_reference.py``:

    /work/torchvenv/bin/python experiments/bench_torch_gru_ae.py --threads=2 --output=bench_torch_gru_ae.json
"""

from __future__ import annotations

import torch
from torch import nn

from torch_reference import benchmark, make_parser


class GRUAutoencoder(nn.Module):
    """[B, L, mels] -> reconstruction [B, L, mels]."""

    def __init__(self, mels: int, hidden: int, layers: int):
        super().__init__()
        self.encoder = nn.GRU(mels, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, mels)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        _, states = self.encoder(frames)  # [layers, B, hidden]
        code = states[-1].unsqueeze(1).expand(-1, frames.shape[1], -1)  # the code at every step
        outputs, _ = self.decoder(code, states)
        return self.head(outputs)


def model_flops_per_window(mels: int, hidden: int, layers: int, steps: int) -> float:
    """3x the forward matmul FLOPs, as ``asd_jax.methods.registry`` counts them for ``gru_ae``."""
    inputs = [mels] + [hidden] * (layers - 1) + [hidden] * layers  # encoder, then decoder layers
    forward = sum(steps * 2 * (i + hidden) * 3 * hidden for i in inputs) + steps * 2 * hidden * mels
    return 3.0 * forward


def main() -> None:
    parser = make_parser(__doc__, batch_size=64, steps=10)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--window", type=int, default=32, help="frames per window")
    args = parser.parse_args()

    def loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return torch.mean((model(windows) - windows) ** 2)

    benchmark(args, "gru_ae", lambda: GRUAutoencoder(args.mels, args.hidden_size, args.num_layers), loss,
              args.window, model_flops_per_window(args.mels, args.hidden_size, args.num_layers, args.window))


if __name__ == "__main__":
    main()
