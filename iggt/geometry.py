"""Camera and point geometry shared by the model, the reconstruction and the evaluation.

Conventions (those of the released IGGT/VGGT):

* extrinsics are OpenCV world-to-camera ``[R | t]`` (x right, y down, z forward);
* a pose encoding is ``[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]``: the extrinsic's
  translation, its rotation as a scalar-last quaternion (not necessarily unit length) and
  the vertical / horizontal field of view in radians; the principal point is the image
  centre and there is no skew.

Pose encodings are torch (the model produces and trains on them); the rest is numpy.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


# --------------------------------------------------------------------------- quaternions


def quaternion_to_rotation(quaternion: Tensor) -> Tensor:
    """Scalar-last quaternion ``[..., 4]`` -> rotation matrix ``[..., 3, 3]``.

    Uses the ``2 / |q|^2`` factor, so a non-unit quaternion still gives a rotation (the
    camera head's raw output is never normalised).
    """
    x, y, z, w = torch.unbind(quaternion, dim=-1)
    two_s = 2.0 / (quaternion * quaternion).sum(dim=-1)
    rows = (
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(quaternion.shape[:-1] + (3, 3))


def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` -> scalar-last unit quaternion ``[..., 4]`` with ``qw >= 0``.

    Of the four algebraically equivalent formulas the one with the largest denominator is
    used, which keeps the result accurate for every rotation.
    """
    m = rotation.reshape(rotation.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(m, dim=-1)
    # 4 * (component)^2 for w, x, y, z.
    squares = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    )
    magnitudes = torch.sqrt(torch.clamp(squares, min=0.0))  # 2 * |component|
    # Each row is (w, x, y, z) * 2 * component, derived from the diagonal entry of that row.
    candidates = torch.stack(
        (
            torch.stack((squares[..., 0], m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, squares[..., 1], m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, squares[..., 2], m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, squares[..., 3]), dim=-1),
        ),
        dim=-2,
    ) / (2.0 * torch.clamp(magnitudes, min=0.1))[..., None]
    best = magnitudes.argmax(dim=-1)
    wxyz = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    xyzw = torch.cat((wxyz[..., 1:], wxyz[..., :1]), dim=-1)
    return torch.where(xyzw[..., 3:] < 0, -xyzw, xyzw)


# --------------------------------------------------------------------------- pose encoding


def intrinsics_from_fov(fov_h: Tensor, fov_w: Tensor, image_size_hw: tuple[int, int]) -> Tensor:
    """Pinhole intrinsics ``[..., 3, 3]`` with the principal point at the image centre."""
    height, width = image_size_hw
    fy = (height / 2.0) / torch.tan(fov_h / 2.0)
    fx = (width / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics = torch.zeros(fov_h.shape + (3, 3), dtype=fov_h.dtype, device=fov_h.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2.0
    intrinsics[..., 1, 2] = height / 2.0
    intrinsics[..., 2, 2] = 1.0
    return intrinsics


def pose_encoding_to_extrinsics_intrinsics(
    pose_enc: Tensor, image_size_hw: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Pose encoding ``[..., 9]`` -> (extrinsics ``[..., 3, 4]``, intrinsics ``[..., 3, 3]``)."""
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"a pose encoding has 9 values per camera, got shape {tuple(pose_enc.shape)}")
    translation = pose_enc[..., :3]
    rotation = quaternion_to_rotation(pose_enc[..., 3:7])
    extrinsics = torch.cat((rotation, translation[..., None]), dim=-1)
    intrinsics = intrinsics_from_fov(pose_enc[..., 7], pose_enc[..., 8], image_size_hw)
    return extrinsics, intrinsics


def extrinsics_intrinsics_to_pose_encoding(
    extrinsics: Tensor, intrinsics: Tensor, image_size_hw: tuple[int, int]
) -> Tensor:
    """(extrinsics ``[..., 3, 4]``, intrinsics ``[..., 3, 3]``) -> pose encoding ``[..., 9]``."""
    height, width = image_size_hw
    quaternion = rotation_to_quaternion(extrinsics[..., :3, :3])
    fov_h = 2.0 * torch.atan((height / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2.0 * torch.atan((width / 2.0) / intrinsics[..., 0, 0])
    return torch.cat((extrinsics[..., :3, 3], quaternion, fov_h[..., None], fov_w[..., None]), dim=-1)


# --------------------------------------------------------------------------- numpy helpers


def invert_extrinsics(extrinsics: np.ndarray) -> np.ndarray:
    """World-to-camera ``[..., 3, 4]`` -> camera-to-world ``[..., 3, 4]`` (and vice versa)."""
    rotation = extrinsics[..., :3, :3]
    translation = extrinsics[..., :3, 3]
    rotation_t = np.swapaxes(rotation, -1, -2)
    return np.concatenate((rotation_t, -(rotation_t @ translation[..., None])), axis=-1)


def unproject_depth(depth: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Depth maps ``[S, H, W]`` -> world points ``[S, H, W, 3]``.

    Pixel (u, v) is taken at integer coordinates (as the official demo does), so with the
    principal point at (W/2, H/2) the image centre lies on pixel (W/2, H/2).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 3:
        raise ValueError(f"depth must be [S, H, W], got shape {depth.shape}")
    views, height, width = depth.shape
    extrinsics = np.asarray(extrinsics, dtype=np.float64).reshape(views, 3, 4)
    intrinsics = np.asarray(intrinsics, dtype=np.float64).reshape(views, 3, 3)
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    fx, fy = intrinsics[:, 0, 0, None, None], intrinsics[:, 1, 1, None, None]
    cx, cy = intrinsics[:, 0, 2, None, None], intrinsics[:, 1, 2, None, None]
    camera_points = np.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), axis=-1)
    cam_to_world = invert_extrinsics(extrinsics)
    world = np.einsum("sij,shwj->shwi", cam_to_world[:, :, :3], camera_points) + cam_to_world[:, None, None, :, 3]
    return world.astype(np.float32)


def project_points(points: np.ndarray, extrinsics: np.ndarray,
                   intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[N, 3]`` seen by one camera (``[3, 4]``, ``[3, 3]``) or ``S`` cameras
    (``[S, 3, 4]``, ``[S, 3, 3]``) -> pixels ``[..., N, 2]`` (x, y) and depth ``[..., N]``, float64.

    The inverse of `unproject_depth` (pixel centres at integers). Pixels are NaN where the point
    is not in front of the camera (depth <= 0), so comparisons with them are False.
    """
    points = np.asarray(points, dtype=np.float64)
    extrinsics = np.asarray(extrinsics, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    in_camera = np.einsum("...ij,nj->...ni", extrinsics[..., :3], points) + extrinsics[..., None, :, 3]
    homogeneous = np.einsum("...ij,...nj->...ni", intrinsics, in_camera)
    depth = in_camera[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = np.where(depth[..., None] > 0, homogeneous[..., :2] / homogeneous[..., 2:], np.nan)
    return pixels, depth


def umeyama_alignment(
    source: np.ndarray, target: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, R, t) with ``target ~ scale * R @ source + t``.

    Umeyama's closed form; the reflection case is corrected so that ``R`` is a rotation.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3:
        raise ValueError(f"need two [N, 3] point sets of equal size, got {source.shape} and {target.shape}")
    if source.shape[0] < 3:
        raise ValueError(f"need at least 3 point pairs for an alignment, got {source.shape[0]}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centered, target_centered = source - source_mean, target - target_mean
    covariance = target_centered.T @ source_centered / source.shape[0]
    u, singular_values, vt = np.linalg.svd(covariance)
    correction = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        correction[2, 2] = -1.0
    rotation = u @ correction @ vt
    scale = 1.0
    if with_scale:
        source_variance = (source_centered**2).sum() / source.shape[0]
        if source_variance <= 0:
            raise ValueError("the source points are all identical; the scale is undefined")
        scale = float(np.trace(np.diag(singular_values) @ correction) / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return scale, rotation, translation


def median_scale(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """``median(gt) / median(pred)`` over valid pixels (default: finite, gt > 0 and pred > 0)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}")
    if valid is None:
        valid = np.isfinite(pred) & np.isfinite(gt) & (gt > 0) & (pred > 0)
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise ValueError("no valid pixels to compute a median scale from")
    return float(np.median(gt[valid]) / np.median(pred[valid]))


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane (unit normal n, offset d with n . x = d) through ``points`` ``[N, 3]``."""
    centroid = points.mean(axis=0)
    normal = np.linalg.svd(points - centroid, full_matrices=False)[2][-1]
    return normal, float(normal @ centroid)


def ransac_plane(points: np.ndarray, tolerance: float, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Inlier mask of the plane with most points within ``tolerance`` among random 3-point
    candidates, refined by least squares; all False when every candidate is degenerate."""
    triples = points[rng.integers(0, len(points), size=(iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    usable = lengths > 1e-12
    if not usable.any():
        return np.zeros(len(points), dtype=bool)
    normals = normals[usable] / lengths[usable, None]
    offsets = (normals * triples[usable, 0]).sum(axis=1)
    inlier_counts = np.concatenate([  # in chunks of candidates, to bound the memory
        (np.abs(points @ normals[i:i + 32].T - offsets[i:i + 32]) < tolerance).sum(axis=0)
        for i in range(0, len(normals), 32)])
    best = int(inlier_counts.argmax())
    inliers = np.abs(points @ normals[best] - offsets[best]) < tolerance
    normal, offset = fit_plane(points[inliers])
    return np.abs(points @ normal - offset) < tolerance
