"""Write a `Scene` to files other tools open: GLB, PLY, instance-mask PNGs, a JSON summary, COLMAP.

All exports start from one selection of points (`select_points`): which geometry (depth
unprojected with the predicted cameras, or the point head), which confidence percentile
to keep, which colouring (photo RGB, instance colours, or a PCA of the instance features),
and which instances to emphasise. `export_all` writes every requested format into one folder.

Memory at many views: points are selected and coloured a chunk of views at a time
(`iggt.scene.CHUNK_VIEWS`); the PLY file is written chunk by chunk, so it holds every point
without a copy of the cloud in memory; GLB files hold at most `GLB_MAX_POINTS` points (a
fixed-seed subset beyond), since trimesh builds them whole and viewers draw no more.

File conventions:

* GLB: a point cloud plus one frustum per camera, turned upright for common viewers
  (y up) with the same final transform as the official demo;
* PLY: binary little-endian, vertex properties ``x y z`` (float), ``red green blue``
  (uchar), ``instance`` (int: instance id, -1 = background) and ``label`` (int: index into the
  open-vocabulary labels listed as ``comment label <index> <name>`` header lines, -1 = none);
* masks: per view ``NNN_<name>_ids.png``, 16-bit, 0 = background and ``id + 1`` for
  instance ``id``; and ``NNN_<name>_overlay.png``, the photo blended with instance colours
  with white contours;
* COLMAP: text model (``cameras.txt``, ``images.txt``, ``points3D.txt``), the same model binary
  in ``sparse/0`` and the photos in ``images/``, in the pixel coordinates of the original photos,
  so Gaussian-splatting trainers and COLMAP itself use it with them directly.
"""
from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from iggt.geometry import invert_extrinsics, project_points
from iggt.instances import normalize_features
from iggt.progress import Progress
from iggt.scene import BACKGROUND, Scene, one_based_ids, rgb_float, rgb_uint8, view_chunks
from iggt.sfm.colmap import CameraOptions, safe_stem as _safe_stem, view_name as _view_name, \
    view_transform as _view_transform
from iggt.structure import sky_pixels, structure_mask

if TYPE_CHECKING:
    import trimesh

FORMATS = ("glb", "ply", "masks", "json", "colmap", "scene")
"""Everything `export_all` can write; ``masks`` needs instances."""
ColorMode = Literal["rgb", "instance", "pca"]
Geometry = Literal["depth", "points"]
BACKGROUND_GREY = np.array([128, 128, 128], np.uint8)
DIMMED_WEIGHT = 0.25
"""Points that are not highlighted keep this share of their colour, blended into `DIMMED_GREY`."""
DIMMED_GREY = np.array([170, 170, 170], np.float64)
PCA_PERCENTILES = (2.0, 98.0)
"""Each PCA channel is stretched so these percentiles map to 0 and 1 (as the official demo)."""
PCA_FIT_PIXELS = 1_000_000
"""The feature PCA and its stretch are fitted on at most this many pixels (a fixed-seed sample;
every pixel below it, about 20 views of 224 x 224), then applied to every point."""
GLB_MAX_POINTS = 4_000_000
"""A GLB point cloud holds at most this many points (a fixed-seed subset beyond): trimesh builds
the file whole in memory, and browsers' glTF viewers draw no more smoothly. The PLY has them all."""
MIN_CONFIDENCE = 1e-5
OVERLAY_ALPHA = 0.5
FRUSTUM_DEPTH = 0.08
"""Camera frustum depth as a share of the scene size (diagonal of its 5-95 percentile box)."""
VISIBILITY_DEPTH_TOLERANCE = 0.05
"""COLMAP: a point is observed in another view when its depth there agrees within 5 %."""
MAX_OBSERVATIONS_PER_POINT = 32
"""COLMAP: a point seen by more views keeps about this many of them (every k-th view, from an
offset of its own), so a model of a thousand views grows with the views, not with points x views."""
OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
BLACK_RGB_SUM = 16
FEATURE_AGREEMENT = 0.5
"""`upsample_labels`: weight of feature agreement (cosine, -1..1) against bilinear votes (0..1)."""
WHITE_CHANNEL = 240


