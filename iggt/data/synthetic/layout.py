"""Scene layout: a textured room, objects resting on the floor or on each other without
overlap, and a directional light; ids 1..K in placement order."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from iggt.data.scene_format import ObjectInfo
from iggt.data.synthetic.config import OBJECT_TEXTURES, PALETTE, TABLETOP_SCALE, GeneratorConfig
from iggt.data.synthetic.primitives import Primitive, pyramid_planes

_SUPPORTS = ("cube", "table", "cylinder")  # flat tops that can carry another object
_SMALL = ("cube", "sphere", "cylinder", "cone", "pyramid", "capsule")  # may stand on a support
_LAY_DOWN = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # local z -> x


@dataclass
class _Object:
    info: ObjectInfo
    yaw: float
    footprint: float  # radius of a circle that covers the footprint
    top: float  # height of the top surface
    top_radius: float  # radius of a circle that fits on the top surface (0 = cannot carry anything)
    primitives: list[Primitive]
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
class Layout:
    room: _Room
    objects: list[_Object]
    light: np.ndarray  # unit vector towards the light
    ambient: float
    diffuse: float
    center: np.ndarray  # centre of the objects (x, y)
    radius: float  # radius of the disk holding all object footprints
    primitives: list[Primitive] = field(default_factory=list)


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box(half: np.ndarray, offset: np.ndarray) -> tuple[str, tuple, np.ndarray, float]:
    return "box", (half,), offset, float(np.linalg.norm(half))


def _slab_on_legs(width: float, depth: float, height: float, thickness: float, leg: float) -> list:
    """A table top or chair seat at ``height`` on four square legs at its corners."""
    parts = [_box(np.array([width / 2, depth / 2, thickness / 2]), np.array([0, 0, height - thickness / 2]))]
    parts += [_box(np.array([leg / 2, leg / 2, (height - thickness) / 2]),
                   np.array([sx * (width / 2 - leg), sy * (depth / 2 - leg), (height - thickness) / 2]))
              for sx in (-1, 1) for sy in (-1, 1)]
    return parts


def _shape(category: str, rng: np.random.Generator,
           scale: float = 1.0) -> tuple[list[tuple[str, tuple, np.ndarray, float]], np.ndarray]:
    """Random dimensions of one object, every length times ``scale``: its primitives as (kind,
    params, offset from the base centre, bounding radius) in the object's frame (z up, base at
    z = 0), and its local size."""
    def u(low: float, high: float) -> float:
        return scale * rng.uniform(low, high)

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
        return ([("convex", pyramid_planes(b, h / 2), np.array([0, 0, h / 2]), math.hypot(math.sqrt(2) * b, h / 2))],
                np.array([2 * b, 2 * b, h]))
    if category == "capsule":  # lying on the floor along the object's x axis
        r, length = u(0.08, 0.18), u(0.4, 0.9)
        return [("capsule", (r, length / 2 - r), np.array([0, 0, r]), length / 2)], np.array([length, 2 * r, 2 * r])
    if category == "table":
        w, dp, h, th, leg = u(0.6, 1.2), u(0.5, 0.9), u(0.45, 0.8), 0.05, 0.05
        return _slab_on_legs(w, dp, h, th, leg), np.array([w, dp, h])
    if category == "chair":
        s, seat_h, back_h, th, leg = u(0.4, 0.5), u(0.4, 0.5), u(0.35, 0.5), 0.05, 0.04
        parts = _slab_on_legs(s, s, seat_h, th, leg)
        parts.append(_box(np.array([th / 2, s / 2, back_h / 2]), np.array([-s / 2 + th / 2, 0, seat_h + back_h / 2])))
        return parts, np.array([s, s, seat_h + back_h])
    raise ValueError(f"unknown category {category!r}")


def _scale(config: GeneratorConfig) -> float:
    """Length scale of a scene's objects and patterns: 1 in a room, `TABLETOP_SCALE` on a table top."""
    return 1.0 if config.kind == "room" else TABLETOP_SCALE


