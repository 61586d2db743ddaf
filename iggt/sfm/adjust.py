"""Bundle adjustment: tracks triangulated from the feed-forward cameras, refined by pycolmap.

`bundle_adjust` takes a `Scene` and tracks (or a `TrackSource`), and

1. triangulates every track from the scene's predicted cameras (linear, all views at once),
   drops observations that reproject worse than ``max_reprojection_error`` or lie behind a
   camera, and tracks seen under too small an angle;
2. builds a pycolmap `Reconstruction` in the photos' own pixels with those 2D-3D observations;
3. runs pycolmap's bundle adjustment (first camera fixed, and the scale by the second:
   the scene keeps its world frame and units), then, for each of ``rejection_thresholds`` in
   turn, drops the observations above it and adjusts again (the robust loss is Cauchy's; focal
   lengths, unless held fixed, are refined in the last adjustment only);
4. hands back a `Scene` with the adjusted cameras, each view's depth rescaled to agree with the
   adjusted points (median ratio) and unprojected again, plus the COLMAP model and a report.

The first bound is loose and the later ones tighten because the start cameras may be degrees
off: a tight bound measured with them drops the right observations of a wrong camera, keeps the
wrong ones that agree with it, and can leave a view too few points to move at all. (From true
cameras turned by 5 degrees and tracks that follow the true geometry, an 8 px first bound left
views of 3 of 6 benchmark scenes at their wrong poses; the loose one recovers every camera.)
Outliers are left to the robust loss and to the later bounds, measured with adjusted cameras.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from iggt.errors import IGGTError
from iggt.geometry import invert_extrinsics, project_points, unproject_depth
from iggt.scene import Scene, rgb_uint8
from iggt.sfm.colmap import (
    CameraOptions, add_points, cameras_from_reconstruction, empty_reconstruction, to_model_pixels, view_transform,
)
from iggt.sfm.tracks import Tracks, TrackSource

LOSS = "CAUCHY"
"""Robust loss of the adjustment (pycolmap `LossFunctionType`, scale 1 photo pixel). Cauchy's gives a
gross outlier almost no pull, where soft-L1 still pulls linearly: from perturbed true cameras with
SIFT tracks (benchmark scenes 6-13) the translation error went 5.7 -> 5.1 degrees, against 6.5."""
MAX_DEPTH_FACTOR = 100.0
"""A triangulated point farther than this times the scene's median depth is a point at infinity
(nearly parallel rays), dropped."""
MIN_VIEW_OBSERVATIONS = 6
"""A view seen by fewer adjusted points keeps its predicted pose (it would be unconstrained)."""


class TooFewTracks(IGGTError):
    """Not enough tracks survive to adjust anything; the unadjusted scene is still good."""


class AdjustmentFailed(IGGTError):
    """The adjustment diverged (the tracks do not fit any cameras); the unadjusted scene is still good."""


@dataclass(frozen=True)
class AdjustmentConfig:
    """Choices of `bundle_adjust` (reprojection errors in model-input pixels)."""

    cameras: CameraOptions = field(default_factory=CameraOptions)
    max_reprojection_error: float = 32.0
    """Observations of the feed-forward triangulation kept: loose, as the start cameras may be
    degrees off (5 degrees moves a point by about 17 px in a 224 px view); see the module docstring."""
    rejection_thresholds: tuple[float, ...] = (8.0, 4.0, 2.0)
    """After each adjustment the observations above the next bound are dropped and the model adjusted
    again; the adjusted model keeps only observations within the last one."""
    min_triangulation_angle: float = 1.0
    """Degrees; a track whose rays are more parallel than this has no reliable depth."""
    min_tracks: int = 30
    fix_intrinsics: bool = False
    """Hold focal lengths (and principal points) fixed: for cameras the user gave. Otherwise they are
    refined in the last adjustment only, once the poses have settled: refined from the start, with
    cameras tens of degrees off, they ran away (13 % -> 730 % mean focal error on the benchmark)."""
    max_iterations: int = 100


@dataclass
class AdjustmentReport:
    """What bundle adjustment did, in numbers."""

    track_source: str
    tracks_found: int
    points: int
    observations: int
    views_adjusted: int
    views: int
    reprojection_error_before: float
    """Mean, photo pixels: the kept points triangulated from the feed-forward cameras."""
    reprojection_error_after: float
    focal_change: list[float]
    """Per view, adjusted / predicted focal length - 1 (0 when the intrinsics were held fixed)."""

    def summary(self) -> str:
        change = max((abs(c) for c in self.focal_change), default=0.0)
        return (f"bundle adjustment ({self.track_source}): {self.tracks_found} tracks -> {self.points} points, "
                f"{self.observations} observations, {self.views_adjusted}/{self.views} views adjusted; "
                f"reprojection error {self.reprojection_error_before:.2f} -> {self.reprojection_error_after:.2f} "
                f"px; largest focal change {100 * change:.1f} %")


@dataclass
class Adjustment:
    scene: Scene
    """The scene with adjusted cameras and depth."""
    reconstruction: object
    """The adjusted pycolmap `Reconstruction` (photo pixels, with 2D-3D observations)."""
    report: AdjustmentReport


def bundle_adjust(scene: Scene, tracks: Tracks | TrackSource,
                  config: AdjustmentConfig = AdjustmentConfig()) -> Adjustment:
    """Refine ``scene``'s cameras with bundle adjustment over ``tracks``; see the module docstring.

    Raises `TooFewTracks` when fewer than ``config.min_tracks`` tracks survive triangulation and
    `AdjustmentFailed` when the adjustment diverges.
    """
    source_name = tracks.name if not isinstance(tracks, Tracks) else "given tracks"
    found = tracks if isinstance(tracks, Tracks) else tracks(scene)
    points, kept = triangulate(scene, found, config.max_reprojection_error, config.min_triangulation_angle)
    if len(points) < config.min_tracks:
        raise TooFewTracks(f"only {len(points)} of {found.count} tracks triangulate well (bundle adjustment needs "
                           f"{config.min_tracks}); the reconstruction is kept unadjusted")
    reconstruction = _reconstruction(scene, points, kept, config.cameras)
    reconstruction.update_point_3d_errors()
    error_before = reconstruction.compute_mean_reprojection_error()

    photo_pixels = _photo_pixels_per_model_pixel(scene)
    adjusted_views = _adjust(reconstruction, config, refine_intrinsics=False)
    for step, threshold in enumerate(config.rejection_thresholds, start=1):
        _drop_observations_above(reconstruction, threshold * photo_pixels)
        if reconstruction.num_points3D() < config.min_tracks:
            break
        last = step == len(config.rejection_thresholds)
        adjusted_views = _adjust(reconstruction, config, refine_intrinsics=last and not config.fix_intrinsics)
    _drop_observations_above(reconstruction, config.rejection_thresholds[-1] * photo_pixels)  # moved out by the last
    reconstruction.update_point_3d_errors()
    error_after = reconstruction.compute_mean_reprojection_error()
    if not (np.isfinite(error_after) and error_after <= error_before and reconstruction.num_points3D() > 0):
        raise AdjustmentFailed(f"bundle adjustment did not converge (reprojection error {error_before:.2f} px -> "
                               f"{error_after:.3g}); the reconstruction is kept unadjusted")

    extrinsics, intrinsics = cameras_from_reconstruction(reconstruction, scene)
    depth = _rescaled_depth(scene, reconstruction, extrinsics, intrinsics)
    adjusted = replace(scene, extrinsics=extrinsics, intrinsics=intrinsics, depth=depth,
                       points_from_depth=unproject_depth(depth, extrinsics, intrinsics))
    report = AdjustmentReport(
        track_source=source_name, tracks_found=found.count, points=reconstruction.num_points3D(),
        observations=reconstruction.compute_num_observations(), views_adjusted=adjusted_views,
        views=scene.num_views, reprojection_error_before=float(error_before),
        reprojection_error_after=float(error_after),
        focal_change=[float(intrinsics[v, 0, 0] / scene.intrinsics[v, 0, 0] - 1) for v in range(scene.num_views)])
    return Adjustment(adjusted, reconstruction, report)


def triangulate(scene: Scene, tracks: Tracks, max_error: float, min_angle: float) -> tuple[np.ndarray, Tracks]:
    """3D points ``[M, 3]`` of the tracks that triangulate well from the scene's cameras, and those
    tracks with only their good observations visible (see the module docstring)."""
    visible = tracks.visible.copy()
    points = _linear_triangulation(scene, tracks.xy, visible)
    for _ in range(2):  # drop bad observations, then triangulate again from the good ones
        visible &= _fits(scene, points, tracks.xy, max_error)
        points = _linear_triangulation(scene, tracks.xy, visible)
    visible &= _fits(scene, points, tracks.xy, max_error)  # the new points may not fit every observation kept
    _, depth = _reprojection(scene, points, tracks.xy)
    far = np.where(visible, depth, 0).max(axis=0) > MAX_DEPTH_FACTOR * np.median(scene.depth[scene.depth > 0])
    good = (visible.sum(axis=0) >= 2) & np.isfinite(points).all(axis=1) & ~far
    good &= _max_ray_angle(scene, points, visible) >= min_angle
    return points[good], Tracks(tracks.xy[:, good], visible[:, good])


def _linear_triangulation(scene: Scene, xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """DLT of every track at once, in normalised camera coordinates; NaN where fewer than 2 views."""
    views, count = visible.shape
    rays = np.concatenate([np.nan_to_num(xy), np.ones((views, count, 1))], axis=-1)
    rays = np.einsum("sij,snj->sni", np.linalg.inv(scene.intrinsics.astype(np.float64)), rays)
    projection = scene.extrinsics.astype(np.float64)  # [S, 3, 4]
    first = rays[..., 0, None] * projection[:, None, 2] - projection[:, None, 0]  # [S, N, 4]
    second = rays[..., 1, None] * projection[:, None, 2] - projection[:, None, 1]
    system = np.concatenate([first, second], axis=0) * np.concatenate([visible, visible], axis=0)[..., None]
    system = system.transpose(1, 0, 2)  # [N, 2S, 4]
    homogeneous = np.linalg.svd(system)[2][:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        points = homogeneous[:, :3] / homogeneous[:, 3:]
    points[visible.sum(axis=0) < 2] = np.nan
    return points


def _fits(scene: Scene, points: np.ndarray, xy: np.ndarray, max_error: float) -> np.ndarray:
    """``[S, N]``: the observation reprojects within ``max_error`` pixels, in front of its camera."""
    error, depth = _reprojection(scene, points, xy)
    return (error <= max_error) & (depth > 0)


def _reprojection(scene: Scene, points: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel error ``[S, N]`` of every observation (inf where undefined or behind the camera) and the
    depth ``[S, N]``."""
    pixels, depth = project_points(np.nan_to_num(points), scene.extrinsics, scene.intrinsics)
    error = np.linalg.norm(pixels - xy, axis=-1)
    error[~np.isfinite(error) | ~np.isfinite(points).all(axis=1)[None]] = np.inf
    return error, depth


