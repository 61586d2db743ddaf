"""Procedural room scenes with exact ground truth, rendered by vectorised numpy ray casting.

Why: training and testing the instance branch needs views with exact cameras, depth and
multi-view consistent instance ids, in quantity, without downloading anything. A scene is a
textured room (floor and walls, no ceiling) with 3 to 15 objects of several shape categories
and named colours, deliberately including look-alikes (same category and colour), resting on
the floor or on top of each other. Cameras follow an orbit arc, a walk past the objects or
random look-ats, always aimed at an object, so every view sees one and views overlap.

Rendering is one ray per pixel (through integer pixel coordinates, principal point at
(W/2, H/2) as the model assumes) intersected analytically with the primitives whose bounding
sphere it may meet (boxes, pyramids as convex polytopes, spheres, capped cylinders and cones,
capsules); the nearest hit
gives depth (camera z), instance id and surface normal; colour is Lambertian shading of
procedural textures by one directional light with ambient and cast shadows.

World frame of a record: the room's, z up, floor at z = 0, metres.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from iggt.scene import BACKGROUND, Scene, ViewTransform
from iggt.training.scene_format import (ObjectInfo, SceneRecord, SceneRecordError, quantize_depth, read_scene_meta,
                                        relative_extrinsics, save_scene_record)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35), "green": (40, 160, 60), "blue": (35, 75, 205), "yellow": (235, 210, 40),
    "orange": (240, 130, 25), "purple": (125, 50, 170), "pink": (240, 130, 180), "brown": (120, 75, 40),
    "white": (235, 235, 230), "black": (30, 30, 30), "gray": (130, 130, 130), "cyan": (40, 200, 210),
}
"""Named object colours (uint8 RGB): the names are what grounding questions use."""

CATEGORIES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "pyramid", "capsule", "table", "chair")
"""Shape categories; a record's semantic index k means ``CATEGORIES[k - 1]``."""

TRAJECTORIES = ("orbit", "walk", "lookat")
OBJECT_TEXTURES = ("plain", "stripes", "checker", "noise")
_SUPPORTS = ("cube", "table", "cylinder")  # flat tops that can carry another object
_SMALL = ("cube", "sphere", "cylinder", "cone", "pyramid", "capsule")  # may stand on a support
_EPS = 1e-6
_LAY_DOWN = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> x


@dataclass(frozen=True)
class GeneratorConfig:
    """What kind of scenes `generate_scene` makes."""

    num_views: int = 8
    image_size: tuple[int, int] = (224, 224)
    """(height, width) in pixels."""
    object_count: tuple[int, int] = (3, 15)
    """Inclusive range of the number of objects."""
    categories: tuple[str, ...] = CATEGORIES
    colors: tuple[str, ...] = tuple(PALETTE)
    trajectories: tuple[str, ...] = TRAJECTORIES
    """Camera paths to draw from: "orbit" (arc around the objects), "walk" (straight line past
    them), "lookat" (random positions, each aimed at a random object)."""
    fov_deg: tuple[float, float] = (45.0, 70.0)
    """Range of the horizontal field of view."""
    duplicate_probability: float = 0.8
    """Chance that a scene holds a group of 2-3 objects with the same category and colour."""
    stack_probability: float = 0.3
    """Chance that a small object is put on top of a free cube, table or cylinder."""
    shadows: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.num_views < 1:
            problems.append(f"num_views must be >= 1, got {self.num_views}")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            problems.append(f"image_size must be (height, width) of at least 8 px, got {self.image_size}")
        low, high = self.object_count
        if not 1 <= low <= high:
            problems.append(f"object_count must be (min, max) with 1 <= min <= max, got {self.object_count}")
        for name, values, known in (("categories", self.categories, CATEGORIES), ("colors", self.colors, PALETTE),
                                    ("trajectories", self.trajectories, TRAJECTORIES)):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                problems.append(f"{name} must be a non-empty subset of {list(known)}, got {list(values)}")
        if not 1.0 <= self.fov_deg[0] <= self.fov_deg[1] < 170.0:
            problems.append(f"fov_deg must be (min, max) degrees within (1, 170), got {self.fov_deg}")
        if problems:
            raise ValueError("Invalid GeneratorConfig: " + "; ".join(problems))


# -- geometry of the primitives (all in the primitive's local frame) ------------------------

