"""A `Scene`'s cameras as a pycolmap `Reconstruction`, and back.

COLMAP models live in the pixels of the original photos (so they can be used with them
directly) and put pixel centres at +0.5; a `Scene` lives in model-input pixels with pixel
centres at integers. Every conversion between the two goes through a view's `ViewTransform`
here, for cameras and for 2D observations alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iggt.errors import IGGTError
from iggt.scene import Scene, ViewTransform

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV")
"""COLMAP camera models a model can be written with (distortion starts at zero)."""


@dataclass(frozen=True)
class CameraOptions:
    """How the COLMAP model describes the cameras."""

    model: str = "PINHOLE"
    """One of `CAMERA_MODELS`."""
    shared: bool = False
    """One camera for every photo (they must have the same size), as for one phone at one zoom."""

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise IGGTError(f"unknown camera model {self.model!r}; choose from {', '.join(CAMERA_MODELS)}")


def view_transform(scene: Scene, index: int) -> ViewTransform:
    """The view's transform, or the identity when the scene does not carry one."""
    if index < len(scene.view_transforms):
        return scene.view_transforms[index]
    return ViewTransform(scene.image_size, scene.image_size)


def view_name(scene: Scene, index: int) -> str:
    return scene.view_names[index] if index < len(scene.view_names) else f"view_{index:03d}.png"


def image_file_name(scene: Scene, index: int) -> str:
    """The name a view has in a COLMAP model: its photo's name without folders or spaces, ending in
    .jpg, .jpeg or .png (what `write_model` saves the photo as)."""
    name = Path(view_name(scene, index))
    return safe_stem(name.name) + (name.suffix if name.suffix.lower() in PHOTO_SUFFIXES else ".png")


def safe_stem(name: str) -> str:
    """A file-name-safe stem: no folders, no spaces."""
    stem = Path(name).stem or "view"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def to_photo_pixels(transform: ViewTransform, xy: np.ndarray) -> np.ndarray:
    """Model-input pixels ``[n, 2]`` (x, y; centres at integers) -> COLMAP photo pixels (centres at +0.5)."""
    y, x = transform.to_original(xy[:, 1] + 0.5, xy[:, 0] + 0.5)
    return np.stack([x, y], axis=1)


def to_model_pixels(transform: ViewTransform, xy: np.ndarray) -> np.ndarray:
    """COLMAP photo pixels ``[n, 2]`` -> model-input pixels (x, y; centres at integers)."""
    y, x = transform.from_original(xy[:, 1], xy[:, 0])
    return np.stack([x - 0.5, y - 0.5], axis=1)


def intrinsics_to_photo(transform: ViewTransform, intrinsics: np.ndarray) -> tuple[float, float, float, float]:
    """Model-input pinhole ``[3, 3]`` -> (fx, fy, cx, cy) in COLMAP photo pixels."""
    scale_y = transform.original_size[0] / transform.resized_size[0]
    scale_x = transform.original_size[1] / transform.resized_size[1]
    cy, cx = transform.to_original(intrinsics[1, 2] + 0.5, intrinsics[0, 2] + 0.5)
    return float(intrinsics[0, 0] * scale_x), float(intrinsics[1, 1] * scale_y), float(cx), float(cy)