def _max_ray_angle(scene: Scene, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Per point, the largest angle (degrees) between the rays of two views that see it."""
    centres = invert_extrinsics(scene.extrinsics.astype(np.float64))[:, :, 3]
    rays = np.nan_to_num(points)[None] - centres[:, None]
    rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-12)
    cosine = np.einsum("snk,tnk->nst", rays, rays)
    seen = visible.T[:, :, None] & visible.T[:, None, :]
    return np.degrees(np.arccos(np.clip(np.where(seen, cosine, 1.0).min(axis=(1, 2)), -1.0, 1.0)))


def _reconstruction(scene: Scene, points: np.ndarray, tracks: Tracks, cameras: CameraOptions):
    """The pycolmap model of the triangulated tracks: per view its observations as 2D points."""
    keypoints, observations = [], []
    for view in range(scene.num_views):
        seen = np.flatnonzero(tracks.visible[view])
        keypoints.append(tracks.xy[view, seen])
        observations.append((seen, np.arange(len(seen))))
    reconstruction = empty_reconstruction(scene, cameras, keypoints)
    rgb = np.zeros((len(points), 3), np.uint8)
    first_view = np.argmax(tracks.visible, axis=0)
    for view in range(scene.num_views):  # colour: the photo at the first observation
        mine = np.flatnonzero(first_view == view)
        cols, rows = np.round(tracks.xy[view, mine].T).astype(int)
        height, width = scene.image_size
        rgb[mine] = rgb_uint8(scene.images[view, np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)])
    add_points(reconstruction, points, rgb, observations)
    return reconstruction


def _photo_pixels_per_model_pixel(scene: Scene) -> float:
    transforms = [view_transform(scene, v) for v in range(scene.num_views)]
    return float(np.mean([t.original_size[1] / t.resized_size[1] for t in transforms]))


def _adjust(reconstruction, config: AdjustmentConfig, refine_intrinsics: bool) -> int:
    """One pycolmap bundle adjustment in place; returns how many views it moved."""
    import pycolmap

    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = refine_intrinsics
    options.refine_principal_point = False
    options.refine_extra_params = refine_intrinsics and config.cameras.model in ("SIMPLE_RADIAL", "OPENCV")
    options.print_summary = False
    options.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, LOSS)
    options.ceres.solver_options.max_num_iterations = config.max_iterations
    options.ceres.solver_options.num_threads = 1
    ba_config = pycolmap.BundleAdjustmentConfig()
    adjusted = 0
    for image_id in sorted(reconstruction.reg_image_ids()):
        if reconstruction.image(image_id).num_points3D >= MIN_VIEW_OBSERVATIONS:
            ba_config.add_image(image_id)
            adjusted += 1
    if not refine_intrinsics:
        for camera_id in reconstruction.cameras:
            ba_config.set_constant_cam_intrinsics(camera_id)
    ba_config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(options, ba_config, reconstruction).solve()
    return adjusted


def _drop_observations_above(reconstruction, max_error: float) -> None:
    """Delete every observation whose reprojection error exceeds ``max_error`` photo pixels (a point
    left with fewer than two goes with its last ones)."""
    bad = []
    for point_id, point in reconstruction.points3D.items():
        for element in point.track.elements:
            image = reconstruction.image(element.image_id)
            projected = image.project_point(point.xyz)
            if projected is None or np.linalg.norm(projected - image.points2D[element.point2D_idx].xy) > max_error:
                bad.append((point_id, element.image_id, element.point2D_idx))
    for point_id, image_id, index in bad:
        if reconstruction.exists_point3D(point_id):
            reconstruction.delete_observation(image_id, index)


def _rescaled_depth(scene: Scene, reconstruction, extrinsics: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Each view's predicted depth times the median ratio of adjusted to predicted depth at its
    observations, so dense points and adjusted cameras agree (unchanged for a view with few)."""
    depth = scene.depth.astype(np.float32).copy()
    height, width = scene.image_size
    for view in range(scene.num_views):
        image = reconstruction.image(view + 1)
        ratios = []
        for point2d in image.points2D:
            if not point2d.has_point3D():
                continue
            xyz = reconstruction.point3D(point2d.point3D_id).xyz
            z = extrinsics[view, 2, :3] @ xyz + extrinsics[view, 2, 3]
            x, y = to_model_pixels(view_transform(scene, view), point2d.xy[None])[0]
            row, col = int(round(y)), int(round(x))
            if 0 <= row < height and 0 <= col < width and depth[view, row, col] > 0 and z > 0:
                ratios.append(z / depth[view, row, col])
        if len(ratios) >= MIN_VIEW_OBSERVATIONS:
            depth[view] *= np.float32(np.median(ratios))
    return depth
