"""On-disk format of a scene with ground truth ("scene record"), shared by training, evaluation and examples.

A scene record is one folder::

    <scene>/
      meta.json           format, name, views, image size, objects, categories, free metadata
      cameras.json        per-view pinhole intrinsics and OpenCV world-to-camera extrinsics
      images/000.png      8-bit RGB, one per view (000, 001, ...)
      depth/000.png       16-bit grey, depth along the camera z axis in millimetres; 0 = no surface
      instances/000.png   16-bit grey, object id per pixel; 0 = background (floor, walls, nothing)
      semantic/000.png    optional, 16-bit grey, category index per pixel (1-based into
                          ``meta.json["categories"]``); 0 = background
      structure/000.png   optional, 16-bit grey, room surface per pixel (`STRUCTURE_IDS`: floor,
                          each wall, ceiling); 0 = not part of the room (an object, the sky)

``meta.json``::

    {"format": "iggt-scene-record", "format_version": 1, "name": "scene_00042",
     "num_views": 8, "image_size": [224, 224],           # height, width of every view
     "depth_unit_m": 0.001,                              # metres per depth-PNG unit
     "categories": ["cube", "sphere", ...],              # names of semantic indices 1, 2, ...
     "objects": [{"id": 1, "category": "cube", "color_name": "red", "color_rgb": [200, 30, 30],
                  "center": [x, y, z], "size": [sx, sy, sz]}, ...],   # world frame, metres
     "meta": {...}}                                      # free: generator seed and config, trajectory, ...

``cameras.json``: ``{"intrinsics": [S][3][3], "extrinsics": [S][3][4]}``. Extrinsics map world
points to the camera (x right, y down, z forward); the world frame is the record's own (e.g. the
room), not necessarily the first camera (`relative_extrinsics` moves it there). Pixel (u, v)
is taken at integer coordinates, as in `iggt.geometry.unproject_depth`.

Why PNG: 16-bit PNG depth and ids compress losslessly and well (a 6-view 224 px scene takes a
few hundred kB), and every image tool can open them. Depth is quantised to 1 mm (range up to
65.5 m): a record whose depth is already on the millimetre grid (`quantize_depth`; the
generator's are) round-trips exactly, any other depth comes back rounded to the millimetre.
Everything else round-trips exactly.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from iggt.errors import IGGTError
from iggt.scene import ViewStack

FORMAT_NAME = "iggt-scene-record"
FORMAT_VERSION = 1
DEPTH_UNIT_M = 0.001
MAX_DEPTH_M = 65535 * DEPTH_UNIT_M
STRUCTURE_IDS = {"floor": 1, "wall -x": 2, "wall +x": 3, "wall -y": 4, "wall +y": 5, "ceiling": 6}
"""Values of a structure map: the room's surfaces, each its own id (a wall is named by the side of
the room it closes, in the record's world frame), so training can tell floor and walls apart
from each other and from the objects."""
OPTIONAL_LABEL_MAPS = ("semantic", "structure")
"""`SceneRecord` fields stored as 16-bit label PNGs in a sub-folder of the same name, when present."""


def quantize_depth(depth_m: np.ndarray) -> np.ndarray:
    """Depth in metres rounded to what the depth PNG stores, so a save/load round trip is exact."""
    return (np.rint(np.asarray(depth_m, np.float64) / DEPTH_UNIT_M) * DEPTH_UNIT_M).astype(np.float32)


def relative_extrinsics(extrinsics: np.ndarray) -> np.ndarray:
    """World-to-camera ``[S, 3, 4]`` re-expressed with the first camera as the world frame."""
    extrinsics = np.asarray(extrinsics, np.float64)
    homogeneous = np.zeros((len(extrinsics), 4, 4))
    homogeneous[:, :3], homogeneous[:, 3, 3] = extrinsics, 1.0
    return (homogeneous @ np.linalg.inv(homogeneous[0]))[:, :3].astype(np.float32)


def semantic_index(categories: Sequence[str], name: str) -> int:
    """What a semantic map stores for category ``name``: its 1-based index in ``categories`` (0 = background)."""
    return list(categories).index(name) + 1


class SceneRecordError(IGGTError):
    """A scene folder that does not follow the format; the message names the first problem."""


@dataclass
class ObjectInfo:
    """One object of a record, in the record's world frame (metres)."""

    id: int
    category: str
    color_name: str
    color_rgb: tuple[int, int, int]
    center: tuple[float, float, float]
    """Centre of the object's axis-aligned bounding box."""
    size: tuple[float, float, float]
    """Extent of the axis-aligned bounding box."""

    @property
    def name(self) -> str:
        """What a person would call it, e.g. "red cube"."""
        return f"{self.color_name} {self.category}"

    @classmethod
    def from_json(cls, d: dict) -> "ObjectInfo":
        return cls(id=int(d["id"]), category=str(d["category"]), color_name=str(d["color_name"]),
                   color_rgb=tuple(int(c) for c in d["color_rgb"]),
                   center=tuple(float(c) for c in d["center"]), size=tuple(float(c) for c in d["size"]))


