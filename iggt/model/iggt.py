"""IGGT: the whole network, from N photos of a scene to cameras, depth, points and instance features.

The aggregator runs on all views together (that is where views exchange information); every
head then works view by view, in chunks of ``config.frames_chunk_size`` views, so head memory
grows linearly with the number of views. The heads always compute in fp32 with autocast off,
whatever autocast the caller wraps the model in (the aggregator follows the caller's autocast).

Submodule names (``aggregator``, ``camera_head``, ``depth_head``, ``point_head``,
``part_adaptor``, ``part_head``) are those of the released checkpoint. Files and the Hub are
`iggt.loading` (``load_model`` / ``save_model``): this module only computes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from ..config import IGGTConfig
from ..geometry import pose_encoding_to_extrinsics_intrinsics
from .aggregator import Aggregator
from .camera_head import CameraHead
from .dpt_head import DPTHead
from .instance_head import InstanceAdaptor, InstanceHead
from .layers import patch_grid


@dataclass
class Predictions:
    """Everything one forward pass predicts, batch-first (``[B, S, ...]``)."""

    pose_enc: Tensor
    """``[B, S, 9]`` pose encodings of the last refinement iteration."""
    pose_enc_list: list[Tensor]
    """``[B, S, 9]`` pose encodings of every iteration (training supervises all)."""
    depth: Tensor
    """``[B, S, H, W, 1]`` depth along the camera z axis."""
    depth_conf: Tensor
    """``[B, S, H, W]`` depth confidence (>= 1)."""
    world_points: Tensor
    """``[B, S, H, W, 3]`` points in the first camera's frame."""
    world_points_conf: Tensor
    """``[B, S, H, W]`` point confidence (>= 1)."""
    instance_features: Tensor
    """``[B, S, D, H, W]`` raw (not normalised) instance features, channel-first."""
    image_size_hw: tuple[int, int]

    def extrinsics(self) -> Tensor:
        """``[B, S, 3, 4]`` OpenCV world-to-camera matrices (world = first camera)."""
        return pose_encoding_to_extrinsics_intrinsics(self.pose_enc, self.image_size_hw)[0]

    def intrinsics(self) -> Tensor:
        """``[B, S, 3, 3]`` pinhole intrinsics for the input image size."""
        return pose_encoding_to_extrinsics_intrinsics(self.pose_enc, self.image_size_hw)[1]


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Switch autocast off for the device in use and for the CPU (a CPU autocast would apply too)."""
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys((device_type, "cpu")):
            if torch.amp.is_autocast_available(kind):  # not e.g. for "meta" (shape/FLOP analysis)
                stack.enter_context(torch.autocast(device_type=kind, enabled=False))
        yield


class IGGT(nn.Module):
    """Instance-grounded geometry transformer. ``IGGT(IGGTConfig.from_preset("small"))``."""

    def __init__(self, config: IGGTConfig):
        super().__init__()
        if not isinstance(config, IGGTConfig):
            raise TypeError(f"IGGT needs an IGGTConfig (e.g. IGGTConfig.from_preset('small')), got {type(config).__name__}")
        if config.instance_features != config.dpt_features:
            raise ValueError(
                "the instance head attends to the point head's features, so instance_features "
                f"({config.instance_features}) must equal dpt_features ({config.dpt_features})"
            )
        self.config = config
        self.load_report = None
        """The `iggt.checkpoints.LoadReport` of the weights' checkpoint (set by `iggt.loading`), else None."""
        dim_in = config.head_dim_in
        dense = dict(
            patch_size=config.patch_size,
            features=config.dpt_features,
            out_channels=config.dpt_out_channels,
            layer_indices=config.head_layer_indices,
        )
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(config)
        self.depth_head = DPTHead(dim_in, output_dim=2, activation="exp", **dense)
        self.point_head = DPTHead(dim_in, output_dim=4, activation="inv_log", return_features=True, **dense)
        self.part_adaptor = InstanceAdaptor(
            dim_in, features=config.instance_features, layer_indices=config.head_layer_indices,
            patch_size=config.patch_size,
        )
        self.part_head = InstanceHead(
            dim_in,
            features=config.instance_features,
            output_dim=config.instance_output_dim,
            patch_size=config.patch_size,
            out_channels=config.dpt_out_channels,
            apply_discarded_cross_attention=config.apply_discarded_cross_attention,
        )

    def state_entries_unused_by_forward(self) -> set[str]:
        """State-dict entries no forward pass reads, or that the model computes itself.

        A checkpoint may lack them without changing any output: the released part head's
        inherited DPT front end and DINOv2's ``mask_token`` (never read), the window index
        tables (rebuilt by the constructor), BatchNorm's step counters (read only in training),
        and ``cross_attention_1`` unless the model was trained with it.
        """
        never_read = ("aggregator.patch_embed.mask_token", "part_head.norm.", "part_head.projects.",
                      "part_head.resize_layers.")
        if not self.config.apply_discarded_cross_attention:
            never_read += ("part_head.cross_attention_1.",)
        return {name for name in self.state_dict()
                if name.startswith(never_read) or ".relative_position_index_" in name
                or name.endswith(".num_batches_tracked")}

    @staticmethod
    def _as_batch(images: Tensor, patch_size: int) -> Tensor:
        if images.dim() == 4:
            images = images[None]
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(
                f"images must be [B, S, 3, H, W] or [S, 3, H, W] RGB, got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
        patch_grid(tuple(images.shape[-2:]), patch_size)
        return images

    def _run_heads(self, tokens: dict[int, Tensor], image_hw: tuple[int, int], patch_start_idx: int) -> dict[str, Tensor]:
        """Dense heads on a flat batch of views (``tokens[i]`` is ``[N, P, 2C]``, fp32)."""
        depth = self.depth_head(tokens, image_hw, patch_start_idx)
        points = self.point_head(tokens, image_hw, patch_start_idx)
        adaptor_levels = self.part_adaptor(tokens, image_hw, patch_start_idx)
        instance_features = self.part_head(adaptor_levels, points.features, image_hw)
        return {
            "depth": depth.values,
            "depth_conf": depth.confidence,
            "world_points": points.values,
            "world_points_conf": points.confidence,
            "instance_features": instance_features,
        }

    def forward(self, images: Tensor) -> Predictions:
        """``images`` ``[B, S, 3, H, W]`` or ``[S, 3, H, W]`` float in [0, 1]; H, W multiples of the patch size."""
        images = self._as_batch(images, self.config.patch_size)
        batch, views, _, height, width = images.shape
        image_hw = (height, width)
        tokens = self.aggregator(images)
        patch_start_idx = self.aggregator.patch_start_idx

        with full_precision(images.device.type):
            tokens = {index: layer.float() for index, layer in tokens.items()}
            pose_enc_list = self.camera_head(tokens[self.config.depth - 1])
            chunks: list[dict[str, Tensor]] = []
            for start in range(0, views, self.config.frames_chunk_size):
                stop = min(start + self.config.frames_chunk_size, views)
                chunk_tokens = {
                    index: layer[:, start:stop].reshape(batch * (stop - start), *layer.shape[2:])
                    for index, layer in tokens.items()
                }
                outputs = self._run_heads(chunk_tokens, image_hw, patch_start_idx)
                chunks.append({k: v.reshape(batch, stop - start, *v.shape[1:]) for k, v in outputs.items()})
            dense = {key: torch.cat([chunk[key] for chunk in chunks], dim=1) for key in chunks[0]}

        return Predictions(
            pose_enc=pose_enc_list[-1],
            pose_enc_list=pose_enc_list,
            image_size_hw=image_hw,
            **dense,
        )
