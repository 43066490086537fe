"""DINO ViT image tokenizer with the semantics and parameter names of transformers 4.35's ViTModel.

TripoSR pins transformers 4.35 and stores the ViT weights under ``image_tokenizer.model.*`` with that
version's module names, so this module mirrors them exactly (``encoder.layer.N.attention.attention.query``
etc.). Two 4.35 behaviours matter for parity and are reproduced deliberately:

* the position table is resized with bicubic interpolation driven by a *scale factor* of
  ``(grid + 0.1) / sqrt(num_positions)`` (the DINO "+0.1" trick), not by a target size;
* the pooler exists and has weights in the checkpoint; its output is computed but TripoSR ignores it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from triposr.config import ViTConfig

# ImageNet statistics applied by TripoSR's DINOSingleImageTokenizer to RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ViTPatchEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"expected {self.num_channels} image channels, got {pixel_values.shape[1]} "
                "(composite RGBA onto a background first)"
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        num_patches = (config.image_size // config.patch_size) ** 2
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 1, config.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(config)

    def interpolated_position_embeddings(self, height: int, width: int) -> Tensor:
        """The position table for an image of ``height`` x ``width`` pixels (transformers 4.35 rule)."""
        num_positions = self.position_embeddings.shape[1] - 1
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if grid_h * grid_w == num_positions and height == width:
            return self.position_embeddings
        side = math.sqrt(num_positions)
        dim = self.position_embeddings.shape[-1]
        patch_table = self.position_embeddings[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
        patch_table = F.interpolate(
            patch_table,
            scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
            mode="bicubic",
            align_corners=False,
        )
        if patch_table.shape[-2:] != (grid_h, grid_w):
            raise ValueError(f"position table resized to {tuple(patch_table.shape[-2:])}, expected {(grid_h, grid_w)}")
        patch_table = patch_table.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((self.position_embeddings[:, :1], patch_table), dim=1)

    def forward(self, pixel_values: Tensor, position_embeddings: Tensor | None = None) -> Tensor:
        """``position_embeddings`` lets a caller pass the already-resized table as a constant (ONNX export)."""
        batch, _, height, width = pixel_values.shape
        patches = self.patch_embeddings(pixel_values)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), patches), dim=1)
        if position_embeddings is None:
            position_embeddings = self.interpolated_position_embeddings(height, width)
        return tokens + position_embeddings


class ViTSelfAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        batch, tokens, dim = hidden_states.shape

        def heads(x: Tensor) -> Tensor:
            return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

        # softmax(q k^T / sqrt(head_dim)) v, no mask: the same maths as 4.35's explicit matmuls.
        context = F.scaled_dot_product_attention(
            heads(self.query(hidden_states)), heads(self.key(hidden_states)), heads(self.value(hidden_states))
        )
        return context.transpose(1, 2).reshape(batch, tokens, dim)


class ViTSelfOutput(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.dense(hidden_states)


class ViTAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.output(self.attention(hidden_states))


class ViTIntermediate(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return F.gelu(self.dense(hidden_states))


class ViTOutput(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: Tensor, residual: Tensor) -> Tensor:
        return self.dense(hidden_states) + residual


class ViTLayer(nn.Module):
    """Pre-LN block: x += attention(LN(x)); x += MLP(LN(x))."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTAttention(config)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor) -> Tensor:
        hidden_states = self.attention(self.layernorm_before(hidden_states)) + hidden_states
        return self.output(self.intermediate(self.layernorm_after(hidden_states)), hidden_states)


class ViTEncoder(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ViTLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states: Tensor) -> Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states)
        return hidden_states


class ViTPooler(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


class ViTModel(nn.Module):
    """transformers' ViTModel(add_pooling_layer=True, use_mask_token=False), inference only."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.encoder = ViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config)

    def forward(self, pixel_values: Tensor, position_embeddings: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns ``(last_hidden_state [B, 1 + patches, hidden], pooler_output [B, hidden])``."""
        hidden_states = self.encoder(self.embeddings(pixel_values, position_embeddings))
        last_hidden_state = self.layernorm(hidden_states)
        return last_hidden_state, self.pooler(last_hidden_state)


class DINOSingleImageTokenizer(nn.Module):
    """ImageNet-normalises RGB in [0, 1] and returns every ViT token (CLS first) as the image context."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.model = ViTModel(config)

    def forward(self, images: Tensor, position_embeddings: Tensor | None = None) -> Tensor:
        """``images`` [B, 3, H, W] RGB in [0, 1] -> tokens [B, 1 + (H/16)(W/16), hidden]."""
        # Plain constants rather than buffers: the checkpoint has no such entries, and constants keep
        # meta-device construction (used for fast loading) free of uninitialised state.
        mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
        last_hidden_state, _pooled = self.model((images - mean) / std, position_embeddings)
        return last_hidden_state
