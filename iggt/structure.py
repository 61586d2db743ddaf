"""Structure: what in a scene is room rather than object (floor, walls, ceiling, large planes, sky).

The clustering gives every surface an instance, the floor as much as a cup. People asking
"how many cubes?" do not mean the floor, so `mark_structure` flags the instances that are
large planes (and splits a large plane off an instance that swallowed it together with the
objects standing on it); the grounding leaves flagged instances out unless a question is about
them (`grounding.agent.asks_about_structure`), and the viewers show or hide them as one switch.

`sky_pixels` finds sky without a segmentation model: bright or blue pixels, far away, connected
to the top edge of the photo.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from iggt.geometry import fit_plane, ransac_plane
from iggt.instances import describe_instances
from iggt.scene import Instances, Scene, rgb_float

STRUCTURE_TINT = np.array([150, 150, 150], np.float64)
"""Structure instances are drawn in their colour blended 70 % into this grey, so objects stand out."""


@dataclass(frozen=True)
class StructureConfig:
    """When an instance counts as structure; lengths are shares of the scene size.

    The scene size is the diagonal of the 2nd-98th percentile box of the labelled points, so
    the rule holds at any (unknown) scale of the reconstruction.
    """

    plane_tolerance: float = 0.02
    """A point lies on a plane when it is closer than this."""
    min_planar_share: float = 0.9
    """An instance is structure when at least this share of its points lies on one plane..."""
    min_extent: float = 0.4
    """...and that plane spans at least this much (its longer in-plane side)..."""
    max_far_side_share: float = 0.2
    """...and bounds the scene: at most this share of the scene's points lies beyond the plane on its
    emptier side. The floor, a wall or the ceiling has the room on one side only; the face of a
    cupboard standing in it has room on both. (Measured on the model's reconstructions of 40
    generated rooms, the grounding benchmark's seeds 0-19 and 100-119, first plane of each instance:
    extent >= 0.3 alone took 51 of 102 objects for planes, extent >= 0.4 with this rule 14, and
    still marks 46 of the 47 instances that are mostly floor and wall.)"""
    min_split_share: float = 0.2
    """Otherwise each large plane holding at least this share of what is left of the instance is split
    off as its own structure instance (the floor and walls merged with the objects in the room)."""
    edge_tolerance_factor: float = 2.0
    """An instance that runs off the photo in every view that sees it (as a wall or the floor does)
    is searched for planes with the tolerance times this: the model's walls are curved and noisy,
    and an object is rarely cut by the border in every view. (Measured with `benchmarks/structure.py`
    on the 20 benchmark scenes reconstructed by the shipped model, 2026-12-02: room pixels marked
    62 -> 81 %, object pixels marked 4.0 -> 6.3 %; the same tolerance for every instance, 0.03,
    marks 76 % and 6.4 %. The grounding benchmark in verify mode: 50.7 -> 52.1 % right, 10.2 -> 8.7
    VLM calls per question.)"""
    edge_view_share: float = 0.01
    """Views where an instance covers less of the photo than this do not count for that rule."""
    max_planes: int = 4
    min_points: int = 50
    sample_points: int = 4000
    ransac_iterations: int = 200
    seed: int = 0


def mark_structure(scene: Scene, config: StructureConfig = StructureConfig()) -> Instances:
    """The scene's instances with large planes flagged as structure (split off where merged).

    Ids are renumbered by size as `describe_instances` does; structure instances get a
    greyed version of their colour.
    """
    if scene.instances is None:
        raise ValueError("the scene has no instances: segment it before looking for structure")
    labels = scene.instances.labels.copy()
    points = scene.points_from_depth
    usable = (labels >= 0) & np.isfinite(points).all(axis=-1)
    if usable.sum() < config.min_points:
        return scene.instances
    rng = np.random.default_rng(config.seed)
    scene_points = _sample(points[usable].astype(np.float64), 50_000, rng)
    size = _scene_size(scene_points)
    structure_labels = []
    next_label = int(labels.max()) + 1
    for k in range(scene.instances.count):
        pixels = np.flatnonzero((labels == k) & usable)
        planes, remaining = [], pixels
        search = config
        if _runs_off_every_view(labels == k, config.edge_view_share):
            search = replace(config, plane_tolerance=config.plane_tolerance * config.edge_tolerance_factor)
        while len(planes) < config.max_planes and len(remaining) >= config.min_points:
            on_plane = _bounding_plane(points.reshape(-1, 3)[remaining].astype(np.float64), scene_points, size,
                                       search, rng)
            if on_plane is None:
                break
            planes.append(remaining[on_plane])
            remaining = remaining[~on_plane]
        if not planes:
            continue
        if len(remaining) <= (1 - config.min_planar_share) * len(pixels):
            structure_labels.append(k)  # planes and a few stray points: all of it is structure
            continue
        for plane in planes:
            labels.reshape(-1)[plane] = next_label
            structure_labels.append(next_label)
            next_label += 1
    if not structure_labels:
        return scene.instances
    instances = describe_instances(labels, points, scene.images)
    structure_ids = np.unique(instances.labels[np.isin(labels, structure_labels)])
    for info in instances.info:
        if info.id in structure_ids:
            info.structure = True
            info.color = tuple(int(c) for c in np.round(0.3 * np.array(info.color) + 0.7 * STRUCTURE_TINT))
    return instances


def _runs_off_every_view(mask: np.ndarray, min_share: float) -> bool:
    """Whether ``mask`` (``[S, H, W]``) touches the photo's border in every view where it covers at
    least ``min_share`` of the photo (two views at least)."""
    seen = mask.reshape(len(mask), -1).mean(axis=1) >= min_share
    border = mask[:, 0].any(axis=1) | mask[:, -1].any(axis=1) | mask[:, :, 0].any(axis=1) | mask[:, :, -1].any(axis=1)
    return bool(seen.sum() >= 2 and border[seen].all())


def _sample(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    return points[rng.choice(len(points), min(len(points), count), replace=False)]


def _scene_size(points: np.ndarray) -> float:
    low, high = np.percentile(points, [2, 98], axis=0)
    return max(float(np.linalg.norm(high - low)), 1e-9)


def _bounding_plane(points: np.ndarray, scene_points: np.ndarray, size: float, config: StructureConfig,
                    rng: np.random.Generator) -> np.ndarray | None:
    """Mask of ``points`` on their dominant plane, when that plane is large and bounds the scene
    (``scene_points``); else None."""
    sample = _sample(points, config.sample_points, rng)
    tolerance = config.plane_tolerance * size
    inliers = ransac_plane(sample, tolerance, config.ransac_iterations, rng)
    if inliers.sum() < 3 or inliers.mean() < config.min_split_share:
        return None
    normal, offset = fit_plane(sample[inliers])
    on_plane = np.abs(points @ normal - offset) < tolerance
    flat = points[on_plane] - points[on_plane].mean(axis=0)
    in_plane_axes = np.linalg.svd(flat[:: max(1, len(flat) // 5000)], full_matrices=False)[2][:2]
    low, high = np.percentile(flat @ in_plane_axes.T, [2, 98], axis=0)
    if float((high - low).max()) < config.min_extent * size:
        return None
    signed = scene_points @ normal - offset
    far_side = min((signed > tolerance).mean(), (signed < -tolerance).mean())
    return on_plane if far_side <= config.max_far_side_share else None


# -- sky ----------------------------------------------------------------------------------------
SKY_MIN_BRIGHTNESS = 0.35
SKY_OVERCAST_BRIGHTNESS = 0.75
SKY_MAX_OVERCAST_SATURATION = 0.15
SKY_DEPTH_PERCENTILE = 60.0
"""Sky is at least as far as this percentile of its view's depths."""


