"""Querying the triplane field: bilinear plane sampling, the NeRF MLP and its output activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triposr.config import DecoderConfig


class NeRFMLP(nn.Module):
    """``layers``: Linear, act, (n_hidden_layers - 1) x (Linear, act), Linear(-> 4); odd indices are activations."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        activation = {"silu": nn.SiLU, "relu": nn.ReLU}[config.activation]
        layers: list[nn.Module] = [nn.Linear(config.in_channels, config.n_neurons, bias=config.bias), activation()]
        for _ in range(config.n_hidden_layers - 1):
            layers += [nn.Linear(config.n_neurons, config.n_neurons, bias=config.bias), activation()]
        layers.append(nn.Linear(config.n_neurons, 4, bias=config.bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """[..., in_channels] -> [..., 4]: raw density in channel 0, colour logits in 1:4."""
        return self.layers(features)


def sample_triplanes(scene_codes: Tensor, points: Tensor, radius: float) -> Tensor:
    """Bilinear features of world ``points`` [B, N, 3] from ``scene_codes`` [B, 3, C, H, W] -> [B, N, 3C].

    Points are mapped from (-radius, radius) to grid_sample's (-1, 1) with the same operation sequence
    as the official ``scale_tensor``. Plane 0 is indexed by (x, y), plane 1 by (x, z), plane 2 by
    (y, z); the first coordinate selects the column. ``align_corners=False`` and zero padding, so
    points beyond the outermost texel centres fade towards zero.
    """
    batch, planes, channels, height, width = scene_codes.shape
    grid = (points - (-radius)) / (radius - (-radius)) * 2.0 + (-1.0)
    pairs = torch.stack((grid[..., [0, 1]], grid[..., [0, 2]], grid[..., [1, 2]]), dim=1)  # [B, 3, N, 2]
    sampled = F.grid_sample(
        scene_codes.reshape(batch * planes, channels, height, width),
        pairs.reshape(batch * planes, 1, -1, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # [B*3, C, 1, N]
    sampled = sampled.reshape(batch, planes, channels, -1)
    return sampled.permute(0, 3, 1, 2).reshape(batch, -1, planes * channels)


def query_triplane(
    decoder: NeRFMLP, scene_codes: Tensor, points: Tensor, radius: float, density_bias: float
) -> tuple[Tensor, Tensor]:
    """Density ``exp(raw + density_bias)`` [B, N, 1] and colour ``sigmoid(logits)`` [B, N, 3] at ``points``."""
    raw = decoder(sample_triplanes(scene_codes, points, radius))
    return torch.exp(raw[..., 0:1] + density_bias), torch.sigmoid(raw[..., 1:4])
