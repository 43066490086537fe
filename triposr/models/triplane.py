"""The learned triplane queries and the upsampling that turns refined tokens into scene codes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from triposr.config import PostProcessorConfig, TokenizerConfig


class Triplane1DTokenizer(nn.Module):
    """Learned triplane queries ``embeddings`` [3, C, P, P], flattened to tokens ordered (plane, row, col)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.plane_size = config.plane_size
        self.num_channels = config.num_channels
        self.embeddings = nn.Parameter(
            torch.randn(3, config.num_channels, config.plane_size, config.plane_size) / math.sqrt(config.num_channels)
        )

    def forward(self, batch_size: int) -> Tensor:
        """The queries for a batch: [B, C, 3 * P * P]."""
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(1, self.num_channels, -1)
        return tokens.expand(batch_size, -1, -1)

    def detokenize(self, tokens: Tensor) -> Tensor:
        """[B, C, 3 * P * P] -> [B, 3, C, P, P] (plane is the outermost token factor)."""
        batch, channels, count = tokens.shape
        if channels != self.num_channels or count != 3 * self.plane_size**2:
            raise ValueError(f"expected tokens [B, {self.num_channels}, {3 * self.plane_size**2}], got {tuple(tokens.shape)}")
        planes = tokens.reshape(batch, channels, 3, self.plane_size, self.plane_size)
        return planes.permute(0, 2, 1, 3, 4)


class TriplaneUpsampleNetwork(nn.Module):
    """ConvTranspose2d(kernel 2, stride 2) applied to each plane: [B, 3, Cin, P, P] -> [B, 3, Cout, 2P, 2P]."""

    def __init__(self, config: PostProcessorConfig) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(config.in_channels, config.out_channels, kernel_size=2, stride=2)

    def forward(self, triplanes: Tensor) -> Tensor:
        batch, planes, channels, height, width = triplanes.shape
        upsampled = self.upsample(triplanes.reshape(batch * planes, channels, height, width))
        return upsampled.reshape(batch, planes, *upsampled.shape[1:])
