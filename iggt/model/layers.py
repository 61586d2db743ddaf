"""Transformer building blocks: attention, 2D rotary position embedding, MLP, layer scale, block,
and the DINOv2-style patch embedder that turns each image into patch tokens.

Parameter names follow the released checkpoints (``qkv``, ``q_norm``, ``ls1.gamma``, ...), so
the official weights load without a rename table.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # xformers is optional; it is only used on CUDA, where it saves memory.
    from xformers.ops import memory_efficient_attention as _xformers_attention
except ImportError:  # pragma: no cover - depends on the environment
    _xformers_attention = None

AttentionWrapper = Callable[[nn.Module, Tensor, Tensor | None], Tensor]
"""Called as ``wrapper(attention_module, normalised_tokens, positions)`` in place of the attention."""


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention with the default scale; ``[B, heads, N, D]`` in and out.

    xformers is used when importable and the tensors live on CUDA, otherwise PyTorch's fused
    ``scaled_dot_product_attention``.
    """
    if _xformers_attention is not None and q.is_cuda:
        # xformers wants [B, N, heads, D].
        out = _xformers_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v)


class RotaryEmbedding2D(nn.Module):
    """2D rotary position embedding over (row, column) token positions.

    The first half of each head's channels is rotated by the row, the second half by the
    column. Within a half, channel pairs (i, i + D/4) rotate with inverse frequency
    ``base^(-2i / (D/2))`` ("half-split" rotation). Position (0, 0) is the identity, which is
    how the special tokens stay unrotated.
    """

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = base

    def _rotate_half_channels(self, x: Tensor, position: Tensor) -> Tensor:
        dim = x.shape[-1]
        inverse_frequency = self.base ** (
            -torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim
        )
        angles = position.to(torch.float32)[..., None] * inverse_frequency  # [B, N, dim/2]
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # [B, 1, N, dim]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat((-second, first), dim=-1)
        return x * cos + rotated * sin

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """``x`` ``[B, heads, N, D]``, ``positions`` ``[B, N, 2]`` integer (row, column)."""
        rows, columns = x.chunk(2, dim=-1)
        return torch.cat(
            (
                self._rotate_half_channels(rows, positions[..., 0]),
                self._rotate_half_channels(columns, positions[..., 1]),
            ),
            dim=-1,
        )


class Attention(nn.Module):
    """Multi-head self-attention with optional qk-norm and 2D RoPE."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qk_norm: bool = False,
        rope: RotaryEmbedding2D | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.rope = rope
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, D]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and positions is not None:
            q, k = self.rope(q, positions), self.rope(k, positions)
        out = attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (small at init, so deep stacks start stable)."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        layer_scale: float = 0.01,
        qk_norm: bool = False,
        rope: RotaryEmbedding2D | None = None,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope, norm_eps=norm_eps)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale)

    def forward(self, x: Tensor, positions: Tensor | None = None, merge: AttentionWrapper | None = None) -> Tensor:
        """``merge`` (e.g. `iggt.model.token_merge.GlobalTokenMerger`) runs the attention on fewer tokens."""
        normed = self.norm1(x)
        attended = self.attn(normed, positions) if merge is None else merge(self.attn, normed, positions)
        x = x + self.ls1(attended)
        return x + self.ls2(self.mlp(self.norm2(x)))


class Patchify(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: image ``[N, 3, H, W]`` -> tokens ``[N, h*w, C]``."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class PatchEmbedder(nn.Module):
    """DINOv2 ViT with registers, used as the per-image feature extractor.

    Returns only the normalised patch tokens ``[N, h*w, C]`` in row-major grid order; the
    class and register outputs are discarded. ``mask_token`` is unused and kept only so the
    released checkpoints load.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_registers: int = 4,
        mlp_ratio: float = 4.0,
        layer_scale: float = 1.0,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.table_grid = img_size // patch_size
        self.patch_embed = Patchify(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.table_grid**2, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, embed_dim))
        self.register_buffer("mask_token", torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, layer_scale=layer_scale, norm_eps=1e-6) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def position_embedding(self, grid_hw: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """Class + grid position embedding ``[1, 1 + h*w, C]`` for a grid of ``grid_hw`` patches.

        The learned square table is resized bicubically with antialiasing to exactly (h, w),
        in fp32; it is used as is only for a square grid of the table's size.
        """
        h, w = grid_hw
        table = self.pos_embed.float()
        if (h, w) == (self.table_grid, self.table_grid):
            return table.to(dtype)
        class_position, grid = table[:, :1], table[:, 1:]
        dim = grid.shape[-1]
        grid = grid.reshape(1, self.table_grid, self.table_grid, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
        return torch.cat((class_position, grid), dim=1).to(dtype)

    def forward(self, images: Tensor) -> Tensor:
        grid_hw = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        tokens = self.patch_embed(images)
        # No casts: under autocast the fp32 class token promotes the stream back to fp32.
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embedding(grid_hw, tokens.dtype)
        registers = self.register_tokens.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + registers.shape[1] :]


def init_transformer_weights(module: nn.Module) -> None:
    """ViT-style initialisation for training from scratch: truncated normal linears, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def patch_grid(image_hw: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(h, w) patch grid of an image, with a clear error when the size does not divide."""
    height, width = image_hw
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} (HxW) is not a multiple of the patch size {patch_size}; "
            f"resize or crop to e.g. {math.floor(height / patch_size) * patch_size}x"
            f"{math.floor(width / patch_size) * patch_size}"
        )
    return height // patch_size, width // patch_size
