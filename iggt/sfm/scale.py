"""Metric scale from one known length, and similarity transforms of a whole `Scene`.

A feed-forward reconstruction has no unit: its sizes are "model units". One length the user
knows fixes the scale, given in one of three ways (`KnownLength`):

* two pixels of one view and the distance between the surface points there;
* an instance and its height (extent along the scene's up direction, as the grounding sees it);
* two views and the distance between their camera centres.

`apply_metric_scale` multiplies every length in the scene (depth, points, camera translations,
instance positions and boxes) by the factor and names the units (``"m"``), so every export, the
instance table and the grounding's answers are in metres from then on.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from iggt.errors import IGGTError
from iggt.geometry import invert_extrinsics
from iggt.scene import Instances, Scene

MODEL_UNITS = "model units"
METRES = "m"


class ScaleError(IGGTError):
    """A known length that cannot set the scale (zero, identical pixels, unknown instance, ...)."""


@dataclass(frozen=True)
class KnownLength:
    """One length the user knows, in metres, and what it is the length of."""

    kind: Literal["pixels", "instance", "cameras"]
    length: float
    view: int = 0
    """``pixels``: the view the two pixels are in."""
    pixels: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    """``pixels``: two (x, y) positions in the photo's own pixels."""
    instance: int = 0
    """``instance``: its id; the length is its height."""
    cameras: tuple[int, int] = (0, 1)
    """``cameras``: two view indices; the length is the distance between their centres."""

    @classmethod
    def parse(cls, text: str) -> "KnownLength":
        """``pixels:VIEW:X1,Y1:X2,Y2=METRES``, ``instance:ID=METRES`` or ``cameras:I,J=METRES``."""
        spec, equals, value = text.partition("=")
        kind, _, rest = spec.strip().partition(":")
        known = cls._read(kind, rest, value) if equals else None
        if known is None:
            raise ScaleError(f"cannot read the known length {text!r}: use pixels:VIEW:X1,Y1:X2,Y2=METRES, "
                             f"instance:ID=METRES or cameras:I,J=METRES")
        if not known.length > 0:
            raise ScaleError(f"a known length must be positive, not {known.length:g}")
        return known

    @classmethod
    def _read(cls, kind: str, rest: str, value: str) -> "KnownLength | None":
        try:
            length = float(value)
            if kind == "pixels":
                view, first, second = rest.split(":")
                (x1, y1), (x2, y2) = (tuple(float(v) for v in p.split(",")) for p in (first, second))
                return cls("pixels", length, view=int(view), pixels=((x1, y1), (x2, y2)))
            if kind == "instance":
                return cls("instance", length, instance=int(rest))
            if kind == "cameras":
                i, j = (int(v) for v in rest.split(","))
                return cls("cameras", length, cameras=(i, j))
        except ValueError:
            pass
        return None


def measured_length(scene: Scene, known: KnownLength) -> float:
    """The length ``known`` refers to, measured in the scene's current units."""
    if not known.length > 0:
        raise ScaleError(f"a known length must be positive, not {known.length:g}")
    if known.kind == "pixels":
        return _pixel_distance(scene, known.view, known.pixels)
    if known.kind == "instance":
        return _instance_height(scene, known.instance)
    return _camera_distance(scene, *known.cameras)


def metric_factor(scene: Scene, known: KnownLength) -> float:
    """Metres per scene unit."""
    measured = measured_length(scene, known)
    if not measured > 1e-12:
        raise ScaleError("the known length measures zero in the reconstruction: choose two points farther apart")
    return known.length / measured


def apply_metric_scale(scene: Scene, known: KnownLength) -> Scene:
    """The scene in metres, from one known length."""
    return transform_scene(scene, metric_factor(scene, known), units=METRES)