@dataclass
class PointCloudOptions:
    """Which points of a scene to export and how to colour them."""

    color_mode: ColorMode = "rgb"
    geometry: Geometry = "depth"
    """``depth``: depth unprojected with the predicted cameras (what the clustering uses);
    ``points``: the point head's world points."""
    conf_percentile: float = 5.0
    """Drop points whose confidence is below this percentile of all confidences (50 drops half)."""
    drop_background: bool = False
    """Drop points that belong to no instance (needs instances)."""
    drop_structure: bool = False
    """Drop points of structure instances: floor, walls, large planes (`iggt.structure`)."""
    views: Sequence[int] | None = None
    """Only the points seen in these views (all views when None)."""
    drop_black: bool = False
    """Drop near-black pixels (RGB sum below 16 of 765), as VGGT's "filter black background"."""
    drop_white: bool = False
    """Drop near-white pixels (every channel above 240), as VGGT's "filter white background"."""
    drop_sky: bool = False
    """Drop what `iggt.structure.sky_pixels` takes for sky (no segmentation model)."""
    highlight: Sequence[int] | None = None
    """Instance ids to emphasise; every other point is dimmed."""
    max_points: int | None = None
    """Keep at most this many points (a fixed-seed random subset), for light files."""


@dataclass
class PointCloud:
    """Selected points: position, colour, instance and the view each came from."""

    points: np.ndarray
    """``[N, 3]`` float32 world coordinates."""
    colors: np.ndarray
    """``[N, 3]`` uint8 RGB."""
    instance: np.ndarray
    """``[N]`` int32 instance id, `BACKGROUND` (-1) when none."""
    view: np.ndarray
    """``[N]`` index of the view each point was seen in."""
    pixel: np.ndarray | None = None
    """``[N, 2]`` (row, column) of the model-input pixel each point was seen through."""


# -- point selection and colours ----------------------------------------------------------
Pixels = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(view, row, column) indices of selected pixels, in C order."""


def select_points(scene: Scene, options: PointCloudOptions = PointCloudOptions()) -> PointCloud:
    """The points of ``scene`` that ``options`` keep, coloured as asked."""
    parts = list(point_chunks(scene, options))
    if not parts:
        return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32),
                          np.zeros(0, np.int64), np.zeros((0, 2), np.int64))
    return PointCloud(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in ("points", "colors", "instance", "view", "pixel")))


def point_chunks(scene: Scene, options: PointCloudOptions = PointCloudOptions()) -> Iterator[PointCloud]:
    """`select_points`'s cloud a chunk of views at a time (empty chunks left out): what a file
    that streams writes, with no copy of the whole cloud in memory."""
    colorize = _colorizer(scene, options.color_mode)
    points = scene.points_from_depth if options.geometry == "depth" else scene.world_points
    for view, row, col in _pixel_chunks(kept_pixels(scene, options), options.max_points):
        instance = (np.full(len(view), BACKGROUND, np.int32) if scene.instances is None
                    else scene.instances.labels[view, row, col].astype(np.int32))
        colors = colorize(view, row, col)
        if options.highlight is not None:
            colors = dim_colors(colors, instance, options.highlight)
        yield PointCloud(points[view, row, col].astype(np.float32), colors, instance, view,
                         np.stack([row, col], axis=1))


def kept_pixels(scene: Scene, options: PointCloudOptions = PointCloudOptions()) -> np.ndarray:
    """``[S, H, W]`` bool: the pixels whose points ``options`` keep (before ``max_points``)."""
    if options.geometry not in ("depth", "points"):
        raise ValueError(f"geometry must be 'depth' or 'points', not {options.geometry!r}")
    points, confidence = ((scene.points_from_depth, scene.depth_conf) if options.geometry == "depth"
                          else (scene.world_points, scene.world_points_conf))
    valid = np.empty(confidence.shape, bool)
    for chunk in view_chunks(scene.num_views):
        valid[chunk] = (np.isfinite(points[chunk]).all(axis=-1) & np.isfinite(confidence[chunk])
                        & (confidence[chunk] > MIN_CONFIDENCE))
        if options.geometry == "depth":
            valid[chunk] &= scene.depth[chunk] > 0
    if options.conf_percentile > 0 and valid.any():
        valid &= confidence >= np.percentile(confidence[valid], options.conf_percentile)

    if options.drop_background:
        _require_instances(scene, "drop the background")
        valid &= scene.instances.labels != BACKGROUND
    if options.drop_structure and scene.instances is not None:
        valid &= ~structure_mask(scene.instances)
    if options.views is not None:
        valid &= np.isin(np.arange(scene.num_views), np.asarray(list(options.views), dtype=np.int64))[:, None, None]
    if options.drop_black or options.drop_white:
        for chunk in view_chunks(scene.num_views):
            rgb = rgb_uint8(scene.images[chunk])
            if options.drop_black:
                valid[chunk] &= rgb.sum(axis=-1, dtype=np.int32) >= BLACK_RGB_SUM
            if options.drop_white:
                valid[chunk] &= ~(rgb > WHITE_CHANNEL).all(axis=-1)
    if options.drop_sky:
        valid &= ~sky_pixels(scene)
    return valid


def _pixel_chunks(valid: np.ndarray, max_points: int | None) -> Iterator[Pixels]:
    """The ``valid`` pixels a chunk of views at a time; beyond ``max_points`` a fixed-seed random
    subset of them (the same subset whatever the chunking)."""
    per_view = valid.reshape(len(valid), -1).sum(axis=1)
    total = int(per_view.sum())
    keep = None
    if max_points is not None and total > max_points:
        keep = np.sort(np.random.default_rng(0).choice(total, max_points, replace=False))
    first = np.concatenate([[0], np.cumsum(per_view)])  # rank of each view's first valid pixel
    for chunk in view_chunks(len(valid)):
        view, row, col = np.nonzero(valid[chunk])
        view = view + chunk.start
        if keep is not None:
            ranks = keep[np.searchsorted(keep, first[chunk.start]):np.searchsorted(keep, first[chunk.stop])]
            picked = ranks - first[chunk.start]
            view, row, col = view[picked], row[picked], col[picked]
        if len(view):
            yield view, row, col


def _colorizer(scene: Scene, color_mode: ColorMode) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A function from selected pixels (view, row, column) to their ``[N, 3]`` uint8 colours."""
    if color_mode == "rgb":
        return lambda view, row, col: rgb_uint8(scene.images[view, row, col])
    if color_mode == "instance":
        _require_instances(scene, "colour by instance")
        palette = np.vstack([scene.instances.colors, BACKGROUND_GREY[None]])  # BACKGROUND (-1): the last row
        return lambda view, row, col: palette[scene.instances.labels[view, row, col]]
    if color_mode == "pca":
        pca = FeaturePCA.fit(scene.features)
        return lambda view, row, col: pca.colors(scene.features[view, row, col])
    raise ValueError(f"color_mode must be 'rgb', 'instance' or 'pca', not {color_mode!r}")


