"""The released point tracker (``track_head``): a DPT feature extractor at half resolution and the tracker.

Given pixel positions in view 0, it returns where each point lies in every view, with a
visibility and a confidence (VGGT's tracker, carried unchanged by IGGT; 66 M parameters in the
released checkpoint). The feature extractor is a DPT without position embedding and without an
output decoder: the fused map goes through one full-width 3x3 convolution and is resized to half
the image size. The tracker (`track_modules`) refines the tracks ``iterations`` times on those maps.

The feature extractor works view by view (callers chunk views as they like); the tracker needs
all views of a scene at once, since every track attends over its views.
"""
from __future__ import annotations

from torch import Tensor, nn

from .conv_blocks import DPTScratch, patch_tokens_to_map, resize_bilinear
from .dpt_head import OFFICIAL_LAYER_INDICES, OFFICIAL_OUT_CHANNELS, build_level_projections, build_level_resizers
from .layers import patch_grid
from .track_modules import Tracker, TrackOutput

FEATURE_STRIDE = 2
"""The tracker's feature maps are this many times smaller than the images."""


class TrackFeatureExtractor(nn.Module):
    """Aggregator tokens of a flat batch of views -> ``[N, features, H/2, W/2]`` tracking features."""

    def __init__(self, dim_in: int, patch_size: int = 14, features: int = 128,
                 out_channels: tuple[int, int, int, int] = OFFICIAL_OUT_CHANNELS,
                 layer_indices: tuple[int, int, int, int] = OFFICIAL_LAYER_INDICES):
        super().__init__()
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = build_level_projections(dim_in, tuple(out_channels))
        self.resize_layers = build_level_resizers(tuple(out_channels))
        self.scratch = DPTScratch(tuple(out_channels), features, output_dim=None)

    def forward(self, tokens: dict[int, Tensor], image_hw: tuple[int, int], patch_start_idx: int) -> Tensor:
        grid_hw = patch_grid(image_hw, self.patch_size)
        levels = [
            resize(projection(patch_tokens_to_map(tokens[layer], patch_start_idx, grid_hw, self.norm)))
            for projection, resize, layer in zip(self.projects, self.resize_layers, self.layer_indices)
        ]
        fused, _ = self.scratch.fuse(levels)
        size = (grid_hw[0] * self.patch_size // FEATURE_STRIDE, grid_hw[1] * self.patch_size // FEATURE_STRIDE)
        return resize_bilinear(self.scratch.output_conv1(fused), size)


class TrackHead(nn.Module):
    """``feature_extractor`` + ``tracker``, named as in the released checkpoint."""

    def __init__(self, dim_in: int, *, patch_size: int = 14, features: int = 128, hidden_size: int = 384,
                 depth: int = 6, iterations: int = 4, corr_levels: int = 7, corr_radius: int = 4,
                 out_channels: tuple[int, int, int, int] = OFFICIAL_OUT_CHANNELS,
                 layer_indices: tuple[int, int, int, int] = OFFICIAL_LAYER_INDICES):
        super().__init__()
        self.iterations = iterations
        self.feature_extractor = TrackFeatureExtractor(dim_in, patch_size, features, out_channels, layer_indices)
        self.tracker = Tracker(features, hidden_size, depth, corr_levels, corr_radius, stride=FEATURE_STRIDE)

    def track(self, feature_maps: Tensor, query_points: Tensor, iterations: int | None = None) -> TrackOutput:
        """``feature_maps`` ``[B, S, C, H/2, W/2]`` of all views, ``query_points`` ``[B, N, 2]`` pixels in view 0."""
        return self.tracker(query_points, feature_maps, iterations or self.iterations)