def sky_pixels(scene: Scene) -> np.ndarray:
    """``[S, H, W]`` bool: pixels that look like sky, found without a segmentation model.

    A pixel is a sky candidate when it is blue-ish (blue above red, not below green) and not dark, or
    bright and nearly colourless (overcast), and its depth is beyond the 60th percentile of its
    view; sky is every candidate region that touches the top edge of the photo. Blue walls
    seen up to the top edge at the back of a room can be taken for sky: the filter is off by default.
    """
    images = rgb_float(scene.images)
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    brightness = images.max(axis=-1)
    saturation = (brightness - images.min(axis=-1)) / np.maximum(brightness, 1e-6)
    blueish = (blue > red) & (blue >= green) & (brightness >= SKY_MIN_BRIGHTNESS)
    overcast = (brightness >= SKY_OVERCAST_BRIGHTNESS) & (saturation <= SKY_MAX_OVERCAST_SATURATION)
    sky = np.zeros(scene.depth.shape, bool)
    for view in range(scene.num_views):
        depth = scene.depth[view]
        valid = np.isfinite(depth) & (depth > 0)
        far = depth >= np.percentile(depth[valid], SKY_DEPTH_PERCENTILE) if valid.any() else valid
        candidates = (blueish[view] | overcast[view]) & (far | ~valid)
        regions, _ = ndimage.label(candidates)
        touching_top = np.unique(regions[0][regions[0] > 0])
        sky[view] = np.isin(regions, touching_top)
    return sky


def structure_mask(instances: Instances) -> np.ndarray:
    """``[S, H, W]`` bool: pixels of structure instances."""
    ids = [i.id for i in instances.info if i.structure]
    return np.isin(instances.labels, ids) if ids else np.zeros(instances.labels.shape, bool)
