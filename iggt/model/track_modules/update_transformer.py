"""The update transformer: from each track's tokens over all views to a correction of its positions and features.

Tokens are ``[B, N, S, D]`` (N tracks, S views). Every block first attends along time (each
track over its S views), then across tracks through 64 learned virtual tracks: the virtual
tracks read all real tracks, attend among themselves, and the real tracks read them back. That
keeps the cost linear in N. Names (``virual_tracks`` included) are those of the released
checkpoint.

The release's blocks add the attention output to the *normalised* input (``x = norm1(x);
x = x + attn(x)``), not to the raw one; the trained weights depend on it, so it is kept. Attention
is called as the release calls it (weights requested), which keeps PyTorch on the same kernel: the
tracker amplifies tiny differences over its iterations.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers import Mlp

VIRTUAL_TRACKS = 64
ATTENTION_HEADS = 8


class SelfAttentionBlock(nn.Module):
    """``x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))`` over ``[batch, tokens, width]``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """As `SelfAttentionBlock`, with keys and values from a normalised ``context``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context)[0]
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """``[B, N, S, input_dim]`` -> ``[B, N, S, output_dim]`` (2 position deltas + feature deltas)."""

    def __init__(self, input_dim: int, hidden_size: int, output_dim: int, depth: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, VIRTUAL_TRACKS, 1, hidden_size))

        def blocks(kind: type[nn.Module]) -> nn.ModuleList:
            return nn.ModuleList(kind(hidden_size, ATTENTION_HEADS, mlp_ratio) for _ in range(depth))

        self.time_blocks = blocks(SelfAttentionBlock)
        self.space_virtual_blocks = blocks(SelfAttentionBlock)
        self.space_point2virtual_blocks = blocks(CrossAttentionBlock)
        self.space_virtual2point_blocks = blocks(CrossAttentionBlock)
        self._initialise()

    def _initialise(self) -> None:
        """Training from scratch (the release's choice): Xavier linears, zero biases, a near-zero flow head."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = self.input_transform(self.input_norm(tokens))
        initial = tokens
        batch, tracks, views, width = tokens.shape
        tokens = torch.cat([tokens, self.virual_tracks.expand(batch, -1, views, -1)], dim=1)
        everything = tracks + VIRTUAL_TRACKS
        for time, virtual_self, point_reads, virtual_reads in zip(
            self.time_blocks, self.space_virtual_blocks, self.space_point2virtual_blocks,
            self.space_virtual2point_blocks,
        ):
            tokens = time(tokens.reshape(batch * everything, views, width)).reshape(batch, everything, views, width)
            space = tokens.permute(0, 2, 1, 3).reshape(batch * views, everything, width)
            points, virtual = space[:, :tracks], space[:, tracks:]
            virtual = virtual_self(virtual_reads(virtual, points))
            points = point_reads(points, virtual)
            space = torch.cat([points, virtual], dim=1)
            tokens = space.reshape(batch, views, everything, width).permute(0, 2, 1, 3)
        tokens = tokens[:, :tracks] + initial
        return self.flow_head(self.output_norm(tokens))