@dataclass
class SceneRecord(ViewStack):
    """Views of one scene with exact cameras, depth and instance ids."""

    name: str
    images: np.ndarray
    """``[S, H, W, 3]`` uint8 RGB."""
    depth: np.ndarray
    """``[S, H, W]`` float32 depth along the camera z axis in metres; 0 = no surface."""
    extrinsics: np.ndarray
    """``[S, 3, 4]`` float32 OpenCV world-to-camera."""
    intrinsics: np.ndarray
    """``[S, 3, 3]`` float32 pinhole intrinsics."""
    instance_ids: np.ndarray
    """``[S, H, W]`` int32; 0 = background, 1..K objects, the same id in every view."""
    semantic: np.ndarray | None = None
    """``[S, H, W]`` int32 category index (1-based into ``categories``), 0 = background."""
    structure: np.ndarray | None = None
    """``[S, H, W]`` int32 room surface (`STRUCTURE_IDS`), 0 = not part of the room."""
    objects: list[ObjectInfo] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    """Names of the semantic indices 1, 2, ... (index 0 is background)."""

    def object(self, object_id: int) -> ObjectInfo:
        """The object with this id (as in ``instance_ids``)."""
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(f"{self.name} has no object with id {object_id}")


# -- writing -------------------------------------------------------------------------------

def _view_file(index: int) -> str:
    return f"{index:03d}.png"


def save_scene_record(record: SceneRecord, directory: str | Path) -> Path:
    """Write ``record`` as a scene folder (created if needed, files overwritten) and return it."""
    directory = Path(directory)
    _check_arrays(record, directory.name)
    label_maps = [name for name in OPTIONAL_LABEL_MAPS if getattr(record, name) is not None]
    for sub in ("images", "depth", "instances", *label_maps):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    depth_units = np.rint(np.asarray(record.depth, np.float64) / DEPTH_UNIT_M)
    for i in range(record.num_views):
        Image.fromarray(np.ascontiguousarray(record.images[i], dtype=np.uint8)).save(
            directory / "images" / _view_file(i))
        _save_uint16(depth_units[i], directory / "depth" / _view_file(i))
        _save_uint16(record.instance_ids[i], directory / "instances" / _view_file(i))
        for name in label_maps:
            _save_uint16(getattr(record, name)[i], directory / name / _view_file(i))
    cameras = {"intrinsics": np.asarray(record.intrinsics, np.float64).tolist(),
               "extrinsics": np.asarray(record.extrinsics, np.float64).tolist()}
    (directory / "cameras.json").write_text(json.dumps(cameras))
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": record.name,
        "num_views": record.num_views, "image_size": list(record.image_size), "depth_unit_m": DEPTH_UNIT_M,
        "categories": list(record.categories), "objects": [asdict(o) for o in record.objects],
        "meta": record.meta,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    return directory


