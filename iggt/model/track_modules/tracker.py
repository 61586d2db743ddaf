"""The iterative point tracker (the release's ``BaseTrackerPredictor``, from CoTracker / VGGSfM).

Query points live in view 0. Every track starts at its query position in every view with the
query's feature; each iteration reads the correlation pyramid around the current positions,
builds one token per (track, view) from the displacement, the correlations and the track
feature, and lets the update transformer correct positions and features. View 0's positions
stay the queries. After the last iteration the track features give visibility and confidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import Mlp
from .correlation import CorrelationPyramid
from .sampling import displacement_embedding, grid_position_embedding, sample_at_points
from .update_transformer import UpdateTransformer

MAX_SCALE = 518
"""Displacements enter the tokens also as raw values divided by this (the release's image size)."""


@dataclass
class TrackOutput:
    """Point tracks of N query points (given in view 0) across S views, batch-first."""

    iterations: list[Tensor]
    """``[B, S, N, 2]`` pixel positions (x, y) in every view after each refinement; the last is the answer."""
    visibility: Tensor
    """``[B, S, N]`` probability that the point is visible in the view."""
    confidence: Tensor
    """``[B, S, N]`` the tracker's confidence in the position."""

    @property
    def points(self) -> Tensor:
        """``[B, S, N, 2]`` positions after the last refinement."""
        return self.iterations[-1]


class Tracker(nn.Module):
    """Feature maps ``[B, S, C, h, w]`` (``stride`` times smaller than the images) and query points -> tracks."""

    def __init__(self, latent_dim: int = 128, hidden_size: int = 384, depth: int = 6, corr_levels: int = 7,
                 corr_radius: int = 4, stride: int = 2):
        super().__init__()
        self.latent_dim, self.stride = latent_dim, stride
        self.corr_levels, self.corr_radius = corr_levels, corr_radius
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.transformer_dim = 3 * latent_dim + 4
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = UpdateTransformer(self.transformer_dim, hidden_size, latent_dim + 2, depth)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def _tokens(self, pyramid: CorrelationPyramid, features: Tensor, points: Tensor, position_code: Tensor) -> Tensor:
        """``[B, N, S, transformer_dim]`` input of the update transformer for the current state."""
        batch, views, count, _ = features.shape
        correlations = self.corr_mlp(pyramid.sample(features, points).transpose(1, 2))  # [B, N, S, latent]
        flows = (points - points[:, :1]).transpose(1, 2).reshape(batch * count, views, 2)
        flow_code = torch.cat([displacement_embedding(flows, self.latent_dim // 2),
                               flows / MAX_SCALE, flows / MAX_SCALE], dim=-1).reshape(batch, count, views, -1)
        tokens = torch.cat([flow_code, correlations, features.transpose(1, 2)], dim=-1)
        reference = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, views - 1, -1)], 1)
        return tokens + position_code[:, :, None] + reference.to(tokens.dtype)

    def forward(self, query_points: Tensor, feature_maps: Tensor, iterations: int = 4) -> TrackOutput:
        """``query_points`` ``[B, N, 2]`` pixel (x, y) in view 0 of the images; ``feature_maps`` ``[B, S, C, h, w]``."""
        batch, count, _ = query_points.shape
        views = feature_maps.shape[1]
        maps = self.fmap_norm(feature_maps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        queries = query_points / float(self.stride)
        points = queries[:, None].repeat(1, views, 1, 1)  # [B, S, N, 2] in feature-map pixels
        features = sample_at_points(maps[:, 0], queries)[:, None].repeat(1, views, 1, 1)
        pyramid = CorrelationPyramid(maps, self.corr_levels, self.corr_radius)
        position_code = sample_at_points(
            grid_position_embedding(self.transformer_dim, maps.shape[-2:], maps.device).expand(batch, -1, -1, -1),
            queries)
        iterations_out = []
        for _ in range(iterations):
            points = points.detach()
            delta = self.updateformer(self._tokens(pyramid, features, points, position_code))  # [B, N, S, 2 + latent]
            feature_delta = delta[..., 2:].reshape(-1, self.latent_dim)
            features = features.transpose(1, 2).reshape(-1, self.latent_dim)
            features = self.ffeat_updater(self.ffeat_norm(feature_delta)) + features
            features = features.reshape(batch, count, views, self.latent_dim).transpose(1, 2)
            points = points + delta[..., :2].transpose(1, 2)
            points = torch.cat([queries[:, None], points[:, 1:]], dim=1)  # view 0 stays the query
            iterations_out.append(points * self.stride)
        flat = features.reshape(-1, self.latent_dim)
        visibility = torch.sigmoid(self.vis_predictor(flat)).reshape(batch, views, count)
        confidence = torch.sigmoid(self.conf_predictor(flat)).reshape(batch, views, count)
        return TrackOutput(iterations_out, visibility, confidence)
