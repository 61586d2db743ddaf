"""The user's own cameras: known intrinsics and known poses.

Known intrinsics (``fx,fy,cx,cy`` in the photos' own pixels, shared or one set per photo, or a
COLMAP ``cameras.txt``) replace the predicted ones: depth is unprojected with them, bundle
adjustment holds them fixed and every export writes them. Known poses (a COLMAP model or a JSON
of world-to-camera matrices) move the reconstruction into the user's frame by the similarity
that best maps the predicted camera centres onto the given ones; the residual says how well
the two agree.

Conventions: ``--intrinsics`` numbers follow OpenCV calibration (pixel centres at integers);
COLMAP files follow COLMAP (pixel centres at +0.5).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from iggt.errors import IGGTError
from iggt.geometry import invert_extrinsics, quaternion_to_rotation, umeyama_alignment, unproject_depth
from iggt.scene import Scene
from iggt.sfm.colmap import image_file_name, intrinsics_from_photo, intrinsics_to_photo, view_name, view_transform

COLMAP_FOCAL_AND_CENTRE = {
    # model: indices of fx, fy, cx, cy in its parameters (fx == fy for the single-focal models)
    "SIMPLE_PINHOLE": (0, 0, 1, 2), "SIMPLE_RADIAL": (0, 0, 1, 2), "RADIAL": (0, 0, 1, 2),
    "SIMPLE_RADIAL_FISHEYE": (0, 0, 1, 2), "RADIAL_FISHEYE": (0, 0, 1, 2), "FOV": (0, 1, 2, 3),
    "PINHOLE": (0, 1, 2, 3), "OPENCV": (0, 1, 2, 3), "OPENCV_FISHEYE": (0, 1, 2, 3), "FULL_OPENCV": (0, 1, 2, 3),
    "THIN_PRISM_FISHEYE": (0, 1, 2, 3),
}
SIZE_TOLERANCE = 0.01
"""A COLMAP camera of another size than the photo is rescaled when the aspect ratios agree this well."""


class CameraInputError(IGGTError):
    """Known intrinsics or poses that cannot be used as given."""


# -- intrinsics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownIntrinsics:
    """Per photo (fx, fy, cx, cy) in COLMAP photo pixels (pixel centres at +0.5)."""

    values: np.ndarray
    """``[S, 4]`` float64."""

    @classmethod
    def parse(cls, text: str, photo_sizes: list[tuple[int, int]]) -> "KnownIntrinsics":
        """``fx,fy,cx,cy`` (shared), ``fx,fy,cx,cy;fx,fy,cx,cy;...`` (one per photo) or the path of a
        COLMAP ``cameras.txt``; ``photo_sizes`` are the (height, width) of the photos."""
        if Path(text).suffix == ".txt" or Path(text).is_file():
            return cls.from_colmap_cameras(Path(text), photo_sizes)
        groups = [g for g in text.replace(" ", "").split(";") if g]
        try:
            values = np.array([[float(v) for v in g.split(",")] for g in groups], np.float64)
        except ValueError:
            raise CameraInputError(f"cannot read intrinsics {text!r}: give fx,fy,cx,cy numbers, one group per "
                                   f"photo separated by ';', or the path of a COLMAP cameras.txt") from None
        if values.ndim != 2 or values.shape[1] != 4:
            raise CameraInputError(f"intrinsics need 4 numbers per camera (fx,fy,cx,cy), got {text!r}")
        return cls._checked(values + np.array([0, 0, 0.5, 0.5]), len(photo_sizes), "--intrinsics")

    @classmethod
    def from_colmap_cameras(cls, path: Path, photo_sizes: list[tuple[int, int]]) -> "KnownIntrinsics":
        """One camera for every photo, or one per photo (in camera-id order), rescaled to the photo size."""
        try:
            lines = [line.split() for line in path.read_text().splitlines()
                     if line.strip() and not line.startswith("#")]
            cameras = sorted((int(line[0]), line[1], int(line[2]), int(line[3]), [float(v) for v in line[4:]])
                             for line in lines)
        except FileNotFoundError:
            raise CameraInputError(f"cameras file not found: {path.name}") from None
        except (ValueError, IndexError, UnicodeDecodeError):
            raise CameraInputError(f"{path.name} is not a COLMAP cameras.txt (expected lines "
                                   f"'ID MODEL WIDTH HEIGHT PARAMS...')") from None
        if not cameras:
            raise CameraInputError(f"{path.name} holds no camera")
        if len(cameras) not in (1, len(photo_sizes)):
            raise CameraInputError(f"{path.name} has {len(cameras)} cameras for {len(photo_sizes)} photos: "
                                   f"give one shared camera or one per photo")
        values = []
        for index, (height, width) in enumerate(photo_sizes):
            camera_id, model, cam_width, cam_height, params = cameras[index if len(cameras) > 1 else 0]
            if model not in COLMAP_FOCAL_AND_CENTRE:
                raise CameraInputError(f"{path.name}: camera {camera_id} has unsupported model {model}")
            try:
                fx, fy, cx, cy = (params[i] for i in COLMAP_FOCAL_AND_CENTRE[model])
            except IndexError:
                raise CameraInputError(f"{path.name}: camera {camera_id} has too few parameters for {model}") from None
            scale_x, scale_y = width / cam_width, height / cam_height
            if abs(scale_x / scale_y - 1) > SIZE_TOLERANCE:
                raise CameraInputError(f"{path.name}: camera {camera_id} is {cam_width}x{cam_height}, photo {index} "
                                       f"is {width}x{height} (another aspect ratio)")
            values.append((fx * scale_x, fy * scale_y, cx * scale_x, cy * scale_y))
        return cls._checked(np.array(values, np.float64), len(photo_sizes), path.name)

    @classmethod
    def _checked(cls, values: np.ndarray, photos: int, source: str) -> "KnownIntrinsics":
        if len(values) not in (1, photos):
            raise CameraInputError(f"{source}: {len(values)} sets of intrinsics for {photos} photos: give one shared "
                                   f"set or one per photo")
        if not (np.isfinite(values).all() and (values[:, :2] > 0).all()):
            raise CameraInputError(f"{source}: focal lengths must be positive numbers")
        return cls(np.repeat(values, photos, axis=0) if len(values) == 1 else values)


@dataclass
class IntrinsicsReport:
    """Predicted against given focal lengths."""

    predicted_focal: list[float]
    """Per photo, mean of fx and fy, photo pixels."""
    given_focal: list[float]

    def summary(self) -> str:
        difference = [100 * (p / g - 1) for p, g in zip(self.predicted_focal, self.given_focal)]
        return (f"given intrinsics: predicted focal length differs by {np.mean(difference):+.1f} % on average "
                f"(from {min(difference):+.1f} % to {max(difference):+.1f} %)")


def apply_intrinsics(scene: Scene, known: KnownIntrinsics) -> tuple[Scene, IntrinsicsReport]:
    """The scene with the given intrinsics, its depth unprojected with them."""
    if len(known.values) != scene.num_views:
        raise CameraInputError(f"{len(known.values)} sets of intrinsics for {scene.num_views} photos")
    intrinsics, predicted, given = [], [], []
    for view in range(scene.num_views):
        transform = view_transform(scene, view)
        fx, fy, _, _ = intrinsics_to_photo(transform, scene.intrinsics[view].astype(np.float64))
        predicted.append((fx + fy) / 2)
        given.append(float(known.values[view, :2].mean()))
        intrinsics.append(intrinsics_from_photo(transform, *known.values[view]))
    intrinsics = np.array(intrinsics, np.float32)
    adjusted = replace(scene, intrinsics=intrinsics,
                       points_from_depth=unproject_depth(scene.depth, scene.extrinsics, intrinsics))
    return adjusted, IntrinsicsReport(predicted, given)


# -- poses -----------------------------------------------------------------------------------
def read_poses(path: str | Path, scene: Scene) -> np.ndarray:
    """World-to-camera ``[S, 3, 4]`` of the scene's photos from a JSON file (a list of 3x4 or 4x4
    matrices, or ``{"extrinsics": [...]}`` as in a scene record's cameras.json) or a COLMAP model
    (a folder, or its images.txt); COLMAP images are matched to the photos by name, else by order."""
    path = Path(path)
    if not path.exists():
        raise CameraInputError(f"poses file not found: {path.name}")
    if path.suffix == ".json":
        extrinsics = _json_poses(path)
    else:
        extrinsics = _colmap_poses(path, scene)
    if len(extrinsics) != scene.num_views:
        raise CameraInputError(f"{path.name} has {len(extrinsics)} poses for {scene.num_views} photos")
    rotations = extrinsics[:, :, :3]
    if not np.allclose(rotations @ np.swapaxes(rotations, 1, 2), np.eye(3), atol=1e-3):
        raise CameraInputError(f"{path.name}: the poses' 3x3 parts are not rotations (expected world-to-camera "
                               f"[R | t])")
    return extrinsics


def _json_poses(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text())
        matrices = np.array(data["extrinsics"] if isinstance(data, dict) else data, np.float64)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CameraInputError(f"{path.name} is not a JSON list of world-to-camera matrices (or "
                               f"{{\"extrinsics\": [...]}})") from None
    if matrices.ndim != 3 or matrices.shape[1:] not in ((3, 4), (4, 4)):
        raise CameraInputError(f"{path.name}: poses must be 3x4 or 4x4 matrices, got shape {matrices.shape}")
    return matrices[:, :3]


def _colmap_poses(path: Path, scene: Scene) -> np.ndarray:
    """Poses of a COLMAP model folder (binary or text) or of an images.txt."""
    if path.is_dir():
        import pycolmap

        try:
            model = pycolmap.Reconstruction(str(path))
        except Exception:  # pycolmap raises plain exceptions for damaged files
            raise CameraInputError(f"{path.name} is not a readable COLMAP model") from None
        images = sorted((image.image_id, image.name, image.cam_from_world().matrix()) for image in model.images.values())
    else:
        images = _images_txt(path)
    by_name = {name: matrix for _, name, matrix in images}
    names = [image_file_name(scene, v) for v in range(scene.num_views)]
    originals = [Path(view_name(scene, v)).name for v in range(scene.num_views)]
    for candidates in (names, originals):
        if all(name in by_name for name in candidates):
            return np.array([by_name[name] for name in candidates], np.float64)
    return np.array([matrix for _, _, matrix in images], np.float64)


def _images_txt(path: Path) -> list[tuple[int, str, np.ndarray]]:
    import torch

    try:
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        images = []
        for line in lines[::2]:  # every image line is followed by its 2D points line
            fields = line.split()
            qw, qx, qy, qz, tx, ty, tz = (float(v) for v in fields[1:8])
            rotation = quaternion_to_rotation(torch.tensor([qx, qy, qz, qw], dtype=torch.float64)).numpy()
            images.append((int(fields[0]), fields[9], np.concatenate([rotation, [[tx], [ty], [tz]]], axis=1)))
    except (ValueError, IndexError, UnicodeDecodeError):
        raise CameraInputError(f"{path.name} is not a COLMAP images.txt (expected lines "
                               f"'ID QW QX QY QZ TX TY TZ CAMERA_ID NAME' each followed by a points line)") from None
    return sorted(images)


@dataclass
class PoseAlignment:
    """The similarity ``x -> scale * rotation @ x + translation`` that maps the predicted camera
    centres onto the given ones, and how well the cameras then agree."""

    scale: float
    """Given units per scene unit."""
    rotation: np.ndarray
    translation: np.ndarray
    centre_residual: float
    """RMS distance of the camera centres after alignment, in the given units."""
    rotation_residual: float
    """Mean angle (degrees) between aligned predicted and given camera orientations."""
    spread: float
    """RMS distance of the given camera centres from their mean: what the residual compares to."""
    units: str = "units of the given poses"

    def summary(self) -> str:
        share = 100 * self.centre_residual / self.spread if self.spread > 0 else float("nan")
        return (f"aligned to the given poses (scale {self.scale:.4g}): camera centres off by "
                f"{self.centre_residual:.4g} RMS ({share:.1f} % of their spread), orientations by "
                f"{self.rotation_residual:.2f} deg on average")


def fit_pose_alignment(scene: Scene, extrinsics: np.ndarray) -> PoseAlignment:
    """The similarity into the frame of the given world-to-camera ``extrinsics`` ``[S, 3, 4]``
    (Umeyama on the camera centres) and its residual; apply it with `transform_scene`."""
    extrinsics = np.asarray(extrinsics, np.float64)
    if len(extrinsics) != scene.num_views:
        raise CameraInputError(f"{len(extrinsics)} poses for {scene.num_views} photos")
    predicted = invert_extrinsics(scene.extrinsics.astype(np.float64))[:, :, 3]
    given = invert_extrinsics(extrinsics)[:, :, 3]
    if len(given) < 3 or np.linalg.matrix_rank(given - given.mean(axis=0), tol=1e-9) < 2:
        raise CameraInputError("cannot align to the given poses: it takes 3 or more camera centres, not all on "
                               "one line")
    scale, rotation, translation = umeyama_alignment(predicted, given)
    aligned_centres = scale * predicted @ rotation.T + translation
    relative = scene.extrinsics[:, :, :3].astype(np.float64) @ rotation.T @ np.swapaxes(extrinsics[:, :, :3], 1, 2)
    angles = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return PoseAlignment(float(scale), rotation, translation,
                         float(np.sqrt(np.mean(np.sum((aligned_centres - given) ** 2, axis=1)))), float(angles.mean()),
                         float(np.sqrt(np.mean(np.sum((given - given.mean(axis=0)) ** 2, axis=1)))))
