"""Baselines that the evaluation measures next to the model, on the same data in the same run.

* `per_view_instances`: the model's own features, clustered in each view separately and
  chained across consecutive views by 2D mask overlap only. It isolates what IGGT's joint
  multi-view clustering (and its 3D-consistent features) adds over a per-frame segmenter with
  a naive tracker.
* `geometry_instances`: no features at all: remove the large planes (floor, walls) from the
  predicted point cloud and split the rest into 3D connected components (DBSCAN). It shows
  how much of the task the geometry alone solves in uncluttered scenes.
* the oracle upper bound (perfect features through our clustering) needs the ground truth, so
  the runner builds it with `iggt.data.oracle.oracle_scene`.

Every function returns ``[S, H, W]`` int labels, negative = background, ids shared across views.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from sklearn.cluster import DBSCAN

from iggt.evaluation.metrics import label_overlap
from iggt.geometry import ransac_plane
from iggt.instances import ClusteringConfig, segment_instances
from iggt.scene import BACKGROUND, Scene

MIN_CHAIN_IOU = 0.1
"""Two masks of consecutive views are the same instance only if their 2D IoU reaches this."""


# ============================================================================ (a) per view + 2D chaining


def chain_views(view_labels: list[np.ndarray], min_iou: float = MIN_CHAIN_IOU) -> np.ndarray:
    """Give labels found independently per view one id per instance by 2D overlap of consecutive views.

    View 0 keeps its labels. Each later view's instances are matched to the (already chained)
    instances of the previous view by Hungarian matching on the IoU of their masks at the
    same pixel positions, with no reprojection: a match (IoU >= ``min_iou``) inherits the
    previous id, every other instance gets a new id. An instance that leaves the view and
    comes back therefore comes back under a new id, as with any frame-to-frame tracker.
    """
    chained = [np.where(view_labels[0] >= 0, view_labels[0], BACKGROUND).astype(np.int64)]
    next_id = int(chained[0].max(initial=-1)) + 1
    for labels in view_labels[1:]:
        previous = chained[-1]
        # label_overlap reads ids <= 0 of its first argument as background, hence the +1.
        overlap = label_overlap(previous + 1, labels)
        iou = overlap.iou()
        inherited: dict[int, int] = {}
        if iou.size:
            rows, cols = linear_sum_assignment(iou, maximize=True)
            inherited = {int(overlap.pred_ids[c]): int(overlap.gt_ids[r]) - 1
                         for r, c in zip(rows, cols) if iou[r, c] >= min_iou}
        current = np.full(labels.shape, BACKGROUND, dtype=np.int64)
        for label in overlap.pred_ids:
            if int(label) not in inherited:
                inherited[int(label)] = next_id
                next_id += 1
            current[labels == label] = inherited[int(label)]
        chained.append(current)
    return np.stack(chained)


def per_view_instances(scene: Scene, clustering: ClusteringConfig | None = None) -> np.ndarray:
    """Baseline (a): cluster each view's features on its own, chain the views by 2D IoU.

    The clustering is the model's, with its pixel counts (``min_cluster_size``,
    ``min_samples``) divided by the number of views: they are meant for all views together,
    and one view holds about 1/S of an object's pixels.
    """
    clustering = clustering or ClusteringConfig()
    views = scene.num_views
    per_view = replace(clustering, min_cluster_size=max(2, round(clustering.min_cluster_size / views)),
                       min_samples=max(1, round(clustering.min_samples / views)))
    return chain_views([segment_instances(scene.select_views([s]), per_view).labels[0] for s in range(views)])


# ============================================================================ (b) geometry only


@dataclass
class GeometryGroupingConfig:
    """Settings of the geometry-only baseline; lengths are shares of the scene size.

    The scene size is the diagonal of the 2nd-98th percentile box of the points, so the
    settings hold for predictions of any (unknown) scale. The defaults were tuned on generated
    rooms with their ground-truth geometry (where the baseline reaches a T-mIoU of 0.5-0.9),
    so they favour the baseline rather than the model.
    """

    sample_points: int = 50000
    """Points drawn (seeded) for plane fitting and clustering; every pixel then takes its nearest sample's label."""
    max_planes: int = 6
    min_plane_fraction: float = 0.06
    """A plane is floor or wall (and removed) only if it holds at least this share of the points."""
    plane_tolerance: float = 0.006
    ransac_iterations: int = 300
    cluster_eps: float = 0.015
    """DBSCAN neighbourhood radius."""
    min_samples: int = 5
    min_cluster_fraction: float = 0.0005
    """Components smaller than this share of the points are noise (background)."""
    seed: int = 0


def geometry_instances(scene: Scene, config: GeometryGroupingConfig | None = None) -> np.ndarray:
    """Baseline (b): planes removed from the points (depth + cameras), the rest split by DBSCAN.

    1. Draw ``sample_points`` of the finite points of all views.
    2. Repeatedly fit the RANSAC plane with most inliers and remove it while it holds at least
       ``min_plane_fraction`` of the sample (floor and walls), at most ``max_planes`` times.
    3. DBSCAN on what remains (Euclidean, ``cluster_eps``); components below
       ``min_cluster_fraction`` of the sample are noise.
    4. Every pixel takes the label of its nearest sample point (background if that point was
       on a plane or noise), which labels all views at once and keeps ids shared across views.
    """
    config = config or GeometryGroupingConfig()
    points = scene.points_from_depth.reshape(-1, 3).astype(np.float64)
    finite = np.flatnonzero(np.isfinite(points).all(axis=1))
    labels = np.full(len(points), BACKGROUND, dtype=np.int64)
    if len(finite) < config.min_samples:
        return labels.reshape(scene.depth.shape)
    rng = np.random.default_rng(config.seed)
    sample_index = rng.choice(finite, min(config.sample_points, len(finite)), replace=False)
    sample = points[sample_index]
    low, high = np.percentile(sample, [2, 98], axis=0)
    size = max(float(np.linalg.norm(high - low)), 1e-9)

    sample_labels = np.full(len(sample), BACKGROUND, dtype=np.int64)
    remaining = np.arange(len(sample))
    for _ in range(config.max_planes):
        if len(remaining) < 3:
            break
        inliers = ransac_plane(sample[remaining], config.plane_tolerance * size, config.ransac_iterations, rng)
        if inliers.sum() < config.min_plane_fraction * len(sample):
            break
        remaining = remaining[~inliers]

    if len(remaining) >= config.min_samples:
        dbscan = DBSCAN(eps=config.cluster_eps * size, min_samples=config.min_samples)
        components = dbscan.fit_predict(sample[remaining])
        counts = np.bincount(components[components >= 0])
        large = np.flatnonzero(counts >= config.min_cluster_fraction * len(sample))
        new_id = np.full(len(counts) + 1, BACKGROUND, dtype=np.int64)  # last slot: DBSCAN noise (-1)
        new_id[large] = np.arange(len(large))
        sample_labels[remaining] = new_id[components]

    nearest = cKDTree(sample).query(points[finite])[1]
    labels[finite] = sample_labels[nearest]
    return labels.reshape(scene.depth.shape)
