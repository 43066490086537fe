"""TripoSR's Transformer1D backbone (diffusers-style), inference only, with the official parameter names.

The triplane queries ``[B, C, tokens]`` are group-normalised, projected, refined by pre-LN blocks of
self-attention, cross-attention to the image tokens and a GEGLU feed-forward, projected back and added
to the *un-normalised* input. Q/K/V projections have no bias (``attention_bias`` False); the output
projections do. Dropout layers exist only to keep the checkpoint's Sequential indices (``ff.net.2``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from triposr.config import BackboneConfig


class Attention(nn.Module):
    """Multi-head attention; keys and values come from ``context`` when given (cross-attention)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, bias: bool, context_dim: int | None = None) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim)])

    def forward(self, hidden_states: Tensor, context: Tensor | None = None) -> Tensor:
        context = hidden_states if context is None else context
        batch = hidden_states.shape[0]

        def split(x: Tensor) -> Tensor:
            return x.reshape(batch, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(hidden_states)), split(self.to_k(context)), split(self.to_v(context)))
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3])
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """``proj`` to twice the width; the first half is the value, the second the (exact-GELU) gate."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, hidden_states: Tensor) -> Tensor:
        value, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.net(hidden_states)


class BasicTransformerBlock(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        dim = config.inner_dim
        heads, dim_head, bias = config.num_attention_heads, config.attention_head_dim, config.attention_bias
        # diffusers' LayerNorm default eps (1e-5), unlike the ViT's 1e-12.
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head, bias)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, bias, context_dim=config.cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, config.dropout)

    def forward(self, hidden_states: Tensor, context: Tensor) -> Tensor:
        hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states
        hidden_states = self.attn2(self.norm2(hidden_states), context) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states


class Transformer1D(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(config.in_channels, config.inner_dim)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(config.inner_dim, config.in_channels)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        """``hidden_states`` [B, C, tokens], ``encoder_hidden_states`` [B, image tokens, ctx] -> [B, C, tokens]."""
        residual = hidden_states
        hidden_states = self.proj_in(self.norm(hidden_states).permute(0, 2, 1))
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states)
        return self.proj_out(hidden_states).permute(0, 2, 1) + residual