def _save_uint16(values: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint16)).save(path)


def _check_arrays(record: SceneRecord, where: str) -> None:
    """Refuse to write a record that could not be read back unchanged."""
    views, height, width = record.instance_ids.shape if record.instance_ids.ndim == 3 else (-1, -1, -1)
    expected = {"images": (views, height, width, 3), "depth": (views, height, width),
                "instance_ids": (views, height, width), "extrinsics": (views, 3, 4), "intrinsics": (views, 3, 3)}
    for name in OPTIONAL_LABEL_MAPS:
        if getattr(record, name) is not None:
            expected[name] = (views, height, width)
    for name, shape in expected.items():
        actual = np.shape(getattr(record, name))
        if actual != shape:
            raise SceneRecordError(f"{where}: {name} has shape {actual}, expected {shape}")
    depth = np.asarray(record.depth)
    if not np.all(np.isfinite(depth)) or depth.min(initial=0) < 0 or depth.max(initial=0) > MAX_DEPTH_M:
        raise SceneRecordError(f"{where}: depth must be finite and within [0, {MAX_DEPTH_M}] m")
    for name in ("instance_ids", *OPTIONAL_LABEL_MAPS):
        values = getattr(record, name)
        if values is not None and (values.min(initial=0) < 0 or values.max(initial=0) > 65535):
            raise SceneRecordError(f"{where}: {name} must lie in 0..65535")


# -- reading -------------------------------------------------------------------------------

