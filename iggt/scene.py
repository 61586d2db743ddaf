"""The reconstructed scene: the one object that exports, grounding, evaluation and the app consume.

A `Scene` holds plain numpy arrays (no torch), so everything downstream of the model
can be used, saved and tested without the network. Conventions:

* views are indexed 0..S-1; view 0 is the reference view and its camera is the world frame;
* cameras are OpenCV world-to-camera extrinsics ``[R | t]`` (x right, y down, z forward)
  and pinhole intrinsics, both for the preprocessed (model input) image size;
* every per-pixel array is ``[S, H, W, ...]`` at the model input resolution;
* instance labels are ``BACKGROUND`` (-1) or 0..K-1; files (scene records, mask PNGs) store
  one-based ids instead, 0 = background: `one_based_ids` and `labels_from_one_based` convert.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from iggt.errors import IGGTError

SCENE_FORMAT_VERSION = 1
BACKGROUND = -1
"""Label of pixels that belong to no instance (low confidence, background, unassigned)."""


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
    """``[S, H, W, 3]`` float32 RGB in [0, 1]: the preprocessed model input."""
    extrinsics: np.ndarray
    """``[S, 3, 4]`` float32 OpenCV world-to-camera; world = first camera."""
    intrinsics: np.ndarray
    """``[S, 3, 3]`` float32 pinhole intrinsics for the model input size."""
    depth: np.ndarray
    """``[S, H, W]`` float32 depth along the camera z axis."""
    depth_conf: np.ndarray
    """``[S, H, W]`` float32 confidence (>= 1) of the depth."""
    world_points: np.ndarray
    """``[S, H, W, 3]`` float32 points from the point head (world frame)."""
    world_points_conf: np.ndarray
    """``[S, H, W]`` float32 confidence (>= 1) of the point head."""
    points_from_depth: np.ndarray
    """``[S, H, W, 3]`` float32 depth unprojected with the predicted cameras (world frame)."""
    features: np.ndarray
    """``[S, H, W, D]`` float32 instance features, L2-normalised over D (8 for IGGT)."""
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
        """Write the scene to one ``.npz`` file (arrays lossless, metadata as JSON inside)."""
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
            arrays["instance_labels"] = self.instances.labels.astype(np.int32)
            meta["instances"] = [i.to_json() for i in self.instances.info]
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Scene":
        """Read a scene written by `save`; a wrong or damaged file gets a clear error."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"Scene file not found: {path.name}") from None
        except (OSError, ValueError, zipfile.BadZipFile) as err:
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
