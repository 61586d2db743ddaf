"""Training samples from scene records: overlapping views, augmented, with the world at view 0.

A sample is S views of one scene, drawn so that they overlap (a window of the camera
trajectory, or the views that share most instances with an anchor view), cropped to an
aspect ratio and zoom drawn at random and resized to a multiple of 14 pixels, with colour
jitter. Cameras are re-expressed with the first sampled view as the world frame, as the
model's pose encoding expects, and the world points are the depth unprojected with those cameras.

Batches stack samples, so all samples of a batch need the same view count and image size:
`SameShapeBatchSampler` draws both per batch and hands the dataset `ViewRequest`s saying
which scene, how many views, what size and which random seed; `collate_views` stacks them.

Crops keep the principal point at (W/2, H/2) (the crop is centred on it), because the
model's cameras (field of view only) cannot express an off-centre principal point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from iggt.data.scene_format import (SceneRecord, list_scene_records, load_scene_record, read_scene_meta,
                                    relative_extrinsics)
from iggt.errors import IGGTError
from iggt.geometry import unproject_depth

PATCH = 14
VIEW_SELECTIONS = ("window", "covisible")


@dataclass(frozen=True)
class DatasetConfig:
    """How samples are drawn and augmented."""

    image_size: int = 224
    """Long side of the output images in pixels (a multiple of 14)."""
    aspect_range: tuple[float, float] = (0.5, 1.0)
    """Range of height / width of the output images (values above 1 give portrait images)."""
    zoom_range: tuple[float, float] = (1.0, 1.3)
    """The crop covers 1/zoom of the largest centred crop of the chosen aspect ratio."""
    view_selection: str = "window"
    """"window": consecutive views of the trajectory (stride up to ``max_stride``, either
    direction); "covisible": an anchor view and the views sharing most instances with it."""
    max_stride: int = 2
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03
    """Colour jitter strengths (factors drawn in [1 - x, 1 + x]; hue as a fraction of a turn)."""

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < PATCH or self.image_size % PATCH:
            problems.append(f"image_size must be a positive multiple of {PATCH}, got {self.image_size}")
        if not 0 < self.aspect_range[0] <= self.aspect_range[1]:
            problems.append(f"aspect_range must be (min, max) with 0 < min <= max, got {self.aspect_range}")
        if not 1.0 <= self.zoom_range[0] <= self.zoom_range[1]:
            problems.append(f"zoom_range must be (min, max) with 1 <= min <= max, got {self.zoom_range}")
        if self.view_selection not in VIEW_SELECTIONS:
            problems.append(f"view_selection must be one of {VIEW_SELECTIONS}, got {self.view_selection!r}")
        if self.max_stride < 1:
            problems.append(f"max_stride must be >= 1, got {self.max_stride}")
        if problems:
            raise IGGTError("Invalid DatasetConfig: " + "; ".join(problems))

    def output_size(self, aspect: float) -> tuple[int, int]:
        """(height, width), multiples of 14, long side ``image_size``, height / width close to ``aspect``."""
        short = max(PATCH, int(round(self.image_size * min(aspect, 1 / aspect) / PATCH)) * PATCH)
        return (short, self.image_size) if aspect <= 1 else (self.image_size, short)


class ViewRequest(NamedTuple):
    """What one sample should be: which scene, how many views, what size, which random draw."""

    scene_index: int
    num_views: int
    height: int
    width: int
    seed: int


class SceneDataset(Dataset):
    """Samples of overlapping, augmented views from the scene records under ``root``.

    Index it with a `ViewRequest` (what `SameShapeBatchSampler` yields: view count, size and
    augmentation vary per batch) or with a plain scene index: then ``views`` views at the
    record's own aspect ratio, augmented by a draw fixed by (``seed``, index), so plain
    indices work with the default collate of a `DataLoader`. ``views`` defaults to the
    fewest views any scene has.
    """

    def __init__(self, root: str | Path | Sequence[str | Path], config: DatasetConfig = DatasetConfig(),
                 seed: int = 0, views: int | None = None):
        self.paths = ([Path(p) for p in root] if isinstance(root, (list, tuple)) else list_scene_records(root))
        if not self.paths:
            raise FileNotFoundError(f"No scene records (folders with meta.json) under {root}")
        metas = [read_scene_meta(p) for p in self.paths]
        self.view_counts = [int(m["num_views"]) for m in metas]
        self.image_sizes = [tuple(m["image_size"]) for m in metas]
        views = self.min_views if views is None else views
        if not 1 <= views <= self.min_views:
            raise IGGTError(f"views={views} per sample, but the scenes under {root} have "
                             f"{self.min_views} views (the fewest); choose 1..{self.min_views}")
        self.config, self.seed, self.views = config, seed, views

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def min_views(self) -> int:
        """The most views every scene can provide."""
        return min(self.view_counts)

    def __getitem__(self, item: int | ViewRequest) -> dict:
        if not isinstance(item, ViewRequest):
            height, width = self.image_sizes[item]
            item = ViewRequest(int(item), self.views, *self.config.output_size(height / width), seed=int(item))
        if not 1 <= item.num_views <= self.view_counts[item.scene_index]:
            raise ValueError(f"{self.paths[item.scene_index]} has {self.view_counts[item.scene_index]} views, "
                             f"{item.num_views} were requested")
        rng = np.random.default_rng([self.seed, item.scene_index, item.seed])
        record = load_scene_record(self.paths[item.scene_index])
        views = select_views(record, item.num_views, self.config, rng)
        return make_sample(record, views, (item.height, item.width), self.config, rng)


def select_views(record: SceneRecord, count: int, config: DatasetConfig, rng: np.random.Generator) -> list[int]:
    """Indices of ``count`` overlapping views of ``record``, the reference view first."""
    total = record.num_views
    if config.view_selection == "window":
        stride = int(rng.integers(1, max(1, min(config.max_stride, (total - 1) // max(count - 1, 1))) + 1))
        start = int(rng.integers(0, total - (count - 1) * stride))
        views = list(range(start, start + (count - 1) * stride + 1, stride))
        return views[::-1] if rng.random() < 0.5 else views
    present = [set(np.unique(ids[ids > 0]).tolist()) for ids in record.instance_ids]
    anchor = int(rng.integers(total))

    def shared(view: int) -> float:
        union = present[anchor] | present[view]
        return len(present[anchor] & present[view]) / len(union) if union else 0.0

    others = sorted((v for v in range(total) if v != anchor), key=lambda v: (-shared(v), rng.random()))
    return [anchor] + others[:count - 1]


def make_sample(record: SceneRecord, views: list[int], size: tuple[int, int], config: DatasetConfig,
                rng: np.random.Generator) -> dict:
    """Crop, resize and jitter the chosen views; cameras and points relative to the first of them."""
    images, depths, ids, structures, intrinsics = [], [], [], [], []
    for view in views:
        zoom = rng.uniform(*config.zoom_range)
        source, k = crop_and_resize(record, view, size, zoom)
        images.append(color_jitter(source.pop("image"), config, rng))
        depths.append(source["depth"])
        ids.append(source["instance_ids"])
        structures.append(source["structure_ids"])
        intrinsics.append(k)
    extrinsics = relative_extrinsics(record.extrinsics[views])
    depth = np.stack(depths).astype(np.float32)
    intrinsics = np.stack(intrinsics).astype(np.float32)
    points = unproject_depth(depth, extrinsics, intrinsics)
    return {
        "images": torch.stack(images),
        "depth": torch.from_numpy(depth),
        "valid": torch.from_numpy(depth > 0),
        "extrinsics": torch.from_numpy(extrinsics),
        "intrinsics": torch.from_numpy(intrinsics),
        "instance_ids": torch.from_numpy(np.stack(ids).astype(np.int64)),
        "structure_ids": torch.from_numpy(np.stack(structures).astype(np.int64)),
        "world_points": torch.from_numpy(points),
        "view_indices": torch.tensor(views),
        "scene_name": record.name,
    }


def crop_and_resize(record: SceneRecord, view: int, size: tuple[int, int], zoom: float) -> tuple[dict, np.ndarray]:
    """One view cropped to the aspect ratio of ``size`` (centred on the principal point, 1/zoom
    of the largest such crop) and resized to ``size``; returns the arrays and the new intrinsics.

    Pixel centres sit at integer coordinates; output pixel u' samples the source at
    x = x0 + (u' + 0.5) / s - 0.5 (s = scale), so fx' = s fx and cx' = s (cx + 0.5 - x0) - 0.5;
    x0 is chosen so that cx' = W/2 exactly. Images are resampled bilinearly, depth, instance and
    structure ids take the nearest source pixel; where the crop leaves the source image (a
    principal point far from the centre), they are 0 (invalid, background). A record without a
    structure map gets structure ids 0 (no room surface known).
    """
    height, width = size
    source_h, source_w = record.image_size
    k = record.intrinsics[view].astype(np.float64)
    scale = max(width / source_w, height / source_h) * zoom  # the crop fits inside the source
    x0 = k[0, 2] + 0.5 - (width / 2 + 0.5) / scale
    y0 = k[1, 2] + 0.5 - (height / 2 + 0.5) / scale
    xs = x0 + (np.arange(width) + 0.5) / scale - 0.5
    ys = y0 + (np.arange(height) + 0.5) / scale - 0.5
    new_k = k.copy()
    new_k[:2, :2] *= scale
    new_k[0, 2] = scale * (k[0, 2] + 0.5 - x0) - 0.5
    new_k[1, 2] = scale * (k[1, 2] + 0.5 - y0) - 0.5

    cols = np.clip(np.rint(xs), 0, source_w - 1).astype(np.int64)
    rows = np.clip(np.rint(ys), 0, source_h - 1).astype(np.int64)
    grid = torch.stack(torch.meshgrid(torch.from_numpy((2 * ys + 1) / source_h - 1),
                                      torch.from_numpy((2 * xs + 1) / source_w - 1), indexing="ij")[::-1], dim=-1)
    image = torch.from_numpy(record.images[view]).permute(2, 0, 1).float()[None] / 255.0
    image = torch.nn.functional.grid_sample(image, grid[None].float(), mode="bilinear", padding_mode="border",
                                            align_corners=False)[0]
    inside = (((ys >= -0.5) & (ys <= source_h - 0.5))[:, None] & ((xs >= -0.5) & (xs <= source_w - 0.5))[None])
    structure_ids = (np.where(inside, record.structure[view][np.ix_(rows, cols)], 0) if record.structure is not None
                     else np.zeros(size, np.int32))
    return {"image": image, "depth": np.where(inside, record.depth[view][np.ix_(rows, cols)], 0),
            "instance_ids": np.where(inside, record.instance_ids[view][np.ix_(rows, cols)], 0),
            "structure_ids": structure_ids}, new_k


def color_jitter(image: torch.Tensor, config: DatasetConfig, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of a ``[3, H, W]`` image in [0, 1]."""
    def factor(strength: float) -> float:
        return float(rng.uniform(1 - strength, 1 + strength))

    luma_weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    image = image * factor(config.brightness)
    mean = (image * luma_weights).sum(0).mean()
    image = mean + (image - mean) * factor(config.contrast)
    gray = (image * luma_weights).sum(0, keepdim=True)
    image = gray + (image - gray) * factor(config.saturation)
    angle = 2 * math.pi * float(rng.uniform(-config.hue, config.hue))
    if angle:  # rotate the chroma plane of YIQ
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        c, s = math.cos(angle), math.sin(angle)
        rotate = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
        transform = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
        image = torch.einsum("ij,jhw->ihw", transform, image)
    return image.clamp(0, 1)


class SameShapeBatchSampler(Sampler[list[ViewRequest]]):
    """Batches of `ViewRequest`s that share a view count and an image size, so they stack.

    Each batch draws a view count in ``view_range`` (capped at what every scene has) and an
    aspect ratio; its size is ``images_per_batch // views`` samples (at least one), so the
    number of images per batch stays roughly constant. One epoch visits every scene once, in
    an order fixed by ``seed`` and the epoch (`set_epoch`). With ``endless=True`` iteration runs
    over epoch after epoch, starts at global batch ``start_batch`` and keeps every
    ``world_size``-th batch from ``rank`` on, so a resumed or distributed run sees the same data.
    """

    def __init__(self, dataset: SceneDataset, images_per_batch: int = 24, view_range: tuple[int, int] = (1, 8),
                 seed: int = 0, shuffle: bool = True, endless: bool = False, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1):
        low, high = view_range
        if not 1 <= low <= high:
            raise IGGTError(f"view_range must be (min, max) with 1 <= min <= max, got {view_range}")
        if low > dataset.min_views:
            raise IGGTError(f"view_range starts at {low} views but some scenes have only {dataset.min_views}")
        if not 0 <= rank < world_size:
            raise IGGTError(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.dataset, self.images_per_batch, self.seed, self.shuffle = dataset, images_per_batch, seed, shuffle
        self.view_range = (low, min(high, dataset.min_views))
        self.endless, self.start_batch, self.rank, self.world_size = endless, start_batch, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[list[ViewRequest]]:
        """The batches of one epoch (default: the current one), deterministic."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        order = rng.permutation(len(self.dataset)) if self.shuffle else np.arange(len(self.dataset))
        config = self.dataset.config
        batches, position = [], 0
        while position < len(order):
            views = int(rng.integers(self.view_range[0], self.view_range[1] + 1))
            height, width = config.output_size(float(rng.uniform(*config.aspect_range)))
            count = max(1, self.images_per_batch // views)
            batches.append([ViewRequest(int(i), views, height, width, int(rng.integers(2**31)))
                            for i in order[position:position + count]])
            position += count
        return batches

    def __iter__(self) -> Iterator[list[ViewRequest]]:
        if not self.endless:
            yield from self.batches()
            return
        index, epoch = 0, self.epoch
        while True:
            for batch in self.batches(epoch):
                if index >= self.start_batch and (index - self.start_batch) % self.world_size == self.rank:
                    yield batch
                index += 1
            epoch += 1

    def __len__(self) -> int:
        if self.endless:
            raise TypeError("an endless SameShapeBatchSampler has no length")
        return len(self.batches())


def collate_views(samples: list[dict]) -> dict:
    """Stack samples of equal view count and size into ``[B, S, ...]`` tensors (names as a list)."""
    shapes = {tuple(s["images"].shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"cannot stack samples of different view counts or sizes: {sorted(shapes)}; "
                         f"use SameShapeBatchSampler")
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if key != "scene_name"}
    batch["scene_name"] = [s["scene_name"] for s in samples]
    return batch
