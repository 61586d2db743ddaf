"""The reconstructed scene: the one object that exports, grounding, evaluation and the app consume.

A `Scene` holds plain numpy arrays (no torch), so everything downstream of the model
can be used, saved and tested without the network. Conventions:

* views are indexed 0..S-1; view 0 is the reference view and its camera is the world frame;
* cameras are OpenCV world-to-camera extrinsics ``[R | t]`` (x right, y down, z forward)
  and pinhole intrinsics, both for the preprocessed (model input) image size;
* every per-pixel array is ``[S, H, W, ...]`` at the model input resolution; images, confidences
  and features may be float32 (as the model gives them) or compact (`COMPACT_DTYPES`: what
  `Scene.compact` makes and `scene.npz` stores), so readers go through `rgb_float` / `rgb_uint8`
  or cast the views they need, a few at a time (`view_chunks`);
* instance labels are ``BACKGROUND`` (-1) or 0..K-1; files (scene records, mask PNGs) store
  one-based ids instead, 0 = background: `one_based_ids` and `labels_from_one_based` convert.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from iggt.errors import IGGTError

SCENE_FORMAT_VERSION = 1
BACKGROUND = -1
"""Label of pixels that belong to no instance (low confidence, background, unassigned)."""
COMPACT_DTYPES: dict[str, type] = {"images": np.uint8, "depth_conf": np.float16,
                                   "world_points_conf": np.float16, "features": np.float16}
"""The dtypes of a compact `Scene` and of ``scene.npz``, where precision allows: images are
8-bit photos to begin with; features are unit vectors whose clustering tolerances (0.005 and up)
are far above float16's 0.001; confidences only rank pixels (percentiles), so float16 with
values clipped to its largest (65504) ranks them the same up to ties. Geometry (depth, points,
cameras) stays float32: float16 would band the points of a large scene by 1/1000 of their distance."""
CHUNK_VIEWS = 16
"""Views converted, written or read at a time by chunked code: bounds the temporary copies
(16 views of 224 x 224 x 8 float32 features are 26 MB)."""
MEMORY_MAP_BYTES = 1 << 20
"""Stored arrays at least this big are memory-mapped by `Scene.load`; smaller ones are read."""


def view_chunks(count: int, size: int = CHUNK_VIEWS) -> Iterator[slice]:
    """Slices of at most ``size`` consecutive views covering ``count`` views."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def rgb_float(images: np.ndarray) -> np.ndarray:
    """Images, uint8 or float -> float32 RGB in [0, 1] (pass a few views, not all: this copies)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    return np.clip(images, 0, 1).astype(np.float32, copy=False)


def rgb_uint8(images: np.ndarray) -> np.ndarray:
    """Images, uint8 or float in [0, 1] -> uint8 RGB (uint8 images are returned as they are)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def _to_dtype(name: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One chunk of the array ``name`` in ``dtype`` (images through `rgb_uint8`, float16 clipped to its range)."""
    if values.dtype == dtype:
        return values
    if name == "images" and dtype == np.uint8:
        return rgb_uint8(values)
    if dtype == np.float16:
        largest = np.finfo(np.float16).max
        return np.clip(values, -largest, largest).astype(np.float16)
    return values.astype(dtype)


def compact_array(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` (the `Scene` field ``name``) in its `COMPACT_DTYPES` dtype, converted a chunk of
    views at a time; arrays without a compact dtype, or already in it, are returned as they are."""
    dtype = np.dtype(COMPACT_DTYPES.get(name, array.dtype))
    if array.dtype == dtype:
        return array
    compact = np.empty(array.shape, dtype)
    for chunk in view_chunks(len(array)):
        compact[chunk] = _to_dtype(name, array[chunk], dtype)
    return compact


def one_based_ids(labels: np.ndarray) -> np.ndarray:
    """Labels (``BACKGROUND`` or 0..K-1) -> ids 0 (background) or 1..K, as files store them."""
    labels = np.asarray(labels)
    return np.where(labels >= 0, labels + 1, 0)


def labels_from_one_based(ids: np.ndarray) -> np.ndarray:
    """Ids 0 (background) or 1..K, as files store them -> labels (``BACKGROUND`` or 0..K-1)."""
    ids = np.asarray(ids)
    return np.where(ids > 0, ids - 1, BACKGROUND)


@dataclass(frozen=True)
class ViewTransform:
    """How one preprocessed view maps back to the pixels of the original photo.

    The original image (``original_size``) was resized to ``resized_size`` and then placed
    in the model input with its top-left corner at ``offset`` (negative = cropped away,
    positive = padded). Sizes are ``(height, width)``.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    def to_original(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-input pixel coordinates -> original-image pixel coordinates (float)."""
        sy = self.original_size[0] / self.resized_size[0]
        sx = self.original_size[1] / self.resized_size[1]
        return (np.asarray(y, float) - self.offset[0]) * sy, (np.asarray(x, float) - self.offset[1]) * sx

    def from_original(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Original-image pixel coordinates -> model-input pixel coordinates (float)."""
        sy = self.resized_size[0] / self.original_size[0]
        sx = self.resized_size[1] / self.original_size[1]
        return np.asarray(y, float) * sy + self.offset[0], np.asarray(x, float) * sx + self.offset[1]


def nearest_pixels(mapping, size: tuple[int, int],
                   source_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``source_size`` pixel under each pixel centre of a ``size`` grid, through ``mapping``
    (a `ViewTransform`'s ``to_original`` or ``from_original``): rows and columns ``[H, W]``
    (clipped into the source) and whether that source pixel exists (nearest-neighbour resampling
    in either direction between a record and a model input)."""
    y, x = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5, indexing="ij")
    rows, cols = (np.floor(v).astype(np.int64) for v in mapping(y, x))
    inside = (rows >= 0) & (rows < source_size[0]) & (cols >= 0) & (cols < source_size[1])
    return np.clip(rows, 0, source_size[0] - 1), np.clip(cols, 0, source_size[1] - 1), inside


@dataclass
class ViewPresence:
    """Where one instance is seen in one view."""

    pixel_count: int
    bbox: tuple[int, int, int, int]
    """(x0, y0, x1, y1), inclusive-exclusive, in model-input pixels."""


@dataclass
class InstanceInfo:
    """Statistics of one instance over all views."""

    id: int
    color: tuple[int, int, int]
    """Display colour (uint8 RGB), the same in every view and in 3D."""
    pixel_count: int
    views: dict[int, ViewPresence]
    centroid: tuple[float, float, float]
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]
    mean_color: tuple[float, float, float]
    """Mean RGB of its pixels in [0, 1]."""
    name: str | None = None
    """Open-vocabulary name, filled in by the grounding when known."""
    structure: bool = False
    """Floor, wall, ceiling or another large plane rather than an object (`iggt.structure`);
    scene files written before this flag existed load with False."""
    label: str | None = None
    """Open-vocabulary label from an image-text embedding model (`grounding.openvocab`); structure
    instances get "floor", "wall" or "ceiling". Files written before labels existed load with None."""
    label_score: float | None = None
    """Calibrated probability of ``label`` (softmax over the vocabulary), 1.0 for structure."""

    @property
    def display_name(self) -> str | None:
        """What to call the instance: the VLM's name when one was asked, else the label."""
        return self.name or self.label

    @property
    def size(self) -> tuple[float, float, float]:
        return tuple(float(b - a) for a, b in zip(self.bbox_min, self.bbox_max))

    def to_json(self) -> dict:
        d = asdict(self)
        d["views"] = {str(k): asdict(v) for k, v in self.views.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "InstanceInfo":
        d = dict(d)
        d["views"] = {int(k): ViewPresence(v["pixel_count"], tuple(v["bbox"])) for k, v in d["views"].items()}
        for key in ("color", "centroid", "bbox_min", "bbox_max", "mean_color"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Instances:
    """Multi-view consistent instance labels and their statistics.

    ``labels[s, y, x]`` is an instance id in ``0..K-1`` (0 = the largest instance) or
    ``BACKGROUND`` (-1). ``info[k].id == k``.
    """

    labels: np.ndarray
    info: list[InstanceInfo]

    @property
    def count(self) -> int:
        return len(self.info)

    @property
    def colors(self) -> np.ndarray:
        """``[K, 3]`` uint8 display colours, indexed by instance id."""
        return np.array([i.color for i in self.info], dtype=np.uint8).reshape(-1, 3)

    @property
    def label_names(self) -> list[str | None]:
        """Open-vocabulary label of every instance (None where not labelled)."""
        return [i.label for i in self.info]

    def with_labels(self, labels: dict[int, tuple[str, float]]) -> "Instances":
        """A copy whose instances carry these (label, score) pairs, by instance id; others keep theirs."""
        info = [replace(i, label=labels[i.id][0], label_score=float(labels[i.id][1])) if i.id in labels else i
                for i in self.info]
        return Instances(self.labels, info)

    def mask(self, instance_id: int) -> np.ndarray:
        """``[S, H, W]`` boolean mask of one instance in every view."""
        return self.labels == instance_id

    @property
    def object_ids(self) -> list[int]:
        """Ids of the instances that are objects, not structure."""
        return [i.id for i in self.info if not i.structure]

    def color_image(self, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """``[S, H, W, 3]`` uint8 picture of the labels in their display colours."""
        palette = np.vstack([self.colors, np.array(background, np.uint8)[None]])
        return palette[np.where(self.labels >= 0, self.labels, len(self.info))]


class ViewStack:
    """Shape helpers of anything that holds ``images`` ``[S, H, W, 3]`` (a `Scene`, a scene record)."""

    images: np.ndarray

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])


@dataclass
class Scene(ViewStack):
    """Cameras, dense geometry, instance features and (after clustering) instances of S views."""

    images: np.ndarray
    """``[S, H, W, 3]`` RGB, float32 in [0, 1] or uint8 (compact): the preprocessed model input."""
    extrinsics: np.ndarray
    """``[S, 3, 4]`` float32 OpenCV world-to-camera; world = first camera."""
    intrinsics: np.ndarray
    """``[S, 3, 3]`` float32 pinhole intrinsics for the model input size."""
    depth: np.ndarray
    """``[S, H, W]`` float32 depth along the camera z axis."""
    depth_conf: np.ndarray
    """``[S, H, W]`` float32 or float16 (compact) confidence (>= 1) of the depth."""
    world_points: np.ndarray
    """``[S, H, W, 3]`` float32 points from the point head (world frame)."""
    world_points_conf: np.ndarray
    """``[S, H, W]`` float32 or float16 (compact) confidence (>= 1) of the point head."""
    points_from_depth: np.ndarray
    """``[S, H, W, 3]`` float32 depth unprojected with the predicted cameras (world frame)."""
    features: np.ndarray
    """``[S, H, W, D]`` float32 or float16 (compact) instance features, L2-normalised over D (8 for IGGT)."""
    view_names: list[str] = field(default_factory=list)
    view_transforms: list[ViewTransform] = field(default_factory=list)
    model_name: str = ""
    instances: Instances | None = None
    units: str = "model units"
    """What one unit of length is: "model units" (arbitrary) unless a known length set the scale
    ("m", `iggt.sfm.scale`) or known poses brought their own; every size shown is in these units."""

    def with_instances(self, instances: Instances | None) -> "Scene":
        """A copy that shares the arrays but carries other instances."""
        copy = Scene(**{f.name: getattr(self, f.name) for f in fields(self)})
        copy.instances = instances
        return copy

    def compact(self) -> "Scene":
        """A copy with images, confidences and features in `COMPACT_DTYPES` (about a third less memory
        than float32), converted a few views at a time; arrays already compact are shared."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({name: compact_array(name, np.asarray(values[name])) for name in COMPACT_DTYPES})
        return Scene(**values)

    def select_views(self, views: list[int]) -> "Scene":
        """A scene of only ``views`` (in that order), without instances (their statistics span all views).

        The world frame stays the one of this scene (its first camera), even if view 0 is left out.
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({name: np.asarray(getattr(self, name))[list(views)] for name in self._ARRAYS})
        values["view_names"] = [self.view_names[v] for v in views] if self.view_names else []
        values["view_transforms"] = [self.view_transforms[v] for v in views] if self.view_transforms else []
        values["instances"] = None
        return Scene(**values)

    # -- persistence ---------------------------------------------------------------------
    _ARRAYS = ("images", "extrinsics", "intrinsics", "depth", "depth_conf", "world_points",
               "world_points_conf", "points_from_depth", "features")

    def save(self, path: str | Path) -> Path:
        """Write the scene to one ``.npz`` file: images, confidences and features in
        `COMPACT_DTYPES`, the rest as they are, metadata as JSON inside.

        The members are stored uncompressed (floats hardly compress) and written a chunk of
        views at a time, so saving needs no copy of the scene and `load` can memory-map them.
        The file is written beside ``path`` and then moved over it, so a scene memory-mapped
        from ``path`` stays readable while it is overwritten.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
        meta = {
            "format_version": SCENE_FORMAT_VERSION,
            "view_names": list(self.view_names),
            "view_transforms": [asdict(t) for t in self.view_transforms],
            "model_name": self.model_name,
            "units": self.units,
            "instances": None,
        }
        if self.instances is not None:
            arrays["instance_labels"] = np.asarray(self.instances.labels)
            meta["instances"] = [i.to_json() for i in self.instances.info]
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        dtypes = {**{name: array.dtype for name, array in arrays.items()}, **COMPACT_DTYPES,
                  "instance_labels": np.int32}
        partial = path.with_name(path.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                _write_member(archive, name, array, np.dtype(dtypes[name]))
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | Path, memory_map: bool = True) -> "Scene":
        """Read a scene written by `save` (or by earlier versions); a wrong or damaged file gets a clear error.

        With ``memory_map``, the large arrays of a file written by this version are mapped from
        the file rather than read (copy-on-write: changing them in memory never changes the
        file), so loading takes no memory until views are used; files of earlier versions
        (compressed, float32) are read whole, as they were. Nothing is unpickled.
        """
        path = Path(path)
        try:
            arrays = _read_npz(path, memory_map)
        except FileNotFoundError:
            raise FileNotFoundError(f"Scene file not found: {path.name}") from None
        except (OSError, ValueError, zipfile.BadZipFile, struct.error) as err:
            raise IGGTError(f"{path.name} is not a readable scene file ({err})") from None
        missing = [n for n in (*cls._ARRAYS, "meta_json") if n not in arrays]
        if missing:
            raise IGGTError(f"{path.name} is not a scene file: missing {', '.join(missing)}")
        meta = json.loads(arrays.pop("meta_json").tobytes().decode("utf-8"))
        if meta.get("format_version") != SCENE_FORMAT_VERSION:
            raise IGGTError(f"{path.name}: unsupported scene format version {meta.get('format_version')}")
        instances = None
        if meta["instances"] is not None:
            instances = Instances(arrays.pop("instance_labels"),
                                  [InstanceInfo.from_json(d) for d in meta["instances"]])
        transforms = [ViewTransform(tuple(t["original_size"]), tuple(t["resized_size"]), tuple(t["offset"]))
                      for t in meta["view_transforms"]]
        return cls(**{n: arrays[n] for n in cls._ARRAYS}, view_names=meta["view_names"],
                   view_transforms=transforms, model_name=meta["model_name"], instances=instances,
                   units=meta.get("units", "model units"))


# -- the npz container -------------------------------------------------------------------
_ZIP_LOCAL_HEADER = 30
"""Bytes of a zip member's local header before its file name and extra field."""
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray, dtype: np.dtype) -> None:
    """``array`` as ``name.npy`` in ``dtype``, written a chunk of views at a time (no whole copy)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": array.shape}
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_2_0(member, header)
        for chunk in view_chunks(len(array)) if array.ndim >= 3 else [slice(None)]:  # per-pixel: by views
            member.write(np.ascontiguousarray(_to_dtype(name, array[chunk], dtype)).tobytes())


def _read_npz(path: Path, memory_map: bool) -> dict[str, np.ndarray]:
    """Every ``.npy`` member of an npz file by name: uncompressed ones of at least
    `MEMORY_MAP_BYTES` memory-mapped (when ``memory_map``), all others read; never unpickled."""
    arrays = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if memory_map and info.compress_type == zipfile.ZIP_STORED and info.file_size >= MEMORY_MAP_BYTES:
                arrays[name] = _map_member(path, raw, info)
            else:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _map_member(path: Path, raw, info: zipfile.ZipInfo) -> np.ndarray:
    """The array of one uncompressed member, mapped copy-on-write from the file at its offset:
    past the member's local zip header (its own name and extra lengths) and the npy header."""
    raw.seek(info.header_offset)
    local = raw.read(_ZIP_LOCAL_HEADER)
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"damaged member {info.filename}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    raw.seek(info.header_offset + _ZIP_LOCAL_HEADER + name_length + extra_length)
    version = np.lib.format.read_magic(raw)
    if version not in _HEADER_READERS:
        raise ValueError(f"{info.filename}: unsupported npy version {version}")
    shape, fortran_order, dtype = _HEADER_READERS[version](raw)
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects, which are not loaded")
    return np.memmap(path, dtype=dtype, mode="c", offset=raw.tell(), shape=shape,
                     order="F" if fortran_order else "C")
