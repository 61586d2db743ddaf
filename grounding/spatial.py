"""Spatial facts about instances, computed from the 3D reconstruction instead of guessed by a VLM.

Positions are the instances' 3D centroids (world frame = first camera). "Left/right" is the
horizontal image position in a chosen view and "in front of/behind" the depth along that
view's optical axis; "above/below" is the height along the scene's up direction, estimated
as the mean up axis (-y in OpenCV) of all cameras, since people hold cameras upright.
Distances and sizes are in the scene's units (`Scene.units`: "model units", arbitrary, unless a
known length set metres; see `iggt.sfm.scale`), and every answer names them.
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
    units: str = "model units"
    """Unit of every distance and size (`Scene.units`)."""

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
                   scene.intrinsics.astype(np.float64), up, tuple(i.display_name for i in info), scene.units)

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
             "height": round(float(geometry.heights()[k]), 3), "units": geometry.units}
            for k in range(geometry.count)]


MIN_VISIBLE_PIXELS = 16
"""Pixels an instance needs in a view to count as seen there."""


def _place_in_view(bbox: tuple[int, int, int, int], image_hw: tuple[int, int]) -> str:
    """Where a box's centre is in a view, in thirds: "at the top left", "in the centre", ..."""
    height, width = image_hw
    column = min(2, int(3 * (bbox[0] + bbox[2]) / 2 / width))
    row = min(2, int(3 * (bbox[1] + bbox[3]) / 2 / height))
    vertical, horizontal = ("top", "", "bottom")[row], ("left", "", "right")[column]
    if vertical and horizontal:
        return f"at the {vertical} {horizontal}"
    if vertical:
        return f"at the {vertical}"
    return f"on the {horizontal}" if horizontal else "in the centre"


def _views_text(views: list[int]) -> str:
    numbers = [str(v + 1) for v in sorted(views)]
    if len(numbers) == 1:
        return f"view {numbers[0]}"
    return f"views {', '.join(numbers[:-1])} and {numbers[-1]}"


def relative_position(geometry: SceneGeometry, a: int, b: int, view: int) -> str:
    """How ``a`` lies relative to ``b`` as seen from ``view``, by the largest component of the offset:
    "left of", "right of", "in front of", "behind", "above" or "below"."""
    camera = geometry.in_camera(view)
    offset = camera[a] - camera[b]
    height = float(geometry.heights()[a] - geometry.heights()[b])
    side, depth = float(offset[0]), float(offset[2])
    largest = max(abs(side), abs(depth), abs(height))
    if largest == abs(side):
        return "right of" if side > 0 else "left of"
    if largest == abs(depth):
        return "behind" if depth > 0 else "in front of"
    return "above" if height > 0 else "below"


def location_sentence(scene: Scene, geometry: SceneGeometry, instance_id: int, others: list[int],
                      label) -> str:
    """Where an instance is, for a person: the views that show it (numbered from 1, as the app shows
    them), where it is in the one that shows it best, and how it lies relative to the nearest of
    ``others``. ``label(k)`` writes an instance's name ("the yellow cube (#5)")."""
    info = scene.instances.info[instance_id]
    views = [v for v, p in info.views.items() if p.pixel_count >= MIN_VISIBLE_PIXELS]
    subject = label(instance_id)
    if not views:
        return f"{subject[:1].upper()}{subject[1:]} is too small to be seen clearly in any view."
    best = max(views, key=lambda v: (info.views[v].pixel_count, -v))
    sentence = (f"{subject[:1].upper()}{subject[1:]} is in {_views_text(views)}; in view {best + 1} it is "
                f"{_place_in_view(info.views[best].bbox, scene.image_size)}")
    neighbour = nearest_of(geometry, instance_id, others)
    if neighbour is not None:
        sentence += f", {relative_position(geometry, instance_id, neighbour, best)} {label(neighbour)}"
    return sentence + "."


def nearest_of(geometry: SceneGeometry, instance_id: int, others: list[int]) -> int | None:
    """The one of ``others`` (the instance itself excluded) nearest to the instance in 3D, if any."""
    candidates = [k for k in others if k != instance_id]
    if not candidates:
        return None
    return min(candidates, key=lambda k: (geometry.distance(instance_id, k), k))