def _choose_objects(config: GeneratorConfig, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(category, colour) of every object, with a look-alike group when the dice say so."""
    count = int(rng.integers(config.object_count[0], config.object_count[1] + 1))
    categories = config.categories if config.kind == "room" else tuple(c for c in config.categories if c in _SMALL)
    chosen: list[tuple[str, str]] = []
    if count >= 2 and rng.random() < config.duplicate_probability:
        group = (str(rng.choice(categories)), str(rng.choice(config.colors)))
        chosen += [group] * min(count, int(rng.integers(2, 4)))
    while len(chosen) < count:
        chosen.append((str(rng.choice(categories)), str(rng.choice(config.colors))))
    rng.shuffle(chosen)
    return chosen


def place_objects(config: GeneratorConfig, rng: np.random.Generator) -> list[_Object]:
    """Objects resting on the floor without overlap, some on top of a free support."""
    placed: list[_Object] = []
    supports_used: set[int] = set()
    chosen = _choose_objects(config, rng)
    scale = _scale(config)
    spread = scale * (0.5 + 0.12 * len(chosen))  # radius of the disk the objects are dropped in
    gap = 0.05 * scale  # free space between two footprints
    for index, (category, color_name) in enumerate(chosen):
        parts, size = _shape(category, rng, scale)
        yaw = 0.0 if category in ("sphere", "cylinder", "cone") else float(rng.uniform(0, 2 * math.pi))
        footprint = 0.5 * math.hypot(size[0], size[1])
        position = None
        if category in _SMALL and rng.random() < config.stack_probability:
            for j, other in enumerate(placed):
                if (j not in supports_used and footprint <= other.top_radius - 0.4 * gap
                        and other.info.center[2] - other.info.size[2] / 2 < 0.01):  # the support stands on the floor
                    position = np.array([other.info.center[0], other.info.center[1], other.top])
                    supports_used.add(j)
                    break
        for attempt in range(400 if position is None else 0):
            radius = spread * (1 + attempt / 200) * math.sqrt(rng.random())
            angle = rng.uniform(0, 2 * math.pi)
            xy = np.array([radius * math.cos(angle), radius * math.sin(angle)])
            if all(np.hypot(*(xy - np.array(o.info.center[:2]))) >= footprint + o.footprint + gap for o in placed):
                position = np.array([xy[0], xy[1], 0.0])
                break
        if position is None:
            continue  # no free spot: fewer objects, never overlapping ones
        rotation = yaw_matrix(yaw)
        # a capsule's axis is its local z: turn it to lie along the object's x axis
        part_rotation = rotation @ _LAY_DOWN if category == "capsule" else rotation
        primitives = [Primitive(kind, params, position + rotation @ offset, part_rotation, bound + 1e-3, index)
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
                              texture_scale=scale * float(rng.uniform(0.05, 0.15)),
                              texture_amount=float(rng.uniform(0.25, 0.45))))
    # ids 1..K in placement order, without gaps left by objects that did not fit
    for new_index, obj in enumerate(placed):
        obj.info.id = new_index + 1
        for prim in obj.primitives:
            prim.object_index = new_index
    return placed


def make_layout(config: GeneratorConfig, rng: np.random.Generator) -> Layout:
    objects = place_objects(config, rng)
    scale = _scale(config)  # patterns as fine as the objects are small
    centres = np.array([o.info.center[:2] for o in objects])
    center = (centres.min(0) + centres.max(0)) / 2
    radius = max(float(np.hypot(*(c - center))) + o.footprint for c, o in zip(centres, objects))
    room = _Room(
        half_x=radius + float(rng.uniform(1.6, 3.0)), half_y=radius + float(rng.uniform(1.6, 3.0)),
        wall_height=float(rng.uniform(2.5, 3.2)),
        floor_pattern=str(rng.choice(("checker", "stripes", "noise"))),
        floor_colors=_muted_pair(rng, 0.35, 0.7), floor_scale=scale * float(rng.uniform(0.2, 0.7)),
        wall_pattern=str(rng.choice(("stripes", "noise", "checker"))),
        wall_colors=_muted_pair(rng, 0.55, 0.9), wall_scale=float(rng.uniform(0.15, 0.6)),
        noise=rng.random((64, 64)))
    azimuth, elevation = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(40), math.radians(70))
    light = np.array([math.cos(azimuth) * math.cos(elevation), math.sin(azimuth) * math.cos(elevation),
                      math.sin(elevation)])
    layout = Layout(room, objects, light, float(rng.uniform(0.3, 0.45)), float(rng.uniform(0.55, 0.75)),
                     center, radius)
    layout.primitives = [p for o in objects for p in o.primitives]
    return layout


def _muted_pair(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Two related unsaturated colours for a floor or wall pattern."""
    base = rng.uniform(low, high) * (1 + rng.uniform(-0.15, 0.15, 3))
    return np.clip(np.stack([base, base * rng.uniform(0.6, 0.85)]), 0, 1)