def dim_colors(colors: np.ndarray, instance: np.ndarray, highlight: Sequence[int]) -> np.ndarray:
    """A copy of ``[N, 3]`` uint8 ``colors`` where points outside the ``highlight`` instances are dimmed."""
    dimmed = ~np.isin(instance, np.asarray(list(highlight), dtype=np.int64))
    colors = colors.copy()
    colors[dimmed] = np.round(DIMMED_WEIGHT * colors[dimmed] + (1 - DIMMED_WEIGHT) * DIMMED_GREY)
    return colors


def _require_instances(scene: Scene, purpose: str) -> None:
    if scene.instances is None:
        raise ValueError(f"cannot {purpose}: the scene has no instances (run the clustering first)")


def feature_pca_colors(features: np.ndarray) -> np.ndarray:
    """``[..., D]`` features -> ``[..., 3]`` uint8 colours from their first 3 principal components
    (`FeaturePCA` fitted on these features)."""
    return FeaturePCA.fit(features).colors(features)


@dataclass(frozen=True)
class FeaturePCA:
    """The first 3 principal components of features and each one's stretch to 0..255.

    Deterministic: exact PCA of the covariance (no randomised solver), each component's sign
    fixed so that its largest loading is positive; every channel stretched so its 2nd and
    98th percentiles map to 0 and 255 (a constant channel becomes mid-grey). Fitted on at most
    `PCA_FIT_PIXELS` pixels, applied to any number.
    """

    mean: np.ndarray
    components: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "FeaturePCA":
        """Fit on ``[..., D]`` features (a fixed-seed sample of `PCA_FIT_PIXELS` of them when more)."""
        flat = np.asarray(features).reshape(-1, features.shape[-1])
        if len(flat) > PCA_FIT_PIXELS:
            flat = flat[np.sort(np.random.default_rng(0).choice(len(flat), PCA_FIT_PIXELS, replace=False))]
        flat = np.asarray(flat, np.float64)
        mean = flat.mean(axis=0)
        centred = flat - mean
        _, eigenvectors = np.linalg.eigh(centred.T @ centred)
        components = eigenvectors[:, ::-1][:, :3]  # largest variance first
        largest = np.abs(components).argmax(axis=0)
        components = components * np.sign(components[largest, np.arange(components.shape[1])])
        low, high = np.percentile(_pad_channels(centred @ components), PCA_PERCENTILES, axis=0)
        return cls(mean, components, low, high)

    def colors(self, features: np.ndarray) -> np.ndarray:
        """``[..., D]`` features -> ``[..., 3]`` uint8 colours."""
        flat = np.asarray(features, np.float64).reshape(-1, features.shape[-1])
        projected = _pad_channels((flat - self.mean) @ self.components)
        spread = self.high - self.low
        stretched = np.where(spread > 0, (projected - self.low) / np.where(spread > 0, spread, 1), 0.5)
        colors = np.round(np.clip(stretched, 0, 1) * 255).astype(np.uint8)
        return colors.reshape(*features.shape[:-1], 3)


