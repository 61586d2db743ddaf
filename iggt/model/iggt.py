"""IGGT: the whole network, from N photos of a scene to cameras, depth, points and instance features.

The aggregator runs on all views together (that is where views exchange information); every
head then works view by view, in chunks of ``config.frames_chunk_size`` views, so head memory
grows linearly with the number of views. The heads always compute in fp32 with autocast off,
whatever autocast the caller wraps the model in (the aggregator follows the caller's autocast).
With ``query_points`` (pixels in view 0) a model that has the point tracker (``config.track_head``)
also returns tracks across all views; the tracker needs every view at once, its feature maps are
computed in the same view chunks. `iggt.tracks` tracks thousands of points with bounded memory.

Submodule names (``aggregator``, ``camera_head``, ``depth_head``, ``point_head``,
``part_adaptor``, ``part_head``, ``track_head``) are those of the released checkpoint. Files and the Hub are
`iggt.loading` (``load_model`` / ``save_model``): this module only computes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..config import IGGTConfig
from ..errors import IGGTError
from ..geometry import pose_encoding_to_extrinsics_intrinsics
from .aggregator import Aggregator
from .camera_head import CameraHead
from .dpt_head import DPTHead
from .instance_head import InstanceAdaptor, InstanceHead
from .layers import patch_grid
from .track_head import TrackHead
from .track_modules import TrackOutput


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
    tracks: TrackOutput | None = None
    """Only when ``query_points`` were given: positions (``tracks.points`` ``[B, S, N, 2]``, every
    refinement in ``tracks.iterations``), ``tracks.visibility`` and ``tracks.confidence`` ``[B, S, N]``."""

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
        self.track_head = TrackHead(
            dim_in, patch_size=config.patch_size, features=config.track_features,
            hidden_size=config.track_hidden_size, depth=config.track_depth, iterations=config.track_iterations,
            corr_levels=config.track_corr_levels, corr_radius=config.track_corr_radius,
            out_channels=config.dpt_out_channels, layer_indices=config.head_layer_indices,
        ).requires_grad_(False) if config.track_head else None
        """Inference only: no loss here trains it, so it is frozen (optimizers and DDP leave it alone)."""

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

    def _run_heads(self, tokens: dict[int, Tensor], image_hw: tuple[int, int], patch_start_idx: int,
                   with_track_features: bool = False) -> dict[str, Tensor]:
        """Dense heads on a flat batch of views (``tokens[i]`` is ``[N, P, 2C]``, fp32)."""
        depth = self.depth_head(tokens, image_hw, patch_start_idx)
        points = self.point_head(tokens, image_hw, patch_start_idx)
        adaptor_levels = self.part_adaptor(tokens, image_hw, patch_start_idx)
        instance_features = self.part_head(adaptor_levels, points.features, image_hw)
        outputs = {
            "depth": depth.values,
            "depth_conf": depth.confidence,
            "world_points": points.values,
            "world_points_conf": points.confidence,
            "instance_features": instance_features,
        }
        if with_track_features:
            outputs["track_features"] = self.track_head.feature_extractor(tokens, image_hw, patch_start_idx)
        return outputs

    def _in_view_chunks(self, tokens: dict[int, Tensor],
                        run: Callable[[dict[int, Tensor]], dict[str, Tensor]]) -> dict[str, Tensor]:
        """``run`` on ``frames_chunk_size`` views at a time (flat ``[B * s, P, 2C]`` tokens), results as ``[B, S, ...]``."""
        batch, views = next(iter(tokens.values())).shape[:2]
        chunks: list[dict[str, Tensor]] = []
        for start in range(0, views, self.config.frames_chunk_size):
            stop = min(start + self.config.frames_chunk_size, views)
            chunk_tokens = {
                index: layer[:, start:stop].reshape(batch * (stop - start), *layer.shape[2:])
                for index, layer in tokens.items()
            }
            outputs = run(chunk_tokens)
            chunks.append({k: v.reshape(batch, stop - start, *v.shape[1:]) for k, v in outputs.items()})
        return {key: torch.cat([chunk[key] for chunk in chunks], dim=1) for key in chunks[0]}

    def require_tracker(self) -> TrackHead:
        """The point tracker, or a one-line error for a model without one."""
        if self.track_head is None:
            raise IGGTError("this model has no point tracker (its config has track_head = false, as the shipped "
                            "small model): tracks need a checkpoint with track_head weights, e.g. the released IGGT")
        return self.track_head

    def _check_tracking(self, query_points: Tensor, batch: int) -> Tensor:
        """``[N, 2]`` or ``[B, N, 2]`` float pixel positions -> ``[B, N, 2]``, or a one-line error."""
        self.require_tracker()
        if query_points.dim() == 2:
            query_points = query_points[None]
        if query_points.dim() != 3 or query_points.shape[-1] != 2 or query_points.shape[0] != batch:
            raise IGGTError(f"query_points must be [N, 2] or [{batch}, N, 2] pixel (x, y) positions in view 0, "
                            f"got shape {tuple(query_points.shape)}")
        if not query_points.is_floating_point() or query_points.shape[1] == 0:
            raise IGGTError("query_points must be a non-empty float tensor of pixel (x, y) positions")
        return query_points.float()

    def track_feature_maps(self, images: Tensor) -> Tensor:
        """The tracker's ``[B, S, C, H/2, W/2]`` feature maps (aggregator and track feature extractor only).

        Computed once per scene, they let `track_head.track` follow any number of query points in
        chunks (`iggt.tracks`) without running the rest of the model again.
        """
        extractor = self.require_tracker().feature_extractor
        images = self._as_batch(images, self.config.patch_size)
        image_hw = tuple(images.shape[-2:])
        tokens = self.aggregator(images, layers=self.config.head_layer_indices)
        with full_precision(images.device.type):
            tokens = {index: layer.float() for index, layer in tokens.items()}
            return self._in_view_chunks(
                tokens, lambda chunk: {"maps": extractor(chunk, image_hw, self.aggregator.patch_start_idx)})["maps"]

    def forward(self, images: Tensor, query_points: Tensor | None = None) -> Predictions:
        """``images`` ``[B, S, 3, H, W]`` or ``[S, 3, H, W]`` float in [0, 1]; H, W multiples of the patch size.

        ``query_points`` ``[N, 2]`` or ``[B, N, 2]``: pixel (x, y) positions in view 0 to track
        through all views (needs ``config.track_head``); the result is ``Predictions.tracks``.
        """
        images = self._as_batch(images, self.config.patch_size)
        if query_points is not None:
            query_points = self._check_tracking(query_points, images.shape[0]).to(images.device)
        image_hw = tuple(images.shape[-2:])
        tokens = self.aggregator(images)
        patch_start_idx = self.aggregator.patch_start_idx

        with full_precision(images.device.type):
            tokens = {index: layer.float() for index, layer in tokens.items()}
            pose_enc_list = self.camera_head(tokens[self.config.depth - 1])
            dense = self._in_view_chunks(
                tokens, lambda chunk: self._run_heads(chunk, image_hw, patch_start_idx, query_points is not None))
            tracks = None
            if query_points is not None:
                tracks = self.track_head.track(dense.pop("track_features"), query_points)

        return Predictions(
            pose_enc=pose_enc_list[-1],
            pose_enc_list=pose_enc_list,
            image_size_hw=image_hw,
            tracks=tracks,
            **dense,
        )
