"""Reading feature maps at sub-pixel points, and the sine/cosine codes the tracker adds to its tokens.

Coordinates are pixel positions ``(x, y)`` of the map being read, with pixel centres at integers
(``align_corners=True``): x = 0 is the centre of the first column, x = W - 1 of the last.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bilinear_sample(maps: Tensor, points: Tensor, padding_mode: str = "border") -> Tensor:
    """``maps`` ``[B, C, H, W]`` read at ``points`` ``[B, Ho, Wo, 2]`` (pixel x, y) -> ``[B, C, Ho, Wo]``.

    A side of length 1 maps every coordinate onto its single pixel.
    """
    height, width = maps.shape[-2:]
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=maps.device, dtype=maps.dtype)
    grid = points.to(maps.dtype) * scale - 1
    return F.grid_sample(maps, grid, align_corners=True, padding_mode=padding_mode)


def sample_at_points(maps: Tensor, points: Tensor) -> Tensor:
    """One feature vector per point: ``maps`` ``[B, C, H, W]``, ``points`` ``[B, N, 2]`` -> ``[B, N, C]``."""
    return bilinear_sample(maps, points[:, :, None]).squeeze(-1).transpose(1, 2)


def _sincos(positions: Tensor, channels: int) -> Tensor:
    """``[M]`` positions -> ``[M, channels]``: sines then cosines of ``channels / 2`` frequencies
    10000^(-k / (channels / 2)), computed in float64 and returned in float32."""
    frequencies = torch.arange(channels // 2, dtype=torch.float64, device=positions.device) / (channels / 2.0)
    angles = positions.to(torch.float64)[:, None] * (1.0 / 10000**frequencies)[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def grid_position_embedding(channels: int, grid_hw: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """``[1, channels, H, W]`` code of each cell's integer (x, y): first half x, second half y."""
    if channels % 4:
        raise ValueError(f"the tracker's position code needs a width divisible by 4, got {channels}")
    height, width = grid_hw
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    code = torch.cat([_sincos(xs.reshape(-1), channels // 2), _sincos(ys.reshape(-1), channels // 2)], dim=1)
    return code.T.reshape(1, channels, height, width)


def displacement_embedding(xy: Tensor, channels: int) -> Tensor:
    """``[B, N, 2]`` displacements -> ``[B, N, 2 * channels]``: for x then y, sin and cos interleaved
    at the release's angular steps ``k * 1000 / channels`` (k = 0, 2, 4, ...)."""
    steps = torch.arange(0, channels, 2, device=xy.device, dtype=torch.float32) * (1000.0 / channels)
    codes = []
    for axis in range(2):
        angles = xy[..., axis : axis + 1].float() * steps
        codes.append(torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2))
    return torch.cat(codes, dim=-1)