def _first_positive(*candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise smallest candidate distance above zero (inf where none) and which candidate it is."""
    stacked = np.stack(candidates)
    stacked = np.where(stacked > _EPS, stacked, np.inf)
    return stacked.min(axis=0), stacked.argmin(axis=0)


def _intersect_convex(o: np.ndarray, d: np.ndarray, normals: np.ndarray, offsets: np.ndarray):
    """Ray vs convex polytope ``normals @ x <= offsets`` (pyramids): slab method over the planes."""
    num = offsets[None] - o @ normals.T
    den = d @ normals.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / den
    t_near = np.where(den < 0, t, -np.inf)
    enter_plane = t_near.argmax(axis=1)
    t_near = t_near.max(axis=1)
    t_far = np.where(den > 0, t, np.inf).min(axis=1)
    parallel_outside = ((den == 0) & (num < 0)).any(axis=1)
    hit = (t_near <= t_far) & (t_near > _EPS) & ~parallel_outside
    return np.where(hit, t_near, np.inf), normals[enter_plane]


def _intersect_box(o: np.ndarray, d: np.ndarray, half: np.ndarray):
    """Ray vs box ``|x| <= half`` (axis-aligned in its frame): slab method over the three axes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = (-half - o) / d, (half - o) / d
    near = np.nan_to_num(np.minimum(low, high), nan=-np.inf)  # nan: parallel ray exactly on a face plane
    far = np.nan_to_num(np.maximum(low, high), nan=np.inf)
    axis = near.argmax(axis=1)
    t_near, t_far = near.max(axis=1), far.min(axis=1)
    hit = (t_near <= t_far) & (t_near > _EPS)
    normal = np.zeros_like(o)
    rows = np.arange(len(o))
    normal[rows, axis] = -np.sign(d[rows, axis])
    return np.where(hit, t_near, np.inf), normal


def _quadratic_roots(a, b, c):
    """Both roots of a t^2 + 2 b t + c = 0 (nan where none)."""
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        return (-b - root) / a, (-b + root) / a


def _intersect_sphere(o, d, radius, center_z=0.0):
    oc = o - np.array([0.0, 0.0, center_z])
    t1, t2 = _quadratic_roots((d * d).sum(1), (oc * d).sum(1), (oc * oc).sum(1) - radius**2)
    t, _ = _first_positive(np.nan_to_num(t1, nan=np.inf), np.nan_to_num(t2, nan=np.inf))
    return t, oc + np.where(np.isfinite(t), t, 0.0)[:, None] * d


def _disk(o, d, z, radius, normal_z):
    """Horizontal disk of ``radius`` at height ``z``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (z - o[:, 2]) / d[:, 2]
    p = o + np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)[:, None] * d
    inside = (p[:, 0] ** 2 + p[:, 1] ** 2 <= radius**2) & np.isfinite(t)
    return np.where(inside, t, np.inf), np.array([0.0, 0.0, normal_z])


def _intersect_cylinder(o, d, radius, half_height):
    """Vertical capped cylinder centred at the origin."""
    t1, t2 = _quadratic_roots(d[:, 0] ** 2 + d[:, 1] ** 2, o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1],
                              o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2)
    side = [np.where(np.abs(o[:, 2] + np.nan_to_num(t) * d[:, 2]) <= half_height, np.nan_to_num(t, nan=np.inf),
                     np.inf) for t in (t1, t2)]
    top, top_n = _disk(o, d, half_height, radius, 1.0)
    bottom, bottom_n = _disk(o, d, -half_height, radius, -1.0)
    t, which = _first_positive(side[0], side[1], top, bottom)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    normal = np.stack([p[:, 0], p[:, 1], np.zeros_like(t)], axis=1)
    normal[which == 2] = top_n
    normal[which == 3] = bottom_n
    return t, normal


def _intersect_cone(o, d, radius, half_height):
    """Upright cone: base disk of ``radius`` at z = -half_height, apex at z = +half_height."""
    k2 = (radius / (2 * half_height)) ** 2
    w_o, w_d = half_height - o[:, 2], -d[:, 2]  # w = distance below the apex
    t1, t2 = _quadratic_roots(d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * w_d**2,
                              o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] - k2 * w_o * w_d,
                              o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w_o**2)

    def on_mantle(t):
        w = w_o + np.nan_to_num(t) * w_d
        return np.where((w >= 0) & (w <= 2 * half_height), np.nan_to_num(t, nan=np.inf), np.inf)

    base, base_n = _disk(o, d, -half_height, radius, -1.0)
    t, which = _first_positive(on_mantle(t1), on_mantle(t2), base)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    normal = np.stack([p[:, 0], p[:, 1], k2 * (half_height - p[:, 2])], axis=1)
    normal[which == 2] = base_n
    return t, normal


def _intersect_capsule(o, d, radius, half_length):
    """Capsule around the segment z in [-half_length, half_length] of the local z axis."""
    t1, _ = _quadratic_roots(d[:, 0] ** 2 + d[:, 1] ** 2, o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1],
                             o[:, 0] ** 2 + o[:, 1] ** 2 - radius**2)
    side = np.where(np.abs(o[:, 2] + np.nan_to_num(t1) * d[:, 2]) <= half_length, np.nan_to_num(t1, nan=np.inf),
                    np.inf)
    top, top_n = _intersect_sphere(o, d, radius, half_length)
    bottom, bottom_n = _intersect_sphere(o, d, radius, -half_length)
    t, which = _first_positive(side, top, bottom)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    normal = np.stack([p[:, 0], p[:, 1], np.zeros_like(t)], axis=1)
    normal[which == 1] = top_n[which == 1]
    normal[which == 2] = bottom_n[which == 2]
    return t, normal


def _pyramid_planes(half_base: float, half_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Square pyramid: base at z = -half_height, apex at z = +half_height."""
    h, b = 2 * half_height, half_base
    sides = np.array([[h, 0, b], [-h, 0, b], [0, h, b], [0, -h, b]], float)
    sides /= np.linalg.norm(sides, axis=1, keepdims=True)
    normals = np.vstack([sides, [0.0, 0.0, -1.0]])
    apex = np.array([0.0, 0.0, half_height])
    return normals, np.append(sides @ apex, half_height)


@dataclass
class _Primitive:
    """One analytic shape placed in the world; several make a composite object (table, chair)."""

    kind: str  # "box", "convex", "sphere", "cylinder", "cone", "capsule"
    params: tuple
    origin: np.ndarray
    rotation: np.ndarray  # local -> world
    bound_radius: float
    object_index: int

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays in world coordinates -> (distance along d, inf = miss; world normal, not unit)."""
        o_local, d_local = (o - self.origin) @ self.rotation, d @ self.rotation
        t, normal = _INTERSECTORS[self.kind](o_local, d_local, *self.params)
        return t, normal @ self.rotation.T


_INTERSECTORS = {"box": _intersect_box, "convex": _intersect_convex, "sphere": _intersect_sphere, "cylinder": _intersect_cylinder,
                 "cone": _intersect_cone, "capsule": _intersect_capsule}


# -- scene layout ---------------------------------------------------------------------------

@dataclass
class _Object:
    info: ObjectInfo
    yaw: float
    footprint: float  # radius of a circle that covers the footprint
    top: float  # height of the top surface
    top_radius: float  # radius of a circle that fits on the top surface (0 = cannot carry anything)
    primitives: list[_Primitive]
    aim: np.ndarray  # a point inside the object (cameras aim there, so they see it)
    texture: str
    texture_scale: float
    texture_amount: float


@dataclass
class _Room:
    half_x: float
    half_y: float
    wall_height: float
    floor_pattern: str
    floor_colors: np.ndarray  # [2, 3] float
    floor_scale: float
    wall_pattern: str
    wall_colors: np.ndarray
    wall_scale: float
    noise: np.ndarray  # [N, N] lattice for value noise


@dataclass
class _Layout:
    room: _Room
    objects: list[_Object]
    light: np.ndarray  # unit vector towards the light
    ambient: float
    diffuse: float
    center: np.ndarray  # centre of the objects (x, y)
    radius: float  # radius of the disk holding all object footprints
    primitives: list[_Primitive] = field(default_factory=list)


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box(half: np.ndarray, offset: np.ndarray) -> tuple[str, tuple, np.ndarray, float]:
    return "box", (half,), offset, float(np.linalg.norm(half))


def _shape(category: str, rng: np.random.Generator) -> tuple[list[tuple[str, tuple, np.ndarray, float]], np.ndarray]:
    """Random dimensions of one object: its primitives as (kind, params, offset from the base
    centre, bounding radius) in the object's frame (z up, base at z = 0), and its local size."""
    u = rng.uniform
    if category == "cube":
        a = u(0.25, 0.6)
        return [_box(np.full(3, a / 2), np.array([0, 0, a / 2]))], np.array([a, a, a])
    if category == "sphere":
        r = u(0.12, 0.35)
        return [("sphere", (r,), np.array([0, 0, r]), r)], np.full(3, 2 * r)
    if category == "cylinder":
        r, h = u(0.1, 0.3), u(0.2, 0.8)
        return [("cylinder", (r, h / 2), np.array([0, 0, h / 2]), math.hypot(r, h / 2))], np.array([2 * r, 2 * r, h])
    if category == "cone":
        r, h = u(0.12, 0.3), u(0.3, 0.8)
        return [("cone", (r, h / 2), np.array([0, 0, h / 2]), math.hypot(r, h / 2))], np.array([2 * r, 2 * r, h])
    if category == "pyramid":
        b, h = u(0.15, 0.35), u(0.25, 0.7)
        return ([("convex", _pyramid_planes(b, h / 2), np.array([0, 0, h / 2]), math.hypot(math.sqrt(2) * b, h / 2))],
                np.array([2 * b, 2 * b, h]))
    if category == "capsule":  # lying on the floor along the object's x axis
        r, length = u(0.08, 0.18), u(0.4, 0.9)
        return [("capsule", (r, length / 2 - r), np.array([0, 0, r]), length / 2)], np.array([length, 2 * r, 2 * r])
    if category == "table":
        w, dp, h, th, leg = u(0.6, 1.2), u(0.5, 0.9), u(0.45, 0.8), 0.05, 0.05
        parts = [_box(np.array([w / 2, dp / 2, th / 2]), np.array([0, 0, h - th / 2]))]
        parts += [_box(np.array([leg / 2, leg / 2, (h - th) / 2]),
                       np.array([sx * (w / 2 - leg), sy * (dp / 2 - leg), (h - th) / 2]))
                  for sx in (-1, 1) for sy in (-1, 1)]
        return parts, np.array([w, dp, h])
    if category == "chair":
        s, seat_h, back_h, th, leg = u(0.4, 0.5), u(0.4, 0.5), u(0.35, 0.5), 0.05, 0.04
        parts = [_box(np.array([s / 2, s / 2, th / 2]), np.array([0, 0, seat_h - th / 2]))]
        parts += [_box(np.array([leg / 2, leg / 2, (seat_h - th) / 2]),
                       np.array([sx * (s / 2 - leg), sy * (s / 2 - leg), (seat_h - th) / 2]))
                  for sx in (-1, 1) for sy in (-1, 1)]
        parts.append(_box(np.array([th / 2, s / 2, back_h / 2]), np.array([-s / 2 + th / 2, 0, seat_h + back_h / 2])))
        return parts, np.array([s, s, seat_h + back_h])
    raise ValueError(f"unknown category {category!r}")


def _choose_objects(config: GeneratorConfig, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(category, colour) of every object, with a look-alike group when the dice say so."""
    count = int(rng.integers(config.object_count[0], config.object_count[1] + 1))
    chosen: list[tuple[str, str]] = []
    if count >= 2 and rng.random() < config.duplicate_probability:
        group = (str(rng.choice(config.categories)), str(rng.choice(config.colors)))
        chosen += [group] * min(count, int(rng.integers(2, 4)))
    while len(chosen) < count:
        chosen.append((str(rng.choice(config.categories)), str(rng.choice(config.colors))))
    rng.shuffle(chosen)
    return chosen


def _place_objects(config: GeneratorConfig, rng: np.random.Generator) -> list[_Object]:
    """Objects resting on the floor without overlap, some on top of a free support."""
    placed: list[_Object] = []
    supports_used: set[int] = set()
    chosen = _choose_objects(config, rng)
    spread = 0.5 + 0.12 * len(chosen)  # radius of the disk the objects are dropped in
    for index, (category, color_name) in enumerate(chosen):
        parts, size = _shape(category, rng)
        yaw = 0.0 if category in ("sphere", "cylinder", "cone") else float(rng.uniform(0, 2 * math.pi))
        footprint = 0.5 * math.hypot(size[0], size[1])
        position = None
        if category in _SMALL and rng.random() < config.stack_probability:
            for j, other in enumerate(placed):
                if (j not in supports_used and footprint <= other.top_radius - 0.02
                        and other.info.center[2] - other.info.size[2] / 2 < 0.01):  # the support stands on the floor
                    position = np.array([other.info.center[0], other.info.center[1], other.top])
                    supports_used.add(j)
                    break
        for attempt in range(400 if position is None else 0):
            radius = spread * (1 + attempt / 200) * math.sqrt(rng.random())
            angle = rng.uniform(0, 2 * math.pi)
            xy = np.array([radius * math.cos(angle), radius * math.sin(angle)])
            if all(np.hypot(*(xy - np.array(o.info.center[:2]))) >= footprint + o.footprint + 0.05 for o in placed):
                position = np.array([xy[0], xy[1], 0.0])
                break
        if position is None:
            continue  # no free spot: fewer objects, never overlapping ones
        rotation = _yaw_matrix(yaw)
        # a capsule's axis is its local z: turn it to lie along the object's x axis
        part_rotation = rotation @ _LAY_DOWN if category == "capsule" else rotation
        primitives = [_Primitive(kind, params, position + rotation @ offset, part_rotation, bound + 1e-3, index)
                      for kind, params, offset, bound in parts]
        corners = np.array([[sx, sy, 0.0] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5)]) * [size[0], size[1], 0]
        world_xy = corners @ rotation.T
        extent = world_xy.max(0)[:2] - world_xy.min(0)[:2]
        info = ObjectInfo(id=index + 1, category=category, color_name=color_name, color_rgb=PALETTE[color_name],
                          center=tuple(float(v) for v in (position[0], position[1], position[2] + size[2] / 2)),
                          size=(float(extent[0]), float(extent[1]), float(size[2])))
        top_radius = 0.5 * min(size[0], size[1]) if category in _SUPPORTS else 0.0
        placed.append(_Object(info, yaw, footprint, float(position[2] + size[2]), top_radius, primitives,
                              aim=primitives[0].origin.copy(), texture=str(rng.choice(OBJECT_TEXTURES)),
                              texture_scale=float(rng.uniform(0.05, 0.15)),
                              texture_amount=float(rng.uniform(0.25, 0.45))))
    # ids 1..K in placement order, without gaps left by objects that did not fit
    for new_index, obj in enumerate(placed):
        obj.info.id = new_index + 1
        for prim in obj.primitives:
            prim.object_index = new_index
    return placed


def _make_layout(config: GeneratorConfig, rng: np.random.Generator) -> _Layout:
    objects = _place_objects(config, rng)
    centres = np.array([o.info.center[:2] for o in objects])
    center = (centres.min(0) + centres.max(0)) / 2
    radius = max(float(np.hypot(*(c - center))) + o.footprint for c, o in zip(centres, objects))
    room = _Room(
        half_x=radius + float(rng.uniform(1.6, 3.0)), half_y=radius + float(rng.uniform(1.6, 3.0)),
        wall_height=float(rng.uniform(2.5, 3.2)),
        floor_pattern=str(rng.choice(("checker", "stripes", "noise"))),
        floor_colors=_muted_pair(rng, 0.35, 0.7), floor_scale=float(rng.uniform(0.2, 0.7)),
        wall_pattern=str(rng.choice(("stripes", "noise", "checker"))),
        wall_colors=_muted_pair(rng, 0.55, 0.9), wall_scale=float(rng.uniform(0.15, 0.6)),
        noise=rng.random((64, 64)))
    azimuth, elevation = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(40), math.radians(70))
    light = np.array([math.cos(azimuth) * math.cos(elevation), math.sin(azimuth) * math.cos(elevation),
                      math.sin(elevation)])
    layout = _Layout(room, objects, light, float(rng.uniform(0.3, 0.45)), float(rng.uniform(0.55, 0.75)),
                     center, radius)
    layout.primitives = [p for o in objects for p in o.primitives]
    return layout


def _muted_pair(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Two related unsaturated colours for a floor or wall pattern."""
    base = rng.uniform(low, high) * (1 + rng.uniform(-0.15, 0.15, 3))
    return np.clip(np.stack([base, base * rng.uniform(0.6, 0.85)]), 0, 1)


# -- cameras --------------------------------------------------------------------------------

def _look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """OpenCV world-to-camera ``[3, 4]`` of a camera at ``eye`` looking at ``target`` (world z up)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)  # cameras never look straight up or down (see _camera_path)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    c, s = math.cos(roll), math.sin(roll)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ rotation
    return np.concatenate([rotation, (-rotation @ eye)[:, None]], axis=1)


def _camera_path(kind: str, layout: _Layout, views: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye positions, look-at targets and roll angles of ``views`` cameras along one trajectory.

    Eyes lie inside the room, among or around the objects, and are pushed away from the
    centre until they are clear of every object (`_push_clear`).
    """
    ring_min = 0.6 * layout.radius + 0.3
    ring_max = min(layout.room.half_x, layout.room.half_y) - 0.3
    near = ring_min + 0.6 * (ring_max - ring_min)  # eyes stay closer than that to the centre (walk ends aside)
    aims = np.array([o.aim for o in layout.objects])
    first, last = aims[rng.integers(len(aims))], aims[rng.integers(len(aims))]
    blend = np.linspace(0.0, 1.0, views)[:, None]
    glide = first + blend * (last - first) + rng.normal(0, 0.05, (views, 3))  # targets sweep from one object to another
    rolls = np.zeros(views)
    if kind == "orbit":
        radius = rng.uniform(ring_min, near)
        angles = rng.uniform(0, 2 * math.pi) + np.linspace(0, math.radians(rng.uniform(60, 200)), views)
        heights = rng.uniform(0.8, 2.0) + rng.uniform(-0.1, 0.1, views)
        eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles), heights], axis=1)
        targets = glide
    elif kind == "walk":
        heading = rng.uniform(0, 2 * math.pi)
        normal, along = np.array([math.cos(heading), math.sin(heading)]), np.array([-math.sin(heading), math.cos(heading)])
        half_length = min(rng.uniform(0.5, 1.5), 0.9 * ring_max)
        farthest = math.sqrt(ring_max**2 - half_length**2)  # the walk's ends stay inside the ring
        offset = rng.uniform(min(ring_min, farthest), min(near, farthest))
        steps = np.linspace(-half_length, half_length, views)[:, None]
        eyes_xy = offset * normal + steps * along
        heights = rng.uniform(1.0, 1.8) + 0.03 * np.sin(np.linspace(0, 4 * math.pi, views))
        eyes = np.concatenate([eyes_xy, heights[:, None]], axis=1)
        targets = glide
    else:  # "lookat": independent random viewpoints, each aimed at a random object
        radius = np.sqrt(rng.uniform(ring_min**2, near**2, views))
        angles = rng.uniform(0, 2 * math.pi, views)
        eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles), rng.uniform(0.6, 2.2, views)], axis=1)
        targets = aims[rng.integers(len(aims), size=views)] + rng.normal(0, 0.05, (views, 3))
        rolls = rng.normal(0, math.radians(4), views)
    eyes[:, :2] += layout.center
    return _push_clear(eyes, layout), targets, rolls