def _pad_channels(projected: np.ndarray) -> np.ndarray:
    """Fewer than 3 feature channels: pad with constant (mid-grey) channels."""
    return np.pad(projected, ((0, 0), (0, 3 - projected.shape[1]))) if projected.shape[1] < 3 else projected


# -- GLB ----------------------------------------------------------------------------------
def glb_scene(scene: Scene, options: PointCloudOptions = PointCloudOptions(), cameras: bool = True) -> trimesh.Scene:
    """A `trimesh.Scene` with the coloured point cloud and camera frustums, upright for viewers."""
    import trimesh

    cloud = select_points(scene, options)
    meshes = trimesh.Scene()
    rgba = np.concatenate([cloud.colors, np.full((len(cloud.colors), 1), 255, np.uint8)], axis=1)
    meshes.add_geometry(trimesh.PointCloud(cloud.points, colors=rgba), geom_name="points")
    if cameras:
        size = scene_size(cloud.points) * FRUSTUM_DEPTH
        for index in range(scene.num_views):
            meshes.add_geometry(_frustum(scene, index, size, camera_color(index, scene.num_views)),
                                geom_name=f"camera_{index:03d}")
    meshes.apply_transform(_viewer_transform(scene.extrinsics[0]))
    return meshes


def export_glb(scene: Scene, path: str | Path, *, color_mode: ColorMode = "rgb",
               conf_percentile: float = PointCloudOptions.conf_percentile, show_cameras: bool = True,
               drop_background: bool = False, highlight: Sequence[int] | None = None,
               geometry: Geometry = PointCloudOptions.geometry, max_points: int | None = None) -> Path:
    """Write the point cloud (and camera frustums) as a binary glTF file; see `PointCloudOptions`
    (at most `GLB_MAX_POINTS` points, whatever ``max_points``)."""
    options = PointCloudOptions(color_mode=color_mode, geometry=geometry, conf_percentile=conf_percentile,
                                drop_background=drop_background, highlight=highlight, max_points=max_points)
    return _write_glb(scene, path, options, show_cameras)


def _write_glb(scene: Scene, path: str | Path, options: PointCloudOptions, cameras: bool) -> Path:
    """Write `glb_scene`, with at most `GLB_MAX_POINTS` points."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = replace(options, max_points=min(options.max_points or GLB_MAX_POINTS, GLB_MAX_POINTS))
    glb_scene(scene, options, cameras).export(path, file_type="glb")
    return path


def scene_size(points: np.ndarray) -> float:
    """Diagonal of the 5-95 percentile box: a scale robust to stray points."""
    if len(points) == 0:
        return 1.0
    low, high = np.percentile(points, [5, 95], axis=0)
    return float(np.linalg.norm(high - low)) or 1.0


def camera_color(index: int, count: int) -> np.ndarray:
    """uint8 RGB of camera ``index`` of ``count``: hues spread around the colour wheel."""
    hue = index / max(count, 1)
    return np.round(np.array(colorsys.hsv_to_rgb(hue, 0.9, 1.0)) * 255).astype(np.uint8)


def _frustum(scene: Scene, index: int, depth: float, color: np.ndarray) -> trimesh.Trimesh:
    """A double-sided pyramid showing view ``index``'s field of view, in world coordinates."""
    import trimesh

    height, width = scene.image_size
    fx, fy = scene.intrinsics[index, 0, 0], scene.intrinsics[index, 1, 1]
    half_w, half_h = depth * (width / 2) / fx, depth * (height / 2) / fy
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    camera_points = np.array([(0.0, 0.0, 0.0)] + [(x, y, depth) for x, y in corners])
    cam_to_world = invert_extrinsics(scene.extrinsics[index].astype(np.float64))
    vertices = camera_points @ cam_to_world[:, :3].T + cam_to_world[:, 3]
    sides = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1]])
    faces = np.concatenate([sides, sides[:, ::-1]])
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    mesh.visual.vertex_colors = np.tile(np.append(color, 255), (len(vertices), 1))
    return mesh