def list_scene_records(root: str | Path) -> list[Path]:
    """Scene folders (those holding a ``meta.json``) under ``root``, sorted; ``root`` itself may be one."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Scene folder not found: {root}")
    if (root / "meta.json").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("meta.json"))


def read_scene_meta(directory: str | Path) -> dict:
    """The validated ``meta.json`` of a scene folder, without reading any image (cheap)."""
    directory = Path(directory)
    path = directory / "meta.json"
    if not path.is_file():
        raise SceneRecordError(f"{directory}: missing meta.json (not a scene record folder)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SceneRecordError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SceneRecordError(f"{path}: not a scene record (\"format\" should be \"{FORMAT_NAME}\")")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SceneRecordError(f"{path}: unsupported format_version {meta.get('format_version')!r}, "
                               f"this code reads version {FORMAT_VERSION}")
    for key in ("name", "num_views", "image_size", "objects"):
        if key not in meta:
            raise SceneRecordError(f"{path}: missing key \"{key}\"")
    size = meta["image_size"]
    if not (isinstance(meta["num_views"], int) and meta["num_views"] > 0):
        raise SceneRecordError(f"{path}: num_views must be a positive integer, got {meta['num_views']!r}")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise SceneRecordError(f"{path}: image_size must be [height, width], got {size!r}")
    return meta


def load_scene_record(directory: str | Path) -> SceneRecord:
    """Read and validate a scene folder; a `SceneRecordError` names the first problem and its file."""
    directory = Path(directory)
    meta = read_scene_meta(directory)
    views, (height, width) = meta["num_views"], meta["image_size"]
    try:
        objects = [ObjectInfo.from_json(o) for o in meta["objects"]]
    except (KeyError, TypeError, ValueError) as err:
        raise SceneRecordError(f"{directory / 'meta.json'}: malformed object entry ({err!r})") from None
    object_ids = [o.id for o in objects]
    if len(set(object_ids)) != len(object_ids) or any(i < 1 or i > 65535 for i in object_ids):
        raise SceneRecordError(f"{directory / 'meta.json'}: object ids must be distinct integers in 1..65535, "
                               f"got {object_ids}")
    intrinsics, extrinsics = _read_cameras(directory / "cameras.json", views)

    def read_all(sub: str, kind: str) -> np.ndarray:
        files = sorted((directory / sub).glob("*.png"))
        if len(files) != views:
            raise SceneRecordError(f"{directory / sub}: found {len(files)} PNG files, meta.json says {views} views")
        return np.stack([_read_png(directory / sub / _view_file(i), kind, (height, width)) for i in range(views)])

    images = read_all("images", "rgb")
    depth_unit = float(meta.get("depth_unit_m", DEPTH_UNIT_M))
    depth = (read_all("depth", "uint16") * depth_unit).astype(np.float32)
    instance_ids = read_all("instances", "uint16").astype(np.int32)
    label_maps = {name: read_all(name, "uint16").astype(np.int32) if (directory / name).is_dir() else None
                  for name in OPTIONAL_LABEL_MAPS}

    unknown = sorted(set(np.unique(instance_ids).tolist()) - set(object_ids) - {0})
    if unknown:
        raise SceneRecordError(f"{directory / 'instances'}: ids {unknown[:5]} are not listed in meta.json objects")
    return SceneRecord(name=str(meta["name"]), images=images, depth=depth,
                       extrinsics=extrinsics, intrinsics=intrinsics, instance_ids=instance_ids, **label_maps,
                       objects=objects, categories=list(meta.get("categories", [])), meta=meta.get("meta", {}))


def _read_cameras(path: Path, views: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise SceneRecordError(f"{path.parent}: missing cameras.json")
    try:
        cameras = json.loads(path.read_text())
        intrinsics = np.asarray(cameras["intrinsics"], dtype=np.float64)
        extrinsics = np.asarray(cameras["extrinsics"], dtype=np.float64)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise SceneRecordError(f"{path}: needs numeric \"intrinsics\" [S,3,3] and \"extrinsics\" [S,3,4] ({err!r})") from None
    if intrinsics.shape != (views, 3, 3) or extrinsics.shape != (views, 3, 4):
        raise SceneRecordError(f"{path}: intrinsics {intrinsics.shape} / extrinsics {extrinsics.shape}, "
                               f"expected ({views}, 3, 3) / ({views}, 3, 4)")
    for i in range(views):
        k, rotation = intrinsics[i], extrinsics[i, :, :3]
        if not (np.all(np.isfinite(k)) and np.all(np.isfinite(extrinsics[i]))):
            raise SceneRecordError(f"{path}: camera {i} has non-finite values")
        if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]) or k[1, 0] != 0 or k[2, 0] != 0:
            raise SceneRecordError(f"{path}: intrinsics of camera {i} are not a pinhole matrix "
                                   f"[[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0")
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
            raise SceneRecordError(f"{path}: extrinsics of camera {i} do not start with a rotation matrix")
    return intrinsics.astype(np.float32), extrinsics.astype(np.float32)


def _read_png(path: Path, kind: str, size: tuple[int, int]) -> np.ndarray:
    """One view image: "rgb" (8-bit RGB) or "uint16" (single-channel integer PNG)."""
    if not path.is_file():
        raise SceneRecordError(f"missing file {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if kind == "rgb":
                array = np.asarray(image.convert("RGB"), dtype=np.uint8) if mode in ("RGB", "RGBA", "L", "P") else None
            else:
                array = np.asarray(image).astype(np.int64) if mode in ("I;16", "I;16B", "I", "L") else None
    except OSError as err:
        raise SceneRecordError(f"{path}: not a readable PNG ({err})") from None
    if array is None:
        expected = "8-bit RGB" if kind == "rgb" else "single-channel integer (16-bit grey)"
        raise SceneRecordError(f"{path}: PNG mode {mode} is not {expected}")
    if array.shape[:2] != tuple(size):
        raise SceneRecordError(f"{path}: image is {array.shape[0]}x{array.shape[1]} (HxW), "
                               f"meta.json says {size[0]}x{size[1]}")
    if kind == "uint16" and (array.min() < 0 or array.max() > 65535):
        raise SceneRecordError(f"{path}: values outside 0..65535")
    return array
