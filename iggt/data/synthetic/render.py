"""Procedural textures and one-ray-per-pixel rendering with Lambertian shading and cast shadows."""
from __future__ import annotations

import math

import numpy as np

from iggt.data.scene_format import STRUCTURE_IDS
from iggt.data.synthetic.layout import Layout, yaw_matrix
from iggt.data.synthetic.primitives import Primitive


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


def _surface_albedo(layout: Layout, surface: np.ndarray, points: np.ndarray) -> np.ndarray:
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
        local = (points[sel] - obj.primitives[0].origin) @ yaw_matrix(obj.yaw)
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

    def candidates(self, prim: Primitive) -> np.ndarray:
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

    def candidates(self, prim: Primitive) -> np.ndarray:
        r = prim.bound_radius
        centre_first = prim.origin @ self.across
        low, high = np.searchsorted(self.sorted_first, [centre_first - r, centre_first + r])
        rays = self.order[low:high]
        near = (np.abs(self.second[rays] - prim.origin @ self.across2) <= r) & (self.along[rays] <= prim.origin @ self.light + r)
        return rays[near]

    def subset(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.origins[rays], np.broadcast_to(self.light, (rays.size, 3))


def _cast(primitives: list[Primitive], rays: _CameraRays | _LightRays,
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


def render(layout: Layout, extrinsic: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int],
            shadows: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One view: RGB in [0, 1] ``[H, W, 3]``, depth ``[H, W]`` (0 = nothing), object index ``[H, W]``
    (-1 = none) and room structure ``[H, W]`` (`STRUCTURE_IDS`; 0 = an object or the sky)."""
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
    structure = np.zeros(len(directions), np.int32)
    structure[hit & (surface == -3)] = STRUCTURE_IDS["floor"]
    for code, axis, name in ((-2, 0, "x"), (-1, 1, "y")):  # the wall a ray meets lies on the side it heads to
        wall = hit & (surface == code)
        heads_negative = directions[:, axis] < 0
        structure[wall & heads_negative] = STRUCTURE_IDS[f"wall -{name}"]
        structure[wall & ~heads_negative] = STRUCTURE_IDS[f"wall +{name}"]
    return (np.clip(rgb, 0, 1).reshape(height, width, 3), depth.reshape(height, width),
            object_index.reshape(height, width), structure.reshape(height, width))
