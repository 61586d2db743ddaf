"""Point tracks for a whole scene: thousands of query points followed through every view, with bounded memory.

`SceneTracker` runs the aggregator and the tracker's feature extractor once per query view
(not the dense heads), then follows query points in chunks sized to a memory budget: the
tracker's largest tensor is the correlation of each point with every cell of every view's
half-resolution feature map (views x H/2 x W/2 floats per point), so the budget sets how many
points share one pass.

Query points may come from any view. The release tracks from its first view, which is also the
aggregator's reference view, so for view k the views are put in the order k, then the others in
their order, exactly as ``model(images[order], query_points)`` would see them, and the result is
put back in scene order. Points in different chunks do not see each other (the tracker's
attention across tracks runs within a chunk); within one chunk the result is the forward's.

Coordinates are pixels ``(x, y)`` of the model input (``Scene.images``); `Scene.view_transforms`
map them to the original photos (the CLI's ``iggt track`` writes both).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from iggt.errors import IGGTError
from iggt.model.iggt import IGGT
from iggt.reconstruct import resolve_device, resolve_dtype
from iggt.scene import Scene, rgb_float

DEFAULT_MEMORY_MB = 512
"""Default budget for the tracker's working memory per chunk of points."""
CORRELATION_COPIES = 3
"""Working copies of a point's level-0 correlation volume (product, scaled copy, coarser levels)."""


@dataclass
class Tracks:
    """N points followed through the S views of a scene (model-input pixels)."""

    points: np.ndarray
    """``[S, N, 2]`` float32 pixel positions (x, y) in every view; in ``query_view`` the queries themselves."""
    visibility: np.ndarray
    """``[S, N]`` float32 probability that the point is visible in the view."""
    confidence: np.ndarray
    """``[S, N]`` float32 confidence of the position."""
    query_view: int

    def reliable(self, min_visibility: float = 0.5, min_confidence: float = 0.5) -> np.ndarray:
        """``[S, N]`` bool: observations visible and confident enough to use (e.g. for triangulation)."""
        return (self.visibility >= min_visibility) & (self.confidence >= min_confidence)


def grid_query_points(image_hw: tuple[int, int], count: int) -> np.ndarray:
    """About ``count`` query points ``[N, 2]`` (x, y) on a regular grid over the image, half a step from the edges."""
    if count < 1:
        raise IGGTError(f"the number of query points must be at least 1, got {count}")
    height, width = image_hw
    columns = max(1, round(math.sqrt(count * width / height)))
    rows = max(1, round(count / columns))
    xs = (np.arange(columns) + 0.5) * width / columns
    ys = (np.arange(rows) + 0.5) * height / rows
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)


def _as_image_tensor(images: Scene | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A scene, ``[S, H, W, 3]`` array (uint8, or float in [0, 1]) or ``[S, 3, H, W]`` tensor -> ``[1, S, 3, H, W]``
    float tensor in [0, 1]."""
    if isinstance(images, Scene):
        images = images.images
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise IGGTError(f"images must be [S, H, W, 3], got shape {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(rgb_float(images))).permute(0, 3, 1, 2)
    if images.dim() != 4 or images.shape[1] != 3:
        raise IGGTError(f"images must be [S, 3, H, W], got shape {tuple(images.shape)}")
    return images.float()[None]


class SceneTracker:
    """Tracks points of one scene: `track` follows any number of query points from any view.

    The tracker's feature maps are computed once per query view (the last one is kept).
    ``memory_mb`` bounds the tracker's working memory per chunk of points (not the feature maps
    themselves, which take views x C x H/2 x W/2 floats).
    """

    def __init__(self, model: IGGT, images: Scene | np.ndarray | torch.Tensor, *, device: str = "auto",
                 dtype: str = "auto", memory_mb: float = DEFAULT_MEMORY_MB):
        model.require_tracker()
        if memory_mb <= 0:
            raise IGGTError(f"the memory budget must be positive, got {memory_mb} MB")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.memory_mb = memory_mb
        self.images = _as_image_tensor(images).to(self.device)
        self.precision = resolve_dtype(dtype, self.device)
        self._maps: tuple[int, torch.Tensor] | None = None

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])

    def view_order(self, query_view: int) -> list[int]:
        """The order the tracker sees the views in: ``query_view`` first, then the others."""
        return [query_view, *(v for v in range(self.num_views) if v != query_view)]

    def feature_maps(self, query_view: int) -> torch.Tensor:
        """``[1, S, C, H/2, W/2]`` fp32 maps of the views in the order ``query_view``, then the others."""
        if self._maps is None or self._maps[0] != query_view:
            self._maps = None  # free the previous view's maps first
            order = self.view_order(query_view)
            autocast = (contextlib.nullcontext() if self.precision == torch.float32
                        else torch.autocast(device_type=self.device.type, dtype=self.precision))
            with torch.inference_mode(), autocast:
                self._maps = (query_view, self.model.track_feature_maps(self.images[:, order]))
        return self._maps[1]

    def chunk_size(self) -> int:
        """Points per tracker pass that keep its correlation volumes within the memory budget."""
        float_bytes = 4  # the tracker computes in fp32
        cells = (self.images.shape[-2] // 2) * (self.images.shape[-1] // 2)
        per_point = self.num_views * cells * float_bytes * CORRELATION_COPIES
        return max(1, int(self.memory_mb * 2**20 // per_point))

    def track(self, query_points: np.ndarray, query_view: int = 0) -> Tracks:
        """Follow ``query_points`` ``[N, 2]`` (pixel x, y in ``query_view``) through every view."""
        queries = np.asarray(query_points, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != 2 or len(queries) == 0:
            raise IGGTError(f"query points must be a non-empty [N, 2] array of pixel (x, y), got shape {queries.shape}")
        if not 0 <= query_view < self.num_views:
            raise IGGTError(f"query view {query_view} does not exist: the scene has views 0..{self.num_views - 1}")
        maps = self.feature_maps(query_view)
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        step = self.chunk_size()
        with torch.inference_mode():
            for start in range(0, len(queries), step):
                chunk = torch.from_numpy(queries[start:start + step])[None].to(self.device)
                out = self.model.track_head.track(maps, chunk)
                parts.append((out.points[0], out.visibility[0], out.confidence[0]))
        restore = np.argsort(self.view_order(query_view))
        points, visibility, confidence = (torch.cat(column, dim=1).cpu().numpy()[restore] for column in zip(*parts))
        return Tracks(points.astype(np.float32), visibility.astype(np.float32), confidence.astype(np.float32),
                      query_view)


def track_points(model: IGGT, scene: Scene | np.ndarray | torch.Tensor, query_points: np.ndarray,
                 query_view: int = 0, **options) -> Tracks:
    """One call: `SceneTracker` (``options``: device, dtype, memory_mb) and its `track`."""
    return SceneTracker(model, scene, **options).track(query_points, query_view)