def _viewer_transform(first_extrinsic: np.ndarray) -> np.ndarray:
    """OpenCV world -> upright (y up) viewer frame: inverse first camera, OpenGL flip, 180 deg about y."""
    world_to_first = np.eye(4)
    world_to_first[:3] = first_extrinsic
    turn_about_y = np.diag([-1.0, 1.0, -1.0, 1.0])
    return np.linalg.inv(world_to_first) @ OPENGL_FROM_OPENCV @ turn_about_y


# -- PLY ----------------------------------------------------------------------------------
_PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                        ("blue", "u1"), ("instance", "<i4"), ("label", "<i4")])


def write_ply(scene: Scene, path: str | Path, options: PointCloudOptions = PointCloudOptions()) -> Path:
    """Binary PLY with positions, colours and the instance id of every point (-1 = background),
    written a chunk of views at a time (`point_chunks`)."""
    count = int(kept_pixels(scene, options).sum())
    if options.max_points is not None:
        count = min(count, options.max_points)
    names, label_of_instance = _label_table(scene)
    properties = "".join(f"property {kind} {name}\n" for name, kind in (
        ("x", "float"), ("y", "float"), ("z", "float"), ("red", "uchar"), ("green", "uchar"),
        ("blue", "uchar"), ("instance", "int"), ("label", "int")))
    label_comments = "".join(f"comment label {index} {name}\n" for index, name in enumerate(names))
    header = ("ply\nformat binary_little_endian 1.0\ncomment IGGT point cloud; instance -1 = background\n"
              f"comment units: {scene.units}\n"
              "comment label: index into the 'comment label <index> <name>' lines, -1 = none\n"
              f"{label_comments}element vertex {count}\n{properties}end_header\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(header.encode("ascii", "replace"))
        for cloud in point_chunks(scene, options):
            vertices = np.empty(len(cloud.points), _PLY_VERTEX)
            for axis, name in enumerate("xyz"):
                vertices[name] = cloud.points[:, axis]
            for channel, name in enumerate(("red", "green", "blue")):
                vertices[name] = cloud.colors[:, channel]
            vertices["instance"] = cloud.instance
            vertices["label"] = np.where(cloud.instance >= 0, label_of_instance[np.maximum(cloud.instance, 0)], -1)
            file.write(vertices.tobytes())
    return path


def _label_table(scene: Scene) -> tuple[list[str], np.ndarray]:
    """The distinct open-vocabulary labels (first seen first) and each instance's index into them (-1 = none)."""
    if scene.instances is None:
        return [], np.full(1, -1, np.int32)
    names = list(dict.fromkeys(i.label for i in scene.instances.info if i.label))
    index = [names.index(i.label) if i.label else -1 for i in scene.instances.info]
    return names, np.array(index or [-1], np.int32)


# -- instance masks -----------------------------------------------------------------------
def instance_overlays(scene: Scene, highlight: Sequence[int] | None = None,
                      photos: Sequence[Image.Image] | None = None, max_side: int | None = None,
                      views: Sequence[int] | None = None,
                      labels: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Per view (all, or ``views``) ``[H, W, 3]`` uint8: the photo blended with instance colours, boundaries white.

    With ``highlight``, only those instance ids are coloured and outlined. With ``photos`` (the
    original pictures, one per view), each overlay is drawn on its photo at the photo's size
    (or scaled so its long side is ``max_side``) with labels from `upsample_labels`, or from
    ``labels`` (one per drawn view, already at that size: a new highlight need not upsample again);
    without photos, on the model input.
    """
    _require_instances(scene, "draw instance overlays")
    views = list(range(scene.num_views) if views is None else views)
    return [_view_overlay(scene, index, highlight, None if photos is None else photos[index], max_side,
                          None if labels is None else labels[position])
            for position, index in enumerate(views)]


def _view_overlay(scene: Scene, index: int, highlight: Sequence[int] | None, photo: Image.Image | None,
                  max_side: int | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """One view's overlay (see `instance_overlays`); ``labels`` already upsampled to the drawn size are reused."""
    if photo is None:
        image, labels = rgb_float(scene.images[index]), scene.instances.labels[index]
    else:
        scale = min(1.0, max_side / max(photo.size)) if max_side else 1.0
        size = (max(1, round(photo.height * scale)), max(1, round(photo.width * scale)))
        image = np.asarray(photo.convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32) / 255
        if labels is None or labels.shape != size:
            labels = upsample_labels(scene, index, size)
    if highlight is not None:
        labels = np.where(np.isin(labels, np.asarray(list(highlight), dtype=np.int64)), labels, BACKGROUND)
    palette = np.vstack([scene.instances.colors, np.zeros((1, 3), np.uint8)])
    return _overlay(image, labels, palette[np.where(labels >= 0, labels, len(palette) - 1)])


def upsample_labels(scene: Scene, index: int, size: tuple[int, int]) -> np.ndarray:
    """View ``index``'s instance labels at ``size`` (height, width) of its original photo, with smooth edges.

    Nearest-neighbour upsampling of a 112-pixel label map gives staircase edges. Here every photo
    pixel looks at the four model pixels around it: it is background when their bilinear weights
    are mostly background; otherwise it takes, of the instances among them, the one with the most
    bilinear weight plus agreement between its mean feature and the bilinearly interpolated
    feature there. Edges follow the interpolated features instead of the pixel grid.
    """
    _require_instances(scene, "upsample instance labels")
    labels, features = scene.instances.labels[index], normalize_features(scene.features[index])
    height, width = scene.image_size
    transform = _view_transform(scene, index)
    rows = (np.arange(size[0]) + 0.5) * transform.original_size[0] / size[0] - 0.5
    cols = (np.arange(size[1]) + 0.5) * transform.original_size[1] / size[1] - 0.5
    y, x = transform.from_original(rows, cols)
    y, x = np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)
    y0, x0 = np.minimum(np.floor(y).astype(int), height - 2 if height > 1 else 0), \
        np.minimum(np.floor(x).astype(int), width - 2 if width > 1 else 0)
    wy, wx = (y - y0)[:, None], (x - x0)[None, :]
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    corners = [(y0, x0, (1 - wy) * (1 - wx)), (y0, x1, (1 - wy) * wx), (y1, x0, wy * (1 - wx)), (y1, x1, wy * wx)]
    neighbour = [labels[np.ix_(r, c)] for r, c, _ in corners]
    best = neighbour[0].astype(np.int32)
    mixed = np.flatnonzero(~((neighbour[0] == neighbour[1]) & (neighbour[0] == neighbour[2])
                             & (neighbour[0] == neighbour[3])))  # elsewhere all four agree: nothing to decide
    if len(mixed) == 0:
        return best
    rows, cols = np.unravel_index(mixed, size)
    neighbour = [n.reshape(-1)[mixed] for n in neighbour]
    weight = [np.broadcast_to(w, size).reshape(-1)[mixed].astype(np.float32) for _, _, w in corners]
    feature = sum(features[r[rows], c[cols]] * w[:, None] for (r, c, _), w in zip(corners, weight))

    count = scene.instances.count
    flat = labels[labels >= 0]
    sums = np.stack([np.bincount(flat, features[labels >= 0][:, d], minlength=count)
                     for d in range(features.shape[-1])], axis=1)
    means = normalize_features(np.vstack([sums, np.zeros((1, features.shape[-1]))]))  # last row: background
    background_weight = sum(w * (n < 0) for n, w in zip(neighbour, weight))
    chosen, chosen_score = np.full(len(mixed), BACKGROUND, np.int32), np.full(len(mixed), -np.inf, np.float32)
    for candidate in neighbour:
        votes = sum(w * (n == candidate) for n, w in zip(neighbour, weight))
        agreement = np.einsum("nd,nd->n", feature, means[np.where(candidate >= 0, candidate, count)])
        score = np.where((candidate >= 0) & (votes > 0), votes + FEATURE_AGREEMENT * agreement, -np.inf)
        better = score > chosen_score
        chosen[better], chosen_score[better] = candidate[better], score[better]
    chosen[background_weight > 0.5] = BACKGROUND
    best.reshape(-1)[mixed] = chosen
    return best


def write_instance_masks(scene: Scene, directory: str | Path,
                         photos: Sequence[Image.Image] | None = None) -> list[Path]:
    """Per view a 16-bit id PNG (0 = background, id + 1 otherwise) at the original photo's size
    (`upsample_labels`) and a colour overlay PNG (on ``photos`` at their size when given, else on
    the model input)."""
    _require_instances(scene, "write instance masks")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(scene.num_views):
        stem = f"{index:03d}_{_safe_stem(_view_name(scene, index))}"
        written.append(directory / f"{stem}_ids.png")
        labels = upsample_labels(scene, index, _view_transform(scene, index).original_size)
        Image.fromarray(one_based_ids(labels).astype(np.uint16)).save(written[-1])
        written.append(directory / f"{stem}_overlay.png")
        overlay = _view_overlay(scene, index, None, None if photos is None else photos[index], labels=labels)
        Image.fromarray(overlay).save(written[-1])
    return written


def _overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Photo blended with ``colours`` where ``labels`` is an instance, label boundaries drawn white."""
    photo = np.clip(image, 0, 1) * 255
    labelled = (labels != BACKGROUND)[..., None]
    blended = np.where(labelled, (1 - OVERLAY_ALPHA) * photo + OVERLAY_ALPHA * colours, photo)
    boundary = np.zeros(labels.shape, bool)
    boundary[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundary[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    boundary[1:] |= labels[1:] != labels[:-1]
    boundary[:-1] |= labels[1:] != labels[:-1]
    blended[boundary] = 255
    return np.round(blended).astype(np.uint8)


# -- JSON summary -------------------------------------------------------------------------
def scene_summary(scene: Scene) -> dict:
    """Cameras and instances as plain JSON values (NaN becomes null)."""
    cam_to_world = invert_extrinsics(scene.extrinsics.astype(np.float64))
    views = []
    for index in range(scene.num_views):
        transform = scene.view_transforms[index] if index < len(scene.view_transforms) else None
        views.append({
            "index": index,
            "name": _view_name(scene, index),
            "original_size_hw": list(transform.original_size) if transform else None,
            "extrinsics_world_to_camera": scene.extrinsics[index].tolist(),
            "intrinsics": scene.intrinsics[index].tolist(),
            "camera_center": cam_to_world[index, :, 3].tolist(),
            "median_depth": float(np.median(scene.depth[index])),
        })
    instances = None if scene.instances is None else [info.to_json() for info in scene.instances.info]
    return _json_safe({
        "model_name": scene.model_name,
        "num_views": scene.num_views,
        "image_size_hw": list(scene.image_size),
        "conventions": "OpenCV world-to-camera extrinsics, world = first camera; pixels of the model input",
        "units": scene.units,
        "views": views,
        "num_instances": None if instances is None else len(instances),
        "instances": instances,
    })


def write_summary(scene: Scene, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scene_summary(scene), indent=2, allow_nan=False))
    return path


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# -- COLMAP -------------------------------------------------------------------------------
def write_colmap(scene: Scene, directory: str | Path, max_points: int = 20_000, conf_percentile: float = 50.0,
                 cameras: CameraOptions = CameraOptions(), model=None,
                 photos: Sequence[Image.Image] | None = None) -> Path:
    """A COLMAP model of the scene: text in ``directory``, binary in ``directory/sparse/0``, and
    ``photos`` (when given) in ``directory/images``, the layout Gaussian-splatting trainers read.

    ``model``: a pycolmap `Reconstruction` to write as it is (the bundle-adjusted one of
    `iggt.sfm.adjust`, with its tracks). Without it the model is built from the scene: one camera
    per view (or one ``cameras.shared``), confident depth points, each observed in the view it was
    unprojected from and in any other view where it projects inside the image onto a depth that
    agrees within `VISIBILITY_DEPTH_TOLERANCE`. Coordinates are the original photos' pixels
    (COLMAP's convention, pixel centres at +0.5), as far as each view's `ViewTransform` knows them.
    """
    from iggt.sfm.colmap import add_points, empty_reconstruction, image_file_name, write_model

    if model is None:
        cloud = select_points(scene, PointCloudOptions(geometry="depth", conf_percentile=conf_percentile,
                                                       max_points=max_points))
        observations = _observations(scene, cloud)  # per view: (point index, x, y) in model pixels
        model = empty_reconstruction(scene, cameras, [np.stack([xs, ys], axis=1) for _, xs, ys in observations])
        add_points(model, cloud.points, cloud.colors,
                   [(points, np.arange(len(points))) for points, _, _ in observations])
    names = [image_file_name(scene, index) for index in range(scene.num_views)]
    return write_model(model, directory, photos, names)


def _observations(scene: Scene, cloud: PointCloud) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per view: indices of the points it sees and their (x, y) model-input pixel coordinates.

    With more views than `MAX_OBSERVATIONS_PER_POINT`, a point is looked for only in every k-th view
    (k = views / that, rounded up, from a fixed-seed offset of its own) besides the view it comes from."""
    height, width = scene.image_size
    stride = max(1, math.ceil(scene.num_views / MAX_OBSERVATIONS_PER_POINT))
    offset = np.random.default_rng(0).integers(0, stride, len(cloud.points))
    result = []
    for index in range(scene.num_views):
        pixels, z = project_points(cloud.points, scene.extrinsics[index], scene.intrinsics[index])
        xs, ys = pixels[:, 0], pixels[:, 1]  # NaN behind the camera: never inside
        inside = (xs > -0.5) & (xs < width - 0.5) & (ys > -0.5) & (ys < height - 0.5)
        cols = np.round(np.where(inside, xs, 0)).astype(np.int64)
        rows = np.round(np.where(inside, ys, 0)).astype(np.int64)
        surface = np.zeros(len(z))
        surface[inside] = scene.depth[index, rows[inside], cols[inside]]
        seen = inside & (np.abs(surface - z) <= VISIBILITY_DEPTH_TOLERANCE * np.abs(z))
        seen &= (index + offset) % stride == 0
        seen |= cloud.view == index  # the view a point comes from always sees it
        points = np.nonzero(seen)[0]
        result.append((points, xs[points], ys[points]))
    return result


# -- everything ---------------------------------------------------------------------------
def export_all(scene: Scene, out_dir: str | Path, formats: Sequence[str] = FORMATS,
               options: PointCloudOptions = PointCloudOptions(), progress: Progress | None = None,
               photos: Sequence[Image.Image] | None = None, colmap_model=None,
               cameras: CameraOptions = CameraOptions()) -> dict[str, Path]:
    """Write each requested format into ``out_dir``; returns what was written, by name.

    ``glb`` writes ``scene.glb`` (photo colours), and also ``instances.glb`` when the scene
    has instances and ``features.glb`` (PCA of the instance features). ``photos`` (one per view)
    are what the mask overlays are drawn on (see `write_instance_masks`) and what the COLMAP model's
    ``images`` folder holds; ``colmap_model`` and ``cameras`` are `write_colmap`'s ``model`` and
    ``cameras``.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; available: {', '.join(FORMATS)}")
    if "masks" in formats:
        _require_instances(scene, "write instance masks")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for step, name in enumerate(formats):
        if progress is not None:
            progress(step / len(formats), f"writing {name}")
        if name == "glb":
            written["glb"] = _write_glb(scene, out_dir / "scene.glb", replace(options, color_mode="rgb"), True)
            if scene.instances is not None:
                written["glb_instances"] = _write_glb(scene, out_dir / "instances.glb",
                                                      replace(options, color_mode="instance"), True)
            written["glb_features"] = _write_glb(scene, out_dir / "features.glb",
                                                 replace(options, color_mode="pca"), True)
        elif name == "ply":
            written["ply"] = write_ply(scene, out_dir / "points.ply", options)
        elif name == "masks":
            write_instance_masks(scene, out_dir / "masks", photos)
            written["masks"] = out_dir / "masks"
        elif name == "json":
            written["json"] = write_summary(scene, out_dir / "summary.json")
        elif name == "colmap":
            written["colmap"] = write_colmap(scene, out_dir / "colmap", cameras=cameras, model=colmap_model,
                                             photos=photos)
        elif name == "scene":
            written["scene"] = scene.save(out_dir / "scene.npz")
    if progress is not None:
        progress(1.0, "exports written")
    return written