def transform_scene(scene: Scene, scale: float, rotation: np.ndarray | None = None,
                    translation: np.ndarray | None = None, units: str | None = None) -> Scene:
    """The scene moved by the similarity ``x -> scale * rotation @ x + translation`` (world frame and
    lengths; cameras follow, depth scales), with instance statistics recomputed; ``units`` names the
    new units (unchanged when None)."""
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
    translation = np.zeros(3) if translation is None else np.asarray(translation, np.float64)
    old = scene.extrinsics.astype(np.float64)
    camera_rotation = old[:, :, :3] @ rotation.T
    camera_translation = scale * old[:, :, 3] - camera_rotation @ translation
    extrinsics = np.concatenate([camera_rotation, camera_translation[..., None]], axis=2).astype(np.float32)

    def move(points: np.ndarray) -> np.ndarray:
        return (scale * points.astype(np.float64) @ rotation.T + translation).astype(np.float32)

    moved = replace(scene, extrinsics=extrinsics, depth=(scene.depth * scale).astype(np.float32),
                    world_points=move(scene.world_points), points_from_depth=move(scene.points_from_depth),
                    units=units or scene.units)
    return moved.with_instances(_moved_instances(moved, scene.instances))


def _moved_instances(scene: Scene, instances: Instances | None) -> Instances | None:
    """The same instances with centroids and boxes recomputed from the moved points."""
    from iggt.instances import describe_instances

    if instances is None:
        return None
    described = describe_instances(instances.labels, scene.points_from_depth, scene.images, colors=instances.colors)
    info = [replace(old, centroid=new.centroid, bbox_min=new.bbox_min, bbox_max=new.bbox_max)
            for new, old in zip(described.info, instances.info)]
    return Instances(instances.labels, info)


def _pixel_distance(scene: Scene, view: int, pixels) -> float:
    from iggt.sfm.colmap import view_transform

    if not 0 <= view < scene.num_views:
        raise ScaleError(f"view {view} does not exist: views are 0..{scene.num_views - 1}")
    if np.allclose(pixels[0], pixels[1]):
        raise ScaleError("the two pixels of a known length are the same pixel: click two different points")
    transform = view_transform(scene, view)
    height, width = scene.image_size
    ends = []
    for x, y in pixels:
        row, col = (int(np.floor(v)) for v in transform.from_original(y + 0.5, x + 0.5))
        if not (0 <= row < height and 0 <= col < width):
            raise ScaleError(f"pixel ({x:g}, {y:g}) is outside view {view} (its photo is "
                             f"{transform.original_size[1]}x{transform.original_size[0]})")
        if not scene.depth[view, row, col] > 0:
            raise ScaleError(f"pixel ({x:g}, {y:g}) of view {view} has no surface (no depth): choose another")
        ends.append(scene.points_from_depth[view, row, col].astype(np.float64))
    return float(np.linalg.norm(ends[0] - ends[1]))


def _instance_height(scene: Scene, instance: int) -> float:
    if scene.instances is None:
        raise ScaleError("an instance's height needs instances: run the clustering first")
    if not 0 <= instance < scene.instances.count:
        raise ScaleError(f"unknown instance {instance}: ids are 0..{scene.instances.count - 1}")
    up = -scene.extrinsics[:, 1, :3].astype(np.float64).mean(axis=0)  # as the grounding's up direction
    up /= max(np.linalg.norm(up), 1e-12)
    points = scene.points_from_depth[scene.instances.mask(instance) & (scene.depth > 0)].astype(np.float64)
    if len(points) < 2:
        raise ScaleError(f"instance {instance} has no 3D points to measure")
    heights = points @ up
    low, high = np.percentile(heights, [2, 98])  # robust to stray points, as the instance boxes
    return float(high - low)


def _camera_distance(scene: Scene, first: int, second: int) -> float:
    for view in (first, second):
        if not 0 <= view < scene.num_views:
            raise ScaleError(f"view {view} does not exist: views are 0..{scene.num_views - 1}")
    if first == second:
        raise ScaleError("a distance between camera centres needs two different views")
    centres = invert_extrinsics(scene.extrinsics.astype(np.float64))[:, :, 3]
    return float(np.linalg.norm(centres[first] - centres[second]))
