"""Camera head: iterative refinement of a 9-number pose encoding per view.

Reads the camera token of every view from the aggregator's last layer, lets the camera tokens
of one scene attend to each other in a small trunk, and refines the encoding
``[t (3), quaternion (4), fov_h, fov_w]`` over a few iterations. Each iteration is conditioned
on the previous (detached) estimate through adaptive LayerNorm modulation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import IGGTConfig
from .layers import Block, Mlp, init_transformer_weights

POSE_ENCODING_SIZE = 9


def activate_pose_encoding(raw: Tensor) -> Tensor:
    """Translation and quaternion as they are; the two fields of view through ReLU."""
    return torch.cat((raw[..., :7], torch.relu(raw[..., 7:])), dim=-1)


class CameraHead(nn.Module):
    """Camera tokens ``[B, S, P, 2C]`` -> list of pose encodings ``[B, S, 9]``, one per iteration."""

    def __init__(self, config: IGGTConfig):
        super().__init__()
        dim = config.head_dim_in
        self.iterations = config.camera_iterations
        self.token_norm = nn.LayerNorm(dim)
        self.trunk = nn.Sequential(
            *(Block(dim, config.camera_heads, config.mlp_ratio, config.layer_scale) for _ in range(config.camera_trunk_depth))
        )
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_SIZE))
        self.embed_pose = nn.Linear(POSE_ENCODING_SIZE, dim)
        # SiLU then Linear -> (shift, scale, gate); index 1 keeps the released key names.
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_ENCODING_SIZE)
        init_transformer_weights(self)

    def forward(self, last_layer_tokens: Tensor) -> list[Tensor]:
        camera_tokens = self.token_norm(last_layer_tokens[:, :, 0])  # [B, S, 2C]
        batch, views, _ = camera_tokens.shape
        raw: Tensor | None = None
        encodings = []
        for _ in range(self.iterations):
            if raw is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(batch, views, -1))
            else:
                condition = self.embed_pose(raw.detach())
            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)
            modulated = self.adaln_norm(camera_tokens) * (1 + scale) + shift
            hidden = self.trunk(gate * modulated + camera_tokens)
            delta = self.pose_branch(self.trunk_norm(hidden))
            raw = delta if raw is None else raw + delta
            encodings.append(activate_pose_encoding(raw))
        return encodings
