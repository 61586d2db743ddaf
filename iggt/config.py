"""Model configuration: one dataclass describing every shape of an IGGT network, with named presets.

``iggt-1b`` reproduces the released model exactly (so its checkpoint loads), ``small`` is the
CPU-trainable model the project ships, ``tiny`` is for fast tests. Every preset keeps every
component (DINOv2-style patch embedder, alternating attention, camera head, depth and point
DPT heads, instance adaptor and instance head); only widths, depths and head counts shrink.
Only ``iggt-1b`` carries the released point tracker (``track_head``): nothing here trains one.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class IGGTConfig:
    """Every hyper-parameter that changes the network's shapes or behaviour."""

    # Input and patch embedding (a DINOv2 ViT with registers).
    img_size: int = 518
    """Only sizes the learned position table: (img_size / patch_size)^2 cells, interpolated to any grid."""
    patch_size: int = 14
    embed_dim: int = 1024
    patch_embed_depth: int = 24
    patch_embed_heads: int = 16
    patch_embed_registers: int = 4
    patch_embed_layer_scale: float = 1.0

    # Alternating frame / global attention.
    depth: int = 24
    """Number of frame blocks (= number of global blocks)."""
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layer_scale: float = 0.01
    rope_base: float = 100.0
    head_layer_indices: tuple[int, int, int, int] = (4, 11, 17, 23)
    """Aggregator layers read by the dense heads (the camera head reads the last one)."""

    # Camera head.
    camera_trunk_depth: int = 4
    camera_iterations: int = 4
    camera_heads: int = 16

    # Dense geometry heads (depth and point maps).
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)

    # Instance branch.
    instance_features: int = 256
    instance_output_dim: int = 8
    apply_discarded_cross_attention: bool = False
    """False (the released head): ``cross_attention_1`` is part of the checkpoint but its output is
    discarded, so it is not computed. True feeds its output forward, as this project's heads did
    before 2026-11-30; models trained that way (the first shipped small model) keep it. A saved
    ``config.json`` without this field predates it and is read as True (see `read_config`)."""

    # Point tracker (the release's ``track_head``, VGGT's tracker).
    track_head: bool = True
    """Whether the model has the point tracker. The released model has it; the presets trained here
    (``small``, ``tiny``, hence the shipped model) do not, and their loads say so. A saved
    ``config.json`` without this field predates it and had no tracker (see `read_config`)."""
    track_features: int = 128
    """Width of the tracker's half-resolution feature maps (divisible by 4)."""
    track_hidden_size: int = 384
    """Width of the update transformer (8 attention heads)."""
    track_depth: int = 6
    track_iterations: int = 4
    track_corr_levels: int = 7
    track_corr_radius: int = 4

    # Runtime.
    frames_chunk_size: int = 12
    """The heads process this many views at a time, so their memory grows linearly with S."""
    gradient_checkpointing: bool = False
    """Recompute aggregator blocks in the backward pass (training only) to save memory."""
    merge_ratio: float = 0.0
    """Share of the patch tokens of views 1..S-1 merged away in global attention (training-free token
    merging, `iggt.model.token_merge`); 0 (the default and the release) attends over every token."""

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare and hash consistently.
        object.__setattr__(self, "head_layer_indices", tuple(int(i) for i in self.head_layer_indices))
        object.__setattr__(self, "dpt_out_channels", tuple(int(c) for c in self.dpt_out_channels))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if len(self.head_layer_indices) != 4:
            problems.append(f"head_layer_indices needs 4 layers, got {self.head_layer_indices}")
        if any(not 0 <= i < self.depth for i in self.head_layer_indices):
            problems.append(f"head_layer_indices {self.head_layer_indices} must lie in 0..{self.depth - 1}")
        if len(self.dpt_out_channels) != 4:
            problems.append(f"dpt_out_channels needs 4 values, got {self.dpt_out_channels}")
        for name, heads in (("num_heads", self.num_heads), ("patch_embed_heads", self.patch_embed_heads)):
            if self.embed_dim % heads:
                problems.append(f"embed_dim {self.embed_dim} is not divisible by {name} {heads}")
        if self.embed_dim % self.num_heads == 0 and (self.embed_dim // self.num_heads) % 4:
            problems.append("2D RoPE needs a head dimension (embed_dim / num_heads) divisible by 4")
        if (2 * self.embed_dim) % self.camera_heads:
            problems.append(f"2 * embed_dim {2 * self.embed_dim} is not divisible by camera_heads {self.camera_heads}")
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if not 0 <= self.merge_ratio < 1:
            problems.append(f"merge_ratio must lie in [0, 1), got {self.merge_ratio}")
        if self.track_features % 4 or self.track_hidden_size % 8:
            problems.append(f"track_features ({self.track_features}) must be divisible by 4 and track_hidden_size "
                            f"({self.track_hidden_size}) by 8")
        if min(self.track_depth, self.track_iterations, self.track_corr_levels, self.track_corr_radius) < 1:
            problems.append("track_depth, track_iterations, track_corr_levels and track_corr_radius must be >= 1")
        if self.frames_chunk_size < 1:
            problems.append(f"frames_chunk_size must be >= 1, got {self.frames_chunk_size}")
        if problems:
            raise ValueError("invalid IGGTConfig: " + "; ".join(problems))

    @property
    def head_dim_in(self) -> int:
        """Channel width of the aggregator outputs the heads read (frame and global concatenated)."""
        return 2 * self.embed_dim

    # ------------------------------------------------------------------ presets and (de)serialisation

    @classmethod
    def from_preset(cls, name: str) -> "IGGTConfig":
        """A named preset: ``iggt-1b``, ``small`` or ``tiny``."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown model preset {name!r}; available presets: {', '.join(PRESETS)}") from None

    def replace(self, **changes: Any) -> "IGGTConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "IGGTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown IGGTConfig fields: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


PRESETS: dict[str, IGGTConfig] = {
    "iggt-1b": IGGTConfig(),
    "small": IGGTConfig(
        img_size=224,
        embed_dim=128,
        patch_embed_depth=4,
        patch_embed_heads=4,
        depth=8,
        num_heads=4,
        head_layer_indices=(1, 3, 5, 7),
        camera_trunk_depth=2,
        camera_heads=4,
        dpt_features=64,
        dpt_out_channels=(64, 128, 256, 256),
        instance_features=64,
        track_head=False,
        frames_chunk_size=4,
    ),
    "tiny": IGGTConfig(
        img_size=224,
        embed_dim=64,
        patch_embed_depth=2,
        patch_embed_heads=4,
        depth=4,
        num_heads=4,
        head_layer_indices=(0, 1, 2, 3),
        camera_trunk_depth=1,
        camera_iterations=4,
        camera_heads=4,
        dpt_features=32,
        dpt_out_channels=(32, 64, 128, 128),
        instance_features=32,
        track_head=False,
        frames_chunk_size=4,
    ),
}
