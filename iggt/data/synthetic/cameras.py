"""Camera trajectories through a layout: an orbit arc, a walk past the objects or random
look-ats, always aimed at an object and kept clear of every object."""
from __future__ import annotations

import math

import numpy as np

from iggt.data.synthetic.layout import Layout


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """OpenCV world-to-camera ``[3, 4]`` of a camera at ``eye`` looking at ``target`` (world z up)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)  # cameras never look straight up or down (see camera_path)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    c, s = math.cos(roll), math.sin(roll)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ rotation
    return np.concatenate([rotation, (-rotation @ eye)[:, None]], axis=1)


def camera_path(kind: str, layout: Layout, views: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye positions, look-at targets and roll angles of ``views`` cameras along one trajectory
    ("above" is the table-top path; the others are `config.TRAJECTORIES`).

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
    if kind == "above":  # a table top: an arc around the objects, looking down at 40-70 degrees
        radius = rng.uniform(0.5, 1.0) * (layout.radius + 0.2)
        angles = rng.uniform(0, 2 * math.pi) + np.linspace(0, math.radians(rng.uniform(60, 200)), views)
        pitch = np.radians(rng.uniform(40, 70) + rng.uniform(-3, 3, views))
        eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles), radius * np.tan(pitch)], axis=1)
        targets = glide
        rolls = rng.normal(0, math.radians(3), views)
    elif kind == "orbit":
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


def _push_clear(eyes: np.ndarray, layout: Layout, margin: float = 0.35) -> np.ndarray:
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
