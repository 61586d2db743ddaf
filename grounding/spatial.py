"""Spatial facts about instances, computed from the 3D reconstruction instead of guessed by a VLM.

Positions are the instances' 3D centroids (world frame = first camera). "Left/right" is the
horizontal image position in a chosen view and "in front of/behind" the depth along that
view's optical axis; "above/below" is the height along the scene's up direction, estimated
as the mean up axis (-y in OpenCV) of all cameras, since people hold cameras upright.
Distances and sizes are in scene units (arbitrary unless the scene was scaled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iggt.errors import IGGTError
from iggt.scene import Scene

RELATIONS = ("left_of", "right_of", "in_front_of", "behind", "above", "below")
ORDERS = ("left_to_right", "right_to_left", "nearest_to_camera", "farthest_from_camera",
          "nearest_to", "farthest_from", "lowest_to_highest", "highest_to_lowest",
          "smallest_to_largest", "largest_to_smallest")


class SpatialError(IGGTError):
    """A spatial question that cannot be computed (unknown id, view, relation or order)."""


@dataclass(frozen=True)
class SceneGeometry:
    """Per-instance positions and sizes, and the cameras, in the form the relations need."""

    centroids: np.ndarray
    """``[K, 3]`` world centroids."""
    sizes: np.ndarray
    """``[K, 3]`` extents of the world-axis-aligned boxes."""
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    up: np.ndarray
    """Unit up vector in the world frame."""
    names: tuple[str | None, ...]

    @classmethod
    def from_scene(cls, scene: Scene) -> "SceneGeometry":
        if scene.instances is None:
            raise SpatialError("the scene has no instances yet: segment it before asking spatial questions")
        info = scene.instances.info
        centroids = np.array([i.centroid for i in info], dtype=np.float64).reshape(-1, 3)
        sizes = np.array([i.size for i in info], dtype=np.float64).reshape(-1, 3)
        camera_y_axes = scene.extrinsics[:, 1, :3].astype(np.float64)  # rows of R: camera axes in world
        up = -camera_y_axes.mean(axis=0)
        up /= max(np.linalg.norm(up), 1e-12)
        return cls(centroids, np.nan_to_num(sizes), scene.extrinsics.astype(np.float64),
                   scene.intrinsics.astype(np.float64), up, tuple(i.name for i in info))

    @property
    def count(self) -> int:
        return len(self.centroids)

    def check_ids(self, ids: list[int]) -> None:
        unknown = [i for i in ids if not (isinstance(i, int) and 0 <= i < self.count)]
        if unknown:
            raise SpatialError(f"unknown instance id(s) {unknown}: ids are 0..{self.count - 1}")

    def check_view(self, view: int) -> None:
        if not (isinstance(view, int) and 0 <= view < len(self.extrinsics)):
            raise SpatialError(f"unknown view {view}: views are 0..{len(self.extrinsics) - 1}")

    def in_camera(self, view: int) -> np.ndarray:
        """``[K, 3]`` centroids in the camera frame of ``view`` (x right, y down, z forward)."""
        self.check_view(view)
        rotation, translation = self.extrinsics[view, :, :3], self.extrinsics[view, :, 3]
        return self.centroids @ rotation.T + translation

    def image_x(self, view: int) -> np.ndarray:
        """Horizontal pixel position of each centroid in ``view`` (behind-camera points keep their side)."""
        camera = self.in_camera(view)
        fx, cx = self.intrinsics[view, 0, 0], self.intrinsics[view, 0, 2]
        return fx * camera[:, 0] / np.maximum(np.abs(camera[:, 2]), 1e-9) + cx

    def camera_center(self, view: int) -> np.ndarray:
        self.check_view(view)
        rotation, translation = self.extrinsics[view, :, :3], self.extrinsics[view, :, 3]
        return -rotation.T @ translation

    def heights(self) -> np.ndarray:
        return self.centroids @ self.up

    def volumes(self) -> np.ndarray:
        return np.prod(self.sizes, axis=1)

    def distance(self, a: int, b: int) -> float:
        self.check_ids([a, b])
        return float(np.linalg.norm(self.centroids[a] - self.centroids[b]))


def _measure(geometry: SceneGeometry, by: str, view: int, reference: int | None) -> tuple[np.ndarray, bool]:
    """The quantity an order sorts on, one value per instance, and whether it sorts descending."""
    if by in ("nearest_to", "farthest_from"):
        if reference is None:
            raise SpatialError(f"order {by!r} needs a reference instance")
        geometry.check_ids([reference])
        return np.linalg.norm(geometry.centroids - geometry.centroids[reference], axis=1), by == "farthest_from"
    measures = {
        "left_to_right": (lambda: geometry.image_x(view), False),
        "right_to_left": (lambda: geometry.image_x(view), True),
        "nearest_to_camera": (lambda: np.linalg.norm(geometry.centroids - geometry.camera_center(view), axis=1),
                              False),
        "farthest_from_camera": (lambda: np.linalg.norm(geometry.centroids - geometry.camera_center(view),
                                                        axis=1), True),
        "lowest_to_highest": (geometry.heights, False),
        "highest_to_lowest": (geometry.heights, True),
        "smallest_to_largest": (geometry.volumes, False),
        "largest_to_smallest": (geometry.volumes, True),
    }
    if by not in measures:
        raise SpatialError(f"unknown order {by!r}: use one of {', '.join(ORDERS)}")
    compute, descending = measures[by]
    return compute(), descending


def sort_instances(geometry: SceneGeometry, ids: list[int], by: str, view: int = 0,
                   reference: int | None = None) -> list[tuple[int, float]]:
    """``ids`` ordered by ``by`` (see `ORDERS`), each with the value it was sorted on.

    "nearest_to"/"farthest_from" leave the reference itself out.
    """
    geometry.check_ids(ids)
    geometry.check_view(view)
    values, descending = _measure(geometry, by, view, reference)
    chosen = [i for i in ids if i != reference] if by in ("nearest_to", "farthest_from") else list(ids)
    ordered = sorted(chosen, key=lambda i: (-values[i] if descending else values[i], i))
    return [(i, float(values[i])) for i in ordered]


def relation_holds(geometry: SceneGeometry, a: int, relation: str, b: int, view: int = 0) -> tuple[bool, float]:
    """Whether "a <relation> b" holds, and by how much (pixels, or scene units for depth/height)."""
    geometry.check_ids([a, b])
    if relation in ("left_of", "right_of"):
        x = geometry.image_x(view)
        margin = x[b] - x[a] if relation == "left_of" else x[a] - x[b]
    elif relation in ("in_front_of", "behind"):
        z = geometry.in_camera(view)[:, 2]
        margin = z[b] - z[a] if relation == "in_front_of" else z[a] - z[b]
    elif relation in ("above", "below"):
        h = geometry.heights()
        margin = h[a] - h[b] if relation == "above" else h[b] - h[a]
    else:
        raise SpatialError(f"unknown relation {relation!r}: use one of {', '.join(RELATIONS)}")
    return bool(margin > 0), float(margin)


def instance_table(geometry: SceneGeometry, view: int = 0) -> list[dict]:
    """What an agent needs to know about every instance: name, position, size, distance to camera."""
    camera = geometry.in_camera(view)
    x = geometry.image_x(view)
    return [{"id": k, "name": geometry.names[k],
             "centroid": [round(float(v), 3) for v in geometry.centroids[k]],
             "size": [round(float(v), 3) for v in geometry.sizes[k]],
             "image_x_in_view": round(float(x[k]), 1), "depth_in_view": round(float(camera[k, 2]), 3),
             "height": round(float(geometry.heights()[k]), 3)}
            for k in range(geometry.count)]
