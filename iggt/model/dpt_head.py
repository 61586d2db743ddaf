"""Dense prediction heads (DPT) for the depth map and the point map.

Four levels of aggregator tokens are turned into feature maps at 4x, 2x, 1x and 1/2x the
patch grid, fused coarse-to-fine, upsampled to the image size and decoded to per-pixel
values plus a confidence. The point head additionally hands its intermediate fused maps to
the instance branch as geometry features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .conv_blocks import (
    DPTScratch,
    add_position_embedding,
    patch_tokens_to_map,
    resize_bilinear,
)
from .layers import patch_grid

OFFICIAL_LAYER_INDICES = (4, 11, 17, 23)
OFFICIAL_OUT_CHANNELS = (256, 512, 1024, 1024)
ACTIVATIONS = ("exp", "inv_log")


@dataclass
class DPTOutput:
    """What a DPT head returns for a flat batch of N frames."""

    values: Tensor
    """``[N, H, W, output_dim - 1]``, activated (depth: exp; points: inverse log)."""
    confidence: Tensor
    """``[N, H, W]``, 1 + exp(c) > 1."""
    features: tuple[Tensor, Tensor, Tensor] | None = None
    """Fused maps ``[N, F, 4h, 4w]``, ``[N, F, 2h, 2w]``, ``[N, F, h, w]`` when requested."""


def build_level_resizers(out_channels: tuple[int, int, int, int]) -> nn.ModuleList:
    """Per-level resampling of the projected token maps: x4, x2, x1, x1/2 (ceil)."""
    c1, c2, _, c4 = out_channels
    return nn.ModuleList(
        [
            nn.ConvTranspose2d(c1, c1, kernel_size=4, stride=4),
            nn.ConvTranspose2d(c2, c2, kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c4, c4, kernel_size=3, stride=2, padding=1),
        ]
    )


def build_level_projections(dim_in: int, out_channels: tuple[int, ...]) -> nn.ModuleList:
    """1x1 convolutions from the token width to each level's width."""
    return nn.ModuleList([nn.Conv2d(dim_in, channels, kernel_size=1) for channels in out_channels])


def activate(raw: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """``[N, C, H, W]`` raw output -> (values ``[N, H, W, C-1]``, confidence ``[N, H, W]``)."""
    channels_last = raw.permute(0, 2, 3, 1)
    values, confidence = channels_last[..., :-1], channels_last[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    else:  # "inv_log": undoes sign(x) * log(1 + |x|)
        values = torch.sign(values) * torch.expm1(values.abs())
    return values, 1.0 + torch.exp(confidence)


class DPTHead(nn.Module):
    """DPT head as in VGGT/IGGT (``depth_head``, ``point_head``); parameter names match the checkpoint."""

    def __init__(
        self,
        dim_in: int,
        output_dim: int,
        activation: str,
        patch_size: int = 14,
        features: int = 256,
        out_channels: tuple[int, int, int, int] = OFFICIAL_OUT_CHANNELS,
        layer_indices: tuple[int, int, int, int] = OFFICIAL_LAYER_INDICES,
        return_features: bool = False,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown DPT activation {activation!r}; expected one of {ACTIVATIONS}")
        if len(out_channels) != 4 or len(layer_indices) != 4:
            raise ValueError("a DPT head needs exactly four levels (out_channels and layer_indices)")
        if any(c % 4 for c in out_channels) or features % 8:
            raise ValueError(
                "the DPT position embedding needs out_channels divisible by 4 and features divisible by 8, "
                f"got out_channels={tuple(out_channels)}, features={features}"
            )
        self.activation = activation
        self.patch_size = patch_size
        self.layer_indices = tuple(layer_indices)
        self.return_features = return_features
        self.norm = nn.LayerNorm(dim_in)
        self.projects = build_level_projections(dim_in, tuple(out_channels))
        self.resize_layers = build_level_resizers(tuple(out_channels))
        self.scratch = DPTScratch(tuple(out_channels), features, output_dim)

    def forward(self, tokens: dict[int, Tensor], image_hw: tuple[int, int], patch_start_idx: int) -> DPTOutput:
        """``tokens[layer]`` is ``[N, P, dim_in]`` for each of the four layer indices."""
        grid_hw = patch_grid(image_hw, self.patch_size)
        levels = []
        for projection, resize, layer in zip(self.projects, self.resize_layers, self.layer_indices):
            x = projection(patch_tokens_to_map(tokens[layer], patch_start_idx, grid_hw, self.norm))
            levels.append(resize(add_position_embedding(x, image_hw)))
        fused, geometry_features = self.scratch.fuse(levels)
        output_hw = (grid_hw[0] * self.patch_size, grid_hw[1] * self.patch_size)
        x = resize_bilinear(self.scratch.output_conv1(fused), output_hw)
        raw = self.scratch.output_conv2(add_position_embedding(x, image_hw))
        values, confidence = activate(raw, self.activation)
        return DPTOutput(values, confidence, geometry_features if self.return_features else None)
