"""Convolutional building blocks shared by the dense heads and the instance branch.

Everything here follows the released IGGT/VGGT code closely enough that the official
weights give the official numbers: the attribute names are the checkpoint's, and two
quirks of the release are reproduced on purpose (the residual conv unit adds ReLU(input),
resizes use bilinear interpolation with ``align_corners=True``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITION_EMBEDDING_RATIO = 0.1
"""Scale of the sine/cosine position embedding added to DPT feature maps."""

POSITION_EMBEDDING_BASE = 100.0
"""Base of the embedding's geometric frequency ladder (omega_k = base^(-k / (D/4)))."""


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[N, C, H, W]`` with corner pixels aligned, as every DPT resize is."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def patch_tokens_to_map(tokens: Tensor, patch_start_idx: int, grid_hw: tuple[int, int], norm: nn.Module) -> Tensor:
    """Turn one level of aggregator tokens ``[N, P, C]`` into a normalised ``[N, C, h, w]`` map.

    The first ``patch_start_idx`` tokens of every view (camera and register tokens) are dropped;
    the patch tokens are in row-major grid order.
    """
    h, w = grid_hw
    patches = tokens[:, patch_start_idx:]
    if patches.shape[1] != h * w:
        raise ValueError(
            f"expected {h * w} patch tokens for a {h}x{w} grid after {patch_start_idx} special tokens, "
            f"got {patches.shape[1]}"
        )
    patches = norm(patches)
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)


# --------------------------------------------------------------------------- position embedding


def _sincos(values: Tensor, channels: int) -> Tensor:
    """``[M]`` positions -> ``[M, channels]``: sines for ``channels/2`` frequencies, then cosines."""
    frequencies = channels // 2
    precise = torch.float32 if values.device.type == "mps" else torch.float64  # MPS has no float64
    omega = torch.arange(frequencies, dtype=precise, device=values.device) / frequencies
    omega = 1.0 / POSITION_EMBEDDING_BASE**omega
    angles = values.to(precise)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def position_embedding(channels: int, grid_hw: tuple[int, int], image_hw: tuple[int, int], device=None) -> Tensor:
    """Sine/cosine embedding ``[channels, gh, gw]`` of a normalised grid with the image's aspect ratio.

    The grid spans x in +-(r / sqrt(r^2 + 1)) (gw - 1) / gw and y in +-(1 / sqrt(r^2 + 1)) (gh - 1) / gh
    with r = W / H (positions evaluated in float32 as the release does, frequencies in float64).
    The first half of the channels encodes x, the second half y.
    """
    if channels % 4:
        raise ValueError(f"position embedding needs a channel count divisible by 4, got {channels}")
    grid_h, grid_w = grid_hw
    aspect = image_hw[1] / image_hw[0]
    diagonal = (aspect**2 + 1.0) ** 0.5
    span_x = aspect / diagonal * (grid_w - 1) / grid_w
    span_y = 1.0 / diagonal * (grid_h - 1) / grid_h
    xs = torch.linspace(-span_x, span_x, steps=grid_w, dtype=torch.float32, device=device)
    ys = torch.linspace(-span_y, span_y, steps=grid_h, dtype=torch.float32, device=device)
    grid_x = xs[None, :].expand(grid_h, grid_w).reshape(-1)
    grid_y = ys[:, None].expand(grid_h, grid_w).reshape(-1)
    embedding = torch.cat([_sincos(grid_x, channels // 2), _sincos(grid_y, channels // 2)], dim=1)
    return embedding.T.reshape(channels, grid_h, grid_w)


def add_position_embedding(x: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``x [N, C, gh, gw]`` plus 0.1 times its position embedding (same for every frame)."""
    embedding = position_embedding(x.shape[1], (x.shape[2], x.shape[3]), image_hw, device=x.device)
    return x + POSITION_EMBEDDING_RATIO * embedding.to(x.dtype)


# --------------------------------------------------------------------------- DPT fusion


class ResidualConvUnit(nn.Module):
    """Two 3x3 convolutions with a skip connection.

    The release applies an in-place ReLU to the unit's input, so its skip adds ReLU(x)
    rather than x: out = relu(x) + conv2(relu(conv1(relu(x)))). The trained weights depend on it.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FusionBlock(nn.Module):
    """One DPT refinement step: add a refined skip level, refine, resize, project (1x1).

    The deepest block of a DPT has no skip input and therefore no ``resConfUnit1``.
    """

    def __init__(self, features: int, has_skip: bool = True):
        super().__init__()
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        """Fuse; resize to ``size`` (default: twice the input size)."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = resize_bilinear(x, size if size is not None else (2 * x.shape[2], 2 * x.shape[3]))
        return self.out_conv(x)


OUTPUT_HIDDEN_CHANNELS = 32
"""Width of the last hidden layer of every DPT-style head (``output_conv2.0``)."""


class DPTScratch(nn.Module):
    """The fusion part of a DPT (the checkpoint's ``scratch``): per-level 3x3 projections to a
    common width, four fusion blocks and the two output convolutions. ``output_dim=None`` builds
    the point tracker's feature-only variant: one full-width ``output_conv1`` and no ``output_conv2``."""

    def __init__(self, in_channels: tuple[int, int, int, int], features: int, output_dim: int | None):
        super().__init__()
        for level, channels in enumerate(in_channels, start=1):
            setattr(self, f"layer{level}_rn", nn.Conv2d(channels, features, kernel_size=3, padding=1, bias=False))
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features, has_skip=False)
        if output_dim is None:
            self.output_conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
            return
        self.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, OUTPUT_HIDDEN_CHANNELS, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(OUTPUT_HIDDEN_CHANNELS, output_dim, kernel_size=1),
        )

    def project_levels(self, levels: list[Tensor]) -> list[Tensor]:
        """Apply ``layer1_rn`` .. ``layer4_rn`` to the four levels (finest first)."""
        return [getattr(self, f"layer{i}_rn")(level) for i, level in enumerate(levels, start=1)]

    def fuse(self, levels: list[Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Four levels (4h, 2h, h, h/2 sized) -> fused map at 8h x 8w and the intermediate
        refinenet2/3/4 outputs (at 4h, 2h, h), which the instance branch uses as geometry features."""
        l1, l2, l3, l4 = self.project_levels(levels)
        g4 = self.refinenet4(l4, size=l3.shape[2:])
        g3 = self.refinenet3(g4, l3, size=l2.shape[2:])
        g2 = self.refinenet2(g3, l2, size=l1.shape[2:])
        return self.refinenet1(g2, l1), (g2, g3, g4)


# --------------------------------------------------------------------------- instance adaptor


class Projects(nn.Module):
    """Residual projection of the instance adaptor (batch-normalised, as in the release):
    r = relu(bn(conv1x1(x))); out = conv1x1(bn(conv3x3(relu(bn(conv3x3(r))))) + r)."""

    def __init__(self, channels: int):
        super().__init__()
        self.input_proj = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.residual_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.output_proj = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        r = self.input_proj(x)
        return self.output_proj(self.residual_conv(r) + r)
