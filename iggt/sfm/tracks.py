"""Point tracks across views: what bundle adjustment needs and the feed-forward model does not give.

A `TrackSource` turns a `Scene` into `Tracks`. Two sources exist:

* `ModelTracks`: the checkpoint's own point tracker (the released 1B model has one), queried at
  confident pixels of a few query views; tracks kept where visibility and confidence are high;
* `FeatureTracks`: pycolmap's SIFT features, matched between every pair of views where the
  *predicted* cameras and depth expect them (guided matching: a candidate far from where the
  prediction puts a feature is never considered), chained into tracks. This is what the shipped
  small model uses, since it has no tracker.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from iggt.geometry import project_points
from iggt.scene import Scene, rgb_uint8


@dataclass
class Tracks:
    """``N`` points followed through ``S`` views, in model-input pixels (x right, y down, pixel
    centres at integers, as the scene's intrinsics)."""

    xy: np.ndarray
    """``[S, N, 2]`` float64 (x, y); undefined where not visible."""
    visible: np.ndarray
    """``[S, N]`` bool: the point is seen in that view."""

    @property
    def count(self) -> int:
        return int(self.xy.shape[1])

    def keep(self, which: np.ndarray) -> "Tracks":
        """Only the tracks where ``which`` ``[N]`` is True."""
        return Tracks(self.xy[:, which], self.visible[:, which])


class TrackSource(Protocol):
    """Anything that finds tracks in a scene."""

    name: str

    def __call__(self, scene: Scene) -> Tracks: ...


# -- the model's own tracker ----------------------------------------------------------------
Tracker = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``(query_view, query_xy [N, 2]) -> (xy [S, N, 2], visibility [S, N], confidence [S, N])``: a
point tracker run on the scene's views, pixels in model-input coordinates."""


@dataclass
class ModelTracks:
    """Tracks from the checkpoint's point tracker, queried at confident, evenly spread pixels.

    ``query_views`` views are queried (evenly spaced, view 0 first), ``max_query_points`` pixels
    in all; an observation counts when visibility > ``min_visibility`` and confidence >
    ``min_confidence`` (the query pixel itself always counts).
    """

    tracker: Callable[[Scene], Tracker]
    """Builds the scene's `Tracker` (`model_tracker`)."""
    query_views: int = 4
    max_query_points: int = 2048
    min_visibility: float = 0.2
    min_confidence: float = 0.2
    name: str = "the model's point tracker"

    def __call__(self, scene: Scene) -> Tracks:
        views = np.unique(np.linspace(0, scene.num_views - 1, min(self.query_views, scene.num_views)).round()
                          .astype(int))
        per_view = max(self.max_query_points // len(views), 1)
        tracker = self.tracker(scene)
        xys, visibles = [], []
        for view in views:
            query = confident_pixels(scene, int(view), per_view)
            xy, visibility, confidence = tracker(int(view), query)
            visible = (np.asarray(visibility) > self.min_visibility) & (np.asarray(confidence) > self.min_confidence)
            visible[view] = True
            xy = np.array(xy, np.float64)
            xy[view] = query
            xys.append(xy)
            visibles.append(visible)
        return Tracks(np.concatenate(xys, axis=1), np.concatenate(visibles, axis=1))


def model_tracker(model, device: str = "cpu") -> Callable[[Scene], Tracker]:
    """The model's point tracker as a `Tracker` factory for one scene: an `iggt.tracks.SceneTracker`,
    which runs the aggregator and the tracker's feature maps once per query view (not the dense
    heads the scene already has) and follows the points in memory-bounded chunks."""
    from iggt.tracks import SceneTracker

    def for_scene(scene: Scene) -> Tracker:
        tracker = SceneTracker(model, scene, device=device)

        def track(query_view: int, query_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            result = tracker.track(query_xy, query_view)
            return result.points, result.visibility, result.confidence

        return track

    return for_scene


def confident_pixels(scene: Scene, view: int, count: int) -> np.ndarray:
    """Up to ``count`` pixels ``[n, 2]`` (x, y) of ``view``: the most confident depth pixel of
    each cell of an even grid, so the queries cover the whole image."""
    height, width = scene.image_size
    cell = max(int(np.sqrt(height * width / max(count, 1))), 1)
    confidence = np.where(scene.depth[view] > 0, scene.depth_conf[view], -np.inf)
    chosen = []
    for top in range(0, height, cell):
        for left in range(0, width, cell):
            block = confidence[top:top + cell, left:left + cell]
            row, col = np.unravel_index(np.argmax(block), block.shape)
            if np.isfinite(block[row, col]):
                chosen.append((left + col, top + row, block[row, col]))
    chosen.sort(key=lambda item: -item[2])
    return np.array([(x, y) for x, y, _ in chosen[:count]], np.float64).reshape(-1, 2)


# -- pycolmap features, matched under the predicted cameras ---------------------------------
@dataclass
class FeatureTracks:
    """SIFT tracks (pycolmap), matched between all view pairs where the prediction expects them.

    Each feature's predicted 3D point (depth unprojected with the predicted camera) is projected
    into the other view; only features within ``search_radius`` (share of the image diagonal) of
    that spot, both ways, are candidates. A match must be the mutual nearest neighbour among the
    candidates and pass Lowe's ratio test against the second-best (``ratio``). Matches are
    chained into tracks; a track that reaches two features of one view is dropped as ambiguous.
    The prior is what makes repeated textures (floors, checkers) matchable at all.
    """

    max_features: int = 4096
    upscale: int = 2
    """Features are extracted on the view enlarged by this factor: small model inputs (224 px)
    give few SIFT features otherwise."""
    search_radius: float = 0.08
    ratio: float = 0.85
    name: str = "pycolmap SIFT features matched under the predicted cameras"

    def __call__(self, scene: Scene) -> Tracks:
        return self.match(scene, self.extract(scene))

    def extract(self, scene: Scene) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per view: (x, y) model-input pixels ``[n, 2]`` and unit descriptors ``[n, 128]`` of its features
        (they depend on the pictures only, so scenes of the same pictures can share them)."""
        return [self._extract(scene.images[view]) for view in range(scene.num_views)]

    def match(self, scene: Scene, features: list[tuple[np.ndarray, np.ndarray]]) -> Tracks:
        """Tracks of ``features`` matched where the scene's cameras and depth expect them."""
        offsets = np.cumsum([0] + [len(xy) for xy, _ in features])
        parent = np.arange(offsets[-1])

        def root(node: int) -> int:
            while parent[node] != node:
                parent[node] = parent[parent[node]]
                node = parent[node]
            return node

        radius = self.search_radius * float(np.hypot(*scene.image_size))
        points = [_predicted_points(scene, view, xy) for view, (xy, _) in enumerate(features)]
        for i in range(scene.num_views):
            for j in range(i + 1, scene.num_views):
                near = (_transfer_distance(scene, points[i], j, features[j][0]) <= radius) \
                    & (_transfer_distance(scene, points[j], i, features[i][0]) <= radius).T
                for a, b in self._match(features[i][1], features[j][1], near):
                    parent[root(offsets[i] + a)] = root(offsets[j] + b)
        return _tracks_from_groups(np.array([root(n) for n in range(offsets[-1])], np.int64), offsets, features,
                                   scene.num_views)

    def _extract(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import pycolmap
        from PIL import Image

        grey = Image.fromarray(rgb_uint8(image)).convert("L")
        grey = grey.resize((grey.width * self.upscale, grey.height * self.upscale), Image.BICUBIC)
        options = pycolmap.FeatureExtractionOptions()
        options.sift.max_num_features = self.max_features
        extractor = pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)
        keypoints, descriptors = extractor.extract_from_uint8_array(np.asarray(grey))
        # COLMAP puts pixel centres at +0.5; the scene at integers
        xy = pycolmap.keypoints_to_matrix(keypoints)[:, :2].astype(np.float64) / self.upscale - 0.5
        unit = np.asarray(descriptors.data, np.float32)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        return xy, unit

    def _match(self, desc_a: np.ndarray, desc_b: np.ndarray, candidates: np.ndarray) -> list[tuple[int, int]]:
        """Mutual nearest neighbours among ``candidates`` ``[n_a, n_b]`` that pass the ratio test."""
        if len(desc_a) < 2 or len(desc_b) < 2:
            return []
        distance = 2.0 - 2.0 * desc_a @ desc_b.T
        distance[~candidates] = np.inf
        best_b = np.argmin(distance, axis=1)
        best_a = np.argmin(distance, axis=0)
        two = np.partition(distance, 1, axis=1)[:, :2]
        matches = []
        for a, b in enumerate(best_b):
            if np.isfinite(two[a, 0]) and best_a[b] == a and two[a, 0] < self.ratio ** 2 * two[a, 1]:
                matches.append((a, int(b)))
        return matches


def _tracks_from_groups(group: np.ndarray, offsets: np.ndarray, features: list, views: int) -> Tracks:
    """Connected features -> `Tracks` (groups of one feature, or with two features in a view, dropped)."""
    view_of = np.repeat(np.arange(views), np.diff(offsets))
    _, track_of, sizes = np.unique(group, return_inverse=True, return_counts=True)
    count = len(sizes)
    per_view = np.zeros((views, count), np.int64)
    np.add.at(per_view, (view_of, track_of), 1)
    keep = (sizes >= 2) & (per_view.max(axis=0) <= 1)
    xy = np.full((views, count, 2), np.nan)
    all_xy = np.concatenate([f[0] for f in features]) if len(view_of) else np.zeros((0, 2))
    xy[view_of, track_of] = all_xy
    return Tracks(xy[:, keep], per_view[:, keep] > 0)


def _predicted_points(scene: Scene, view: int, xy: np.ndarray) -> np.ndarray:
    """``[n, 3]`` world points the prediction puts under pixels ``xy`` of ``view`` (NaN without depth)."""
    height, width = scene.image_size
    cols = np.clip(np.round(xy[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(xy[:, 1]).astype(int), 0, height - 1)
    points = scene.points_from_depth[view, rows, cols].astype(np.float64)
    points[~(scene.depth[view, rows, cols] > 0)] = np.nan
    return points


def _transfer_distance(scene: Scene, points: np.ndarray, view: int, xy: np.ndarray) -> np.ndarray:
    """``[n_points, n_xy]`` pixel distance between each point projected into ``view`` and each of its
    features (inf for a point without depth or behind the camera)."""
    projected, _ = project_points(points, scene.extrinsics[view], scene.intrinsics[view])
    distance = np.linalg.norm(projected[:, None] - xy[None], axis=-1)
    return np.where(np.isfinite(distance), distance, np.inf)