def _push_clear(eyes: np.ndarray, layout: _Layout, margin: float = 0.35) -> np.ndarray:
    """Move every eye radially away from the objects' centre until it is ``margin`` away from
    each object's footprint or above its top; beyond ``layout.radius + margin`` that always holds."""
    eyes = eyes.copy()
    for eye in eyes:
        outward = eye[:2] - layout.center
        outward = outward / np.linalg.norm(outward) if np.linalg.norm(outward) > 1e-9 else np.array([1.0, 0.0])
        while any(np.hypot(*(eye[:2] - o.info.center[:2])) < o.footprint + margin and eye[2] < o.top + margin
                  for o in layout.objects):
            eye[:2] += 0.05 * outward
    return eyes


# -- textures and rendering -----------------------------------------------------------------

def _value_noise(a: np.ndarray, b: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1]: bilinear interpolation of a periodic random lattice."""
    n = lattice.shape[0]
    a0, b0 = np.floor(a), np.floor(b)
    fa, fb = a - a0, b - b0
    fa, fb = fa * fa * (3 - 2 * fa), fb * fb * (3 - 2 * fb)
    i0, j0 = a0.astype(np.int64) % n, b0.astype(np.int64) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    top = lattice[i0, j0] * (1 - fb) + lattice[i0, j1] * fb
    bottom = lattice[i1, j0] * (1 - fb) + lattice[i1, j1] * fb
    return top * (1 - fa) + bottom * fa


def _pattern(kind: str, a: np.ndarray, b: np.ndarray, scale: float, lattice: np.ndarray) -> np.ndarray:
    """A 2D pattern in [0, 1] over surface coordinates (a, b) in metres."""
    if kind == "checker":
        return ((np.floor(a / scale) + np.floor(b / scale)) % 2).astype(float)
    if kind == "stripes":
        return (np.floor(a / scale) % 2).astype(float)
    if kind == "noise":
        return _value_noise(a / scale, b / scale, lattice)
    return np.zeros_like(a)  # plain


def _surface_albedo(layout: _Layout, surface: np.ndarray, points: np.ndarray) -> np.ndarray:
    """RGB albedo of every hit: surface -3 floor, -2 / -1 walls facing x / y, >= 0 object index."""
    room = layout.room
    albedo = np.zeros((len(points), 3))
    for code, pattern, colors, scale, (a, b) in (
            (-3, room.floor_pattern, room.floor_colors, room.floor_scale, (0, 1)),
            (-2, room.wall_pattern, room.wall_colors, room.wall_scale, (1, 2)),
            (-1, room.wall_pattern, room.wall_colors, room.wall_scale, (0, 2))):
        sel = surface == code
        p = _pattern(pattern, points[sel, a], points[sel, b], scale, room.noise)[:, None]
        albedo[sel] = colors[0] * (1 - p) + colors[1] * p
    for index, obj in enumerate(layout.objects):
        sel = surface == index
        if not sel.any():
            continue
        local = (points[sel] - obj.primitives[0].origin) @ _yaw_matrix(obj.yaw)
        x, y, z = local.T
        if obj.texture == "checker":
            p = (np.floor(x / obj.texture_scale) + np.floor(y / obj.texture_scale) + np.floor(z / obj.texture_scale)) % 2
        else:
            p = _pattern(obj.texture, z, x + y, obj.texture_scale, room.noise)
        albedo[sel] = np.array(obj.info.color_rgb) / 255.0 * (1 - obj.texture_amount * p)[:, None]
    return albedo


class _CameraRays:
    """The rays of one pinhole view: all start at the eye, one per pixel (row-major).

    A primitive can only be hit by rays inside the image box of its bounding sphere, so each
    primitive is only intersected with those (a small fraction of the image)."""

    def __init__(self, extrinsic: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int]):
        self.rotation, self.translation, self.intrinsic, self.size = extrinsic[:, :3], extrinsic[:, 3], intrinsic, size
        height, width = size
        v, u = np.mgrid[0:height, 0:width].reshape(2, -1).astype(float)
        self.camera_directions = np.stack([(u - intrinsic[0, 2]) / intrinsic[0, 0],
                                           (v - intrinsic[1, 2]) / intrinsic[1, 1], np.ones_like(u)], axis=1)
        self.directions = self.camera_directions @ self.rotation  # camera z = 1: distance along a ray = depth
        self.origin = -self.rotation.T @ self.translation
        self.pixel_index = np.arange(height * width).reshape(height, width)

    def candidates(self, prim: _Primitive) -> np.ndarray:
        x, y, z = self.rotation @ prim.origin + self.translation
        r = prim.bound_radius
        if z - r < 1e-3:  # the bounding sphere reaches behind the camera: no simple box
            return self.pixel_index.ravel()
        bounds = []
        for centre, focal, principal, limit in ((x, self.intrinsic[0, 0], self.intrinsic[0, 2], self.size[1]),
                                                (y, self.intrinsic[1, 1], self.intrinsic[1, 2], self.size[0])):
            ratios = [(centre + sx) / (z + sz) for sx in (-r, r) for sz in (-r, r)]  # x/z is monotone on the box
            low = int(np.clip(math.floor(focal * min(ratios) + principal), 0, limit))
            high = int(np.clip(math.ceil(focal * max(ratios) + principal) + 1, 0, limit))
            bounds.append((low, high))
        (u0, u1), (v0, v1) = bounds
        return self.pixel_index[v0:v1, u0:u1].ravel()

    def subset(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_to(self.origin, (rays.size, 3)), self.directions[rays]


class _LightRays:
    """Parallel shadow rays from surface points towards a directional light.

    Rays are sorted by one coordinate across the light direction, so the ones that pass a
    primitive's bounding sphere are found by binary search instead of testing all of them."""

    def __init__(self, origins: np.ndarray, light: np.ndarray):
        helper = np.array([1.0, 0.0, 0.0]) if abs(light[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        self.across = np.cross(light, helper)
        self.across /= np.linalg.norm(self.across)
        self.across2 = np.cross(light, self.across)
        self.origins, self.light = origins, light
        first = origins @ self.across
        self.order = np.argsort(first)
        self.sorted_first = first[self.order]
        self.second, self.along = origins @ self.across2, origins @ light

    def candidates(self, prim: _Primitive) -> np.ndarray:
        r = prim.bound_radius
        centre_first = prim.origin @ self.across
        low, high = np.searchsorted(self.sorted_first, [centre_first - r, centre_first + r])
        rays = self.order[low:high]
        near = (np.abs(self.second[rays] - prim.origin @ self.across2) <= r) & (self.along[rays] <= prim.origin @ self.light + r)
        return rays[near]

    def subset(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.origins[rays], np.broadcast_to(self.light, (rays.size, 3))


def _cast(primitives: list[_Primitive], rays: _CameraRays | _LightRays,
          best_t: np.ndarray, best_surface: np.ndarray, normals: np.ndarray) -> None:
    """Nearest-hit update of (best_t, best_surface, normals) in place over all primitives."""
    for prim in primitives:
        candidates = rays.candidates(prim)
        if candidates.size == 0:
            continue
        t, n = prim.intersect(*rays.subset(candidates))
        closer = t < best_t[candidates]
        candidates, t, n = candidates[closer], t[closer], n[closer]
        best_t[candidates], best_surface[candidates], normals[candidates] = t, prim.object_index, n


def _render(layout: _Layout, extrinsic: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int],
            shadows: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view: RGB in [0, 1] ``[H, W, 3]``, depth ``[H, W]`` (0 = nothing), object index ``[H, W]`` (-1 = none)."""
    height, width = size
    rays = _CameraRays(extrinsic, intrinsic, size)
    eye, directions = rays.origin, rays.directions

    # the room seen from inside: the nearest of floor and the two walls the ray heads to
    room, center = layout.room, layout.center
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(directions[:, 2] < 0, -eye[2] / directions[:, 2], np.inf)
        walls = [np.where(directions[:, k] != 0, (center[k] + np.sign(directions[:, k]) * half - eye[k]) / directions[:, k],
                          np.inf) for k, half in ((0, room.half_x), (1, room.half_y))]
    candidates = np.stack([t_floor, *walls])
    surface = candidates.argmin(axis=0) - 3  # -3 floor, -2 wall x, -1 wall y
    best_t = candidates.min(axis=0)
    best_t[eye[2] + best_t * directions[:, 2] > room.wall_height] = np.inf  # over the walls: open sky
    normals = np.zeros((len(directions), 3))
    normals[surface == -3, 2] = 1.0
    normals[surface == -2, 0] = -np.sign(directions[surface == -2, 0])
    normals[surface == -1, 1] = -np.sign(directions[surface == -1, 1])
    _cast(layout.primitives, rays, best_t, surface, normals)

    hit = np.isfinite(best_t)
    points = eye + np.where(hit, best_t, 0.0)[:, None] * directions
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    normals *= np.where((normals * directions).sum(1) > 0, -1.0, 1.0)[:, None]  # face the camera
    lambert = np.maximum(normals @ layout.light, 0.0)
    if shadows:
        lit = np.flatnonzero(hit & (lambert > 0))
        shadow_t = np.full(lit.size, np.inf)
        _cast(layout.primitives, _LightRays(points[lit] + 1e-3 * normals[lit], layout.light), shadow_t,
              np.zeros(lit.size, int), np.zeros((lit.size, 3)))
        lambert[lit[np.isfinite(shadow_t)]] = 0.0
    rgb = np.empty((len(directions), 3))
    rgb[hit] = _surface_albedo(layout, surface[hit], points[hit]) * (layout.ambient + layout.diffuse * lambert[hit])[:, None]
    elevation = rays.camera_directions[:, 1:2]
    sky = np.clip(0.75 - 0.25 * elevation[~hit] / np.abs(elevation).max(), 0, 1)
    rgb[~hit] = sky * np.array([0.85, 0.9, 1.0])
    depth = np.where(hit, best_t, 0.0)
    object_index = np.where(hit & (surface >= 0), surface, -1)
    return (np.clip(rgb, 0, 1).reshape(height, width, 3), depth.reshape(height, width),
            object_index.reshape(height, width))


# -- scenes and data sets -------------------------------------------------------------------

def _intrinsics(fov_deg: float, size: tuple[int, int]) -> np.ndarray:
    """Square pixels, principal point at (W/2, H/2) as the model's pose encoding assumes."""
    height, width = size
    focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def generate_scene(seed: int, config: GeneratorConfig = GeneratorConfig()) -> SceneRecord:
    """One random scene, a pure function of ``seed`` and ``config``."""
    rng = np.random.default_rng(seed)
    layout = _make_layout(config, rng)
    kind = str(rng.choice(config.trajectories))
    fov = float(rng.uniform(*config.fov_deg))
    intrinsic = _intrinsics(fov, config.image_size)
    eyes, targets, rolls = _camera_path(kind, layout, config.num_views, rng)
    aims = np.array([o.aim for o in layout.objects])
    images, depths, indices, extrinsics = [], [], [], []
    for eye, target, roll in zip(eyes, targets, rolls):
        extrinsic = _look_at(eye, target, roll)
        rgb, depth, index = _render(layout, extrinsic, intrinsic, config.image_size, config.shadows)
        if not (index >= 0).any():  # aimed between objects and saw none: aim at the nearest one
            target = aims[np.argmin(np.linalg.norm(aims - target, axis=1))]
            extrinsic = _look_at(eye, target, roll)
            rgb, depth, index = _render(layout, extrinsic, intrinsic, config.image_size, config.shadows)
        images.append(np.rint(rgb * 255).astype(np.uint8))
        depths.append(depth)
        indices.append(index)
        extrinsics.append(extrinsic)
    index = np.stack(indices)
    category_of = np.array([CATEGORIES.index(o.info.category) + 1 for o in layout.objects] + [0])  # [-1] = none
    return SceneRecord(
        name=f"synthetic_{seed}", images=np.stack(images), depth=quantize_depth(np.stack(depths)),
        extrinsics=np.stack(extrinsics).astype(np.float32),
        intrinsics=np.repeat(intrinsic[None], config.num_views, 0).astype(np.float32),
        instance_ids=(index + 1).astype(np.int32), semantic=category_of[index].astype(np.int32),
        objects=[o.info for o in layout.objects], categories=list(CATEGORIES),
        meta={"generator": "iggt.training.synthetic", "seed": int(seed), "config": asdict(config),
              "trajectory": kind, "fov_deg": fov, "room_half_size": [layout.room.half_x, layout.room.half_y]})


def scene_seed(dataset_seed: int, index: int) -> int:
    """Seed of scene ``index`` of a data set: independent streams for every (dataset, index)."""
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1)[0])


def _generate_and_save(job: tuple[int, Path, GeneratorConfig]) -> Path:
    seed, directory, config = job
    record = generate_scene(seed, config)
    record.name = directory.name
    return save_scene_record(record, directory)


def _already_done(directory: Path, seed: int, config: GeneratorConfig) -> bool:
    """A finished scene from an earlier run with the same seed and config (lets long runs resume)."""
    try:
        meta = read_scene_meta(directory).get("meta", {})
    except SceneRecordError:
        return False
    return meta.get("seed") == seed and meta.get("config") == json.loads(json.dumps(asdict(config)))


def generate_dataset(root: str | Path, count: int, seed: int = 0, config: GeneratorConfig = GeneratorConfig(),
                     progress: bool = True, workers: int = 1) -> list[Path]:
    """Write ``count`` scenes as ``root/scene_000000`` ... (scene record format), reusing
    scenes an interrupted earlier run already finished; ``workers`` > 1 uses processes."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    directories = [root / f"scene_{i:06d}" for i in range(count)]
    jobs = [(scene_seed(seed, i), d, config) for i, d in enumerate(directories)
            if not _already_done(d, scene_seed(seed, i), config)]
    with tqdm(total=count, initial=count - len(jobs), desc="generating scenes", unit="scene",
              disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_generate_and_save, jobs):
                    bar.update()
        else:
            for job in jobs:
                _generate_and_save(job)
                bar.update()
    return directories


# -- ground truth as a reconstruction ---------------------------------------------------------

ORACLE_FEATURE_DIM = 8


def oracle_scene(record: SceneRecord) -> Scene:
    """The record's ground truth as a `Scene`, as a perfect model would predict it.

    World = first camera; depth confidence high where there is a surface; features are fixed
    random unit vectors per instance id (so clustering recovers the instances); instances come
    from `describe_instances` on the true ids, named "<color_name> <category>".
    """
    # imported here: they pull in torch and hdbscan, which scene generation (and its worker
    # processes) never needs
    from iggt.geometry import unproject_depth
    from iggt.instances import describe_instances

    extrinsics = relative_extrinsics(record.extrinsics)
    depth = record.depth.astype(np.float32)
    points = unproject_depth(depth, extrinsics, record.intrinsics)
    confidence = np.where(depth > 0, 50.0, 1.0).astype(np.float32)
    images = record.images.astype(np.float32) / 255.0
    directions = np.random.default_rng(0).normal(size=(int(record.instance_ids.max()) + 1, ORACLE_FEATURE_DIM))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels = np.where(record.instance_ids > 0, record.instance_ids - 1, BACKGROUND)
    instances = describe_instances(labels, points, images)
    for info in instances.info:  # describe_instances orders ids by size: map back to the record's ids
        record_id = int(record.instance_ids[instances.labels == info.id][0])
        info.name = record.object(record_id).name
    height, width = record.image_size
    return Scene(images=images, extrinsics=extrinsics, intrinsics=record.intrinsics.astype(np.float32), depth=depth,
                 depth_conf=confidence, world_points=points, world_points_conf=confidence.copy(),
                 points_from_depth=points.copy(),
                 features=directions[record.instance_ids].astype(np.float32),
                 view_names=[f"{record.name}/{i:03d}" for i in range(record.num_views)],
                 view_transforms=[ViewTransform((height, width), (height, width))] * record.num_views,
                 model_name="oracle (ground truth)", instances=instances)

