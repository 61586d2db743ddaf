"""The correlation pyramid: how well each track's feature matches the feature maps around its current position.

The feature maps of every view are average-pooled by 2 into ``levels`` levels. For a track at
(x, y) in view s, each level yields the (2r+1)^2 correlations of the track's feature with that
view's map on a window of integer offsets around (x, y) / 2^level; a level's whole correlation
volume is computed, read and dropped before the next one (memory: one level at a time).

Two details follow the release exactly, because trained weights depend on them: the window's
first axis offsets x and its second axis offsets y (read row-major, x-major), and reads outside
the map are zero.

Small views: the release pools 2x2 at every level and fails (an empty map) once a side of the
feature map is shorter than 2^(levels-1) cells, i.e. views under 128 px with the released 7
levels. Here a side that has reached a single cell stays one cell (it is pooled by 1 along that
side), so such views work: identical to the release wherever the release runs, and on smaller
views the coarsest levels hold the average over the whole side.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .sampling import bilinear_sample


def pool_by_two(maps: Tensor) -> Tensor:
    """2x2 average pooling of ``[N, C, H, W]``; a side of length 1 is kept (pooled by 1)."""
    kernel = (min(2, maps.shape[-2]), min(2, maps.shape[-1]))
    return F.avg_pool2d(maps, kernel_size=kernel, stride=kernel)


class CorrelationPyramid:
    """Feature maps ``[B, S, C, H, W]`` of all views, pooled into ``levels`` levels, read by `sample`."""

    def __init__(self, maps: Tensor, levels: int, radius: int):
        batch, views, channels = maps.shape[:3]
        self.radius = radius
        self.levels = [maps]
        for _ in range(levels - 1):
            pooled = pool_by_two(self.levels[-1].flatten(0, 1))
            self.levels.append(pooled.reshape(batch, views, channels, *pooled.shape[-2:]))
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=maps.device, dtype=maps.dtype)
        first, second = torch.meshgrid(steps, steps, indexing="ij")
        self.window = torch.stack([first, second], dim=-1)  # [2r+1, 2r+1, (x offset, y offset)]

    @property
    def features_per_track(self) -> int:
        return len(self.levels) * (2 * self.radius + 1) ** 2

    def sample(self, track_features: Tensor, points: Tensor) -> Tensor:
        """``track_features`` ``[B, S, N, C]`` at ``points`` ``[B, S, N, 2]`` (level-0 pixels)
        -> ``[B, S, N, levels * (2r+1)^2]`` correlations (scaled by 1/sqrt(C))."""
        batch, views, count, channels = track_features.shape
        side = 2 * self.radius + 1
        window = self.window.to(points.device, points.dtype)
        samples = []
        for level, maps in enumerate(self.levels):
            height, width = maps.shape[-2:]
            volume = torch.matmul(track_features, maps.reshape(batch, views, channels, height * width))
            volume = (volume / math.sqrt(channels)).reshape(batch * views * count, 1, height, width)
            centres = points.reshape(batch * views * count, 1, 1, 2) / 2**level
            read = bilinear_sample(volume, centres + window.view(1, side, side, 2), padding_mode="zeros")
            samples.append(read.reshape(batch, views, count, side * side))
        return torch.cat(samples, dim=-1)