def intrinsics_from_photo(transform: ViewTransform, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(fx, fy, cx, cy) in COLMAP photo pixels -> model-input pinhole ``[3, 3]``."""
    scale_y = transform.resized_size[0] / transform.original_size[0]
    scale_x = transform.resized_size[1] / transform.original_size[1]
    cy_model, cx_model = transform.from_original(cy, cx)
    return np.array([[fx * scale_x, 0, cx_model - 0.5], [0, fy * scale_y, cy_model - 0.5], [0, 0, 1]], np.float64)


def _camera(model: str, width: int, height: int, fx: float, fy: float, cx: float, cy: float, camera_id: int):
    import pycolmap

    focal = (fx + fy) / 2
    params = {"SIMPLE_PINHOLE": [focal, cx, cy], "PINHOLE": [fx, fy, cx, cy],
              "SIMPLE_RADIAL": [focal, cx, cy, 0.0], "OPENCV": [fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0]}[model]
    return pycolmap.Camera(model=model, width=width, height=height, params=params, camera_id=camera_id)


def empty_reconstruction(scene: Scene, cameras: CameraOptions = CameraOptions(),
                         keypoints: Sequence[np.ndarray] | None = None):
    """A pycolmap `Reconstruction` with the scene's cameras and registered images, no 3D points.

    ``keypoints[v]`` ``[n, 2]`` (model-input pixels) become view v's 2D points, in photo pixels.
    """
    import pycolmap

    transforms = [view_transform(scene, v) for v in range(scene.num_views)]
    photo = [intrinsics_to_photo(t, scene.intrinsics[v].astype(np.float64)) for v, t in enumerate(transforms)]
    reconstruction = pycolmap.Reconstruction()
    if cameras.shared:
        sizes = {t.original_size for t in transforms}
        if len(sizes) > 1:
            raise IGGTError(f"a shared camera needs photos of one size; these have {len(sizes)} sizes")
        reconstruction.add_camera_with_trivial_rig(
            _camera(cameras.model, transforms[0].original_size[1], transforms[0].original_size[0],
                    *np.mean(photo, axis=0), camera_id=1))
    for view, transform in enumerate(transforms):
        camera_id = 1 if cameras.shared else view + 1
        if not cameras.shared:
            reconstruction.add_camera_with_trivial_rig(
                _camera(cameras.model, transform.original_size[1], transform.original_size[0], *photo[view],
                        camera_id=camera_id))
        points = np.zeros((0, 2)) if keypoints is None else to_photo_pixels(transform, keypoints[view])
        image = pycolmap.Image(name=image_file_name(scene, view), keypoints=points.astype(np.float64),
                               camera_id=camera_id, image_id=view + 1)
        extrinsics = scene.extrinsics[view].astype(np.float64)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(extrinsics[:, :3]), extrinsics[:, 3])
        reconstruction.add_image_with_trivial_frame(image, pose)
    return reconstruction


def add_points(reconstruction, points: np.ndarray, colors: np.ndarray,
               observations: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Add 3D ``points`` ``[N, 3]`` with colours; ``observations[v] = (point index, 2D point index)``
    says which of view v's 2D points sees which 3D point."""
    import pycolmap

    elements: list[list] = [[] for _ in range(len(points))]
    for view, (point_ids, slots) in enumerate(observations):
        for point, slot in zip(point_ids, slots):
            elements[point].append(pycolmap.TrackElement(view + 1, int(slot)))
    for xyz, rgb, track in zip(points, colors, elements):
        reconstruction.add_point3D(np.asarray(xyz, np.float64), pycolmap.Track(track), np.asarray(rgb, np.uint8))


def cameras_from_reconstruction(reconstruction, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Extrinsics ``[S, 3, 4]`` and model-input intrinsics ``[S, 3, 3]`` of images 1..S (pinhole part
    only: distortion, if the model has any, is not part of a `Scene`)."""
    extrinsics, intrinsics = [], []
    for view in range(scene.num_views):
        image = reconstruction.image(view + 1)
        camera = reconstruction.camera(image.camera_id)
        extrinsics.append(image.cam_from_world().matrix())
        intrinsics.append(intrinsics_from_photo(view_transform(scene, view), camera.focal_length_x,
                                                camera.focal_length_y, camera.principal_point_x,
                                                camera.principal_point_y))
    return np.array(extrinsics, np.float32), np.array(intrinsics, np.float32)


def write_model(reconstruction, directory: str | Path, photos: Sequence | None = None,
                names: Sequence[str] = ()) -> Path:
    """Text model in ``directory``, binary model in ``directory/sparse/0`` and, when given, the
    photos in ``directory/images`` under the names the model uses: the layout Gaussian-splatting
    trainers (gsplat, nerfstudio) read."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    reconstruction.write_text(str(directory))
    binary = directory / "sparse" / "0"
    binary.mkdir(parents=True, exist_ok=True)
    reconstruction.write_binary(str(binary))
    if photos is not None:
        (directory / "images").mkdir(exist_ok=True)
        for photo, name in zip(photos, names):
            target = directory / "images" / name
            image = photo.convert("RGB")
            image.save(target, quality=95)  # the format follows the suffix
    return directory
