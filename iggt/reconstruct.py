"""Photos in, `Scene` out: runs an IGGT model on the right device and precision.

`Reconstructor` owns the model and the preprocessing choices; calling it with paths, PIL
images or a ready tensor loads and preprocesses the views, runs the network once under
inference mode and converts every prediction to the numpy arrays of a `Scene` (cameras,
depth, confidences, point-head points, depth unprojected with the predicted cameras, and
L2-normalised instance features). Instances are not computed here (see `iggt.instances`).
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iggt.config import PRESETS, IGGTConfig
from iggt.errors import IGGTError
from iggt.geometry import unproject_depth
from iggt.model.iggt import IGGT, Predictions
from iggt.progress import Progress
from iggt.scene import Scene, ViewTransform
from iggt.views import DEFAULT_MAX_VIEWS, Background, LoadedView, Mode, load_views, preprocess

ViewsInput = str | Path | Image.Image | Sequence[str | Path | Image.Image] | Sequence[LoadedView] | torch.Tensor
"""Paths (photos, folders, videos), PIL images, views already loaded, or a ready ``[S, 3, H, W]`` tensor."""

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "iggt-small"
"""The small model shipped inside the package (package data, so `pip install` carries it)."""
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` = the first CUDA GPU when there is one, else the CPU; a missing GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise IGGTError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise IGGTError(f"device {device!r} was requested but no CUDA GPU is available; use cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Precision of the aggregator: ``auto`` = bf16 on GPUs with compute capability >= 8, fp16 on
    older GPUs, fp32 on the CPU (the heads always run in fp32 inside the model)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if dtype not in _DTYPES:
        raise IGGTError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def parameter_millions(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def describe_model(model: IGGT) -> str:
    """A short human name: the matching preset (if any), its input size if changed, the parameter count."""
    own = model.config

    def architecture(config: IGGTConfig) -> IGGTConfig:
        # runtime switches, the position-table size, the pre-fix instance head and the tracker (said
        # separately) do not change which model it is
        return replace(config, frames_chunk_size=1, gradient_checkpointing=False, img_size=own.img_size,
                       apply_discarded_cross_attention=own.apply_discarded_cross_attention, merge_ratio=0.0,
                       track_head=own.track_head)

    matched = next((name for name, config in PRESETS.items() if architecture(config) == architecture(own)), None)
    preset = matched or "custom"
    if matched and PRESETS[matched].img_size != own.img_size:
        preset = f"{matched} at {own.img_size} px"
    head = ", pre-fix instance head" if own.apply_discarded_cross_attention else ""
    if matched and PRESETS[matched].track_head != own.track_head:
        head += ", with point tracker" if own.track_head else ", without point tracker"
    merging = f", token merging {own.merge_ratio:g}" if own.merge_ratio else ""
    return f"IGGT {preset} ({parameter_millions(model):.1f} M parameters{head}{merging})"


class Reconstructor:
    """Runs one model on sets of views; keeps the device, precision and preprocessing choices.

    ``size`` defaults to the model's training resolution (``config.img_size``); ``mode``,
    ``target_size`` (for ``resize``), ``grid_multiple``, ``background``, ``max_views``,
    ``every`` and ``frames`` (videos) are passed to `iggt.views`.

    ``grid_multiple=2`` (default) keeps patch grids even, the only grids the released instance
    head accepts: with the 1B model's 518 the input becomes 504 wide (the released demo runs 504 x
    336, which 3:2 photos give exactly), not 518 with the odd 37-patch grid that our window
    attention would have to pad. ``grid_multiple=1`` allows any multiple of the patch size.
    """

    def __init__(self, model: IGGT, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
                 max_views: int | None = DEFAULT_MAX_VIEWS, mode: Mode = "crop", size: int | None = None,
                 target_size: tuple[int, int] | None = None, grid_multiple: int = 2,
                 background: Background = "white", every: int | None = None, frames: int | None = None,
                 model_name: str | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.model_name = model_name or describe_model(model)
        self.max_views, self.every, self.frames, self.background = max_views, every, frames, background
        self.mode, self.target_size, self.grid_multiple = mode, target_size, grid_multiple
        self.size = size if size is not None else model.config.img_size
        self.patch_size = model.config.patch_size

    def __call__(self, views: ViewsInput, progress: Progress | None = None) -> Scene:
        """Reconstruct one scene from any `ViewsInput`."""
        report = progress or (lambda fraction, message: None)
        if isinstance(views, torch.Tensor):
            images, transforms, names = self._from_tensor(views)
        else:
            if isinstance(views, Sequence) and views and all(isinstance(v, LoadedView) for v in views):
                loaded = list(views)
            else:
                report(0.0, "loading views")
                loaded = load_views(views, max_views=self.max_views, every=self.every, frames=self.frames,
                                    background=self.background)
            report(0.1, f"preprocessing {len(loaded)} views")
            images, transforms, names = preprocess(loaded, self.mode, self.size, target_size=self.target_size,
                                                   patch_size=self.patch_size, grid_multiple=self.grid_multiple)
        views_count, _, height, width = images.shape
        report(0.2, f"running the model on {views_count} views of {width}x{height} ({self.device.type}, "
                    f"{str(self.dtype).removeprefix('torch.')})")
        with torch.inference_mode(), self._autocast():
            predictions = self.model(images.to(self.device))
        report(0.8, "converting predictions")
        scene = self._to_scene(predictions, images, transforms, names)
        report(1.0, "reconstruction done")
        return scene

    def _from_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, list[ViewTransform], list[str]]:
        """A ready model input: its own size is the original size of every view."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"an image tensor must be [S, 3, H, W], got shape {tuple(images.shape)}")
        size = (int(images.shape[2]), int(images.shape[3]))
        transforms = [ViewTransform(size, size) for _ in range(images.shape[0])]
        return images.float(), transforms, [f"view_{i:03d}" for i in range(images.shape[0])]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _to_scene(self, predictions: Predictions, images: torch.Tensor, transforms: list[ViewTransform],
                  names: list[str]) -> Scene:
        def numpy(tensor: torch.Tensor) -> np.ndarray:
            return tensor[0].float().cpu().numpy()

        extrinsics = numpy(predictions.extrinsics())
        intrinsics = numpy(predictions.intrinsics())
        depth = numpy(predictions.depth)[..., 0]
        features = numpy(predictions.instance_features).transpose(0, 2, 3, 1)
        features = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
        return Scene(
            images=images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
            extrinsics=extrinsics, intrinsics=intrinsics, depth=depth,
            depth_conf=numpy(predictions.depth_conf),
            world_points=numpy(predictions.world_points),
            world_points_conf=numpy(predictions.world_points_conf),
            points_from_depth=unproject_depth(depth, extrinsics, intrinsics),
            features=features.astype(np.float32),
            view_names=list(names), view_transforms=list(transforms), model_name=self.model_name,
        )


def resolve_checkpoint(checkpoint: str | Path | None) -> str | Path:
    """The checkpoint to load: the one given, else the shipped small model (a clear error when absent)."""
    if checkpoint is not None:
        return checkpoint
    if not DEFAULT_CHECKPOINT.exists():
        raise FileNotFoundError("no checkpoint given and the shipped small model (iggt/weights/iggt-small) is missing; "
                                "pass a saved model folder, a checkpoint file, a preset or a Hub id")
    return DEFAULT_CHECKPOINT


def reconstruct(views: ViewsInput, checkpoint: str | Path | None = None, *, device: str = "auto",
                dtype: str = "auto", progress: Progress | None = None, **view_options) -> Scene:
    """One call from photos to a `Scene`: load the model (folder, file, preset or Hub id; default the
    shipped small model) and run it. ``view_options`` are `Reconstructor`'s keyword arguments."""
    from iggt.loading import load_model

    checkpoint = resolve_checkpoint(checkpoint)
    model = load_model(checkpoint)
    name = f"{describe_model(model)} from {checkpoint}"
    return Reconstructor(model, device, dtype, model_name=name, **view_options)(views, progress)
