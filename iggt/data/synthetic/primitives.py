"""Analytic ray intersection with the generator's primitives (boxes, convex polytopes, spheres,
capped cylinders and cones, capsules), each in its own local frame, vectorised over rays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-6


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


def pyramid_planes(half_base: float, half_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Square pyramid: base at z = -half_height, apex at z = +half_height."""
    h, b = 2 * half_height, half_base
    sides = np.array([[h, 0, b], [-h, 0, b], [0, h, b], [0, -h, b]], float)
    sides /= np.linalg.norm(sides, axis=1, keepdims=True)
    normals = np.vstack([sides, [0.0, 0.0, -1.0]])
    apex = np.array([0.0, 0.0, half_height])
    return normals, np.append(sides @ apex, half_height)


@dataclass
class Primitive:
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
