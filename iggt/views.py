"""Photos and video frames in, the model's input tensor out.

Two steps, kept apart so the app can show what was loaded before the model runs:

* `load_views` opens files (JPEG, PNG 8/16-bit, WebP, BMP, TIFF, HEIC/HEIF, video) into RGB
  PIL images, honouring EXIF orientation, compositing transparency over a plain background
  and downscaling huge photos while decoding so memory stays bounded;
* `preprocess` resizes them as the official loader does (bicubic ``crop``/``pad``/``resize``,
  generalised to any size and patch multiple) and records, per view, the `ViewTransform`
  that maps model-input pixels back to the original photo.

Every problem with the input raises `InputError` with a message that names the file.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from iggt.errors import IGGTError
from iggt.scene import ViewTransform

if TYPE_CHECKING:  # torch is imported where it is needed, so loading stays light (CLI --help)
    import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
DEFAULT_MAX_VIEWS = 32
DEFAULT_VIDEO_FRAMES = 8
"""Frames taken from a video when neither ``every`` nor ``frames`` is given."""
DEFAULT_MAX_SIDE = 2048
"""Photos are decoded at no more than this many pixels on their long side (far above any model input)."""

Background = Literal["white", "black"]
FrameSelection = Literal["uniform", "change"]
"""How ``frames`` views are chosen from a longer video: evenly spaced in time, or evenly spaced in image
change and sharp (`select_frames_by_change`)."""
Mode = Literal["crop", "pad", "resize"]
_BACKGROUND_RGB = {"white": (255, 255, 255), "black": (0, 0, 0)}
_PAD_VALUE = 1.0
"""Padding is white, as in the official loader."""


class InputError(IGGTError):
    """The user's photos or video cannot be used; the message says which file and why."""


@dataclass
class LoadedView:
    """One decoded RGB picture, ready for `preprocess`."""

    image: Image.Image
    """RGB, upright, possibly downscaled while decoding."""
    name: str
    """Display name, unique within one `load_views` call (file name, or video name + frame)."""
    original_size: tuple[int, int]
    """(height, width) of the upright original before any downscaling."""
    frame_index: int | None = None
    """The frame's index in its video (None for a photo)."""


# -- loading ------------------------------------------------------------------------------
def load_views(
    sources: str | Path | Image.Image | Sequence[str | Path | Image.Image],
    *,
    max_views: int | None = DEFAULT_MAX_VIEWS,
    every: int | None = None,
    frames: int | None = None,
    max_frames: int | None = None,
    background: Background = "white",
    max_side: int = DEFAULT_MAX_SIDE,
    selection: FrameSelection = "uniform",
) -> list[LoadedView]:
    """Open photos, folders of photos, videos and PIL images, in the order given.

    A folder contributes its image files in sorted order. A video contributes every
    ``every``-th frame, or ``frames`` frames chosen by ``selection`` (evenly spaced, or by image
    change); with neither, ``max_frames`` frames (default `DEFAULT_VIDEO_FRAMES`). No video gives
    more than ``max_frames`` or ``max_views`` frames; each frame view records its ``frame_index``.
    Transparent pixels are composited over ``background``.
    """
    if every is not None and frames is not None:
        raise InputError("give either every (every k-th frame) or frames (N evenly spaced), not both")
    if selection not in ("uniform", "change"):
        raise InputError(f"frame selection must be uniform or change, not {selection!r}")
    if every is not None and selection != "uniform":
        raise InputError("every takes every k-th frame; frame selection by change needs a number of frames instead")
    if any(value is not None and value < 1 for value in (every, frames, max_frames)):
        raise InputError("every, frames and max_frames must be positive whole numbers")
    if background not in _BACKGROUND_RGB:
        raise InputError(f"background must be one of {', '.join(_BACKGROUND_RGB)}, not {background!r}")
    if isinstance(sources, (str, Path, Image.Image)):
        sources = [sources]

    views: list[LoadedView] = []
    for index, source in enumerate(sources):
        if isinstance(source, Image.Image):
            views.append(_view_from_pil(source, f"image_{index:03d}", background, max_side))
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise InputError(f"{path.name}/ holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            if max_views is not None and len(views) + len(files) > max_views:
                raise InputError(f"too many views: {len(views) + len(files)} given ({path.name}/ holds "
                                 f"{len(files)} photos), at most {max_views} allowed")
            views.extend(_load_image(p, background, max_side) for p in files)
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            caps = [cap for cap in (max_frames, max_views) if cap is not None]
            sampling = _FrameSampling(every, frames or max_frames or DEFAULT_VIDEO_FRAMES,
                                      min(caps, default=DEFAULT_MAX_VIEWS), selection)
            views.extend(_load_video(path, sampling, background, max_side))
        else:
            views.append(_load_image(path, background, max_side))
        if max_views is not None and len(views) > max_views:
            break

    if not views:
        raise InputError("no views given: pass at least one photo, folder of photos or video")
    if max_views is not None and len(views) > max_views:
        raise InputError(f"too many views: at least {len(views)} given, at most {max_views} allowed "
                         "(pass fewer photos, or sample fewer video frames)")
    return _with_unique_names(views)


def _load_image(path: Path, background: Background, max_side: int) -> LoadedView:
    """Decode one photo file; every failure becomes an `InputError` naming it."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise InputError(f"{path.name}: unsupported file type {suffix or '(no extension)'!r}; "
                         f"photos: {', '.join(IMAGE_EXTENSIONS)}; videos: {', '.join(VIDEO_EXTENSIONS)}")
    if not path.is_file():
        raise InputError(f"{path.name}: file not found ({path})")
    if suffix in (".heic", ".heif"):
        _register_heif()
    try:
        with Image.open(path) as image:
            original_size = _upright_size(image)
            _draft_downscale(image, max_side)
            image.load()
            return LoadedView(_to_rgb(ImageOps.exif_transpose(image), background, max_side), path.name,
                              original_size)
    except Image.DecompressionBombError as err:
        raise InputError(f"{path.name}: refused, too many pixels for a photo "
                         f"(decompression-bomb protection): {err}") from None
    except UnidentifiedImageError:
        raise InputError(f"{path.name} is not an image (or is damaged beyond recognition)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{path.name} is corrupt or truncated: {err}") from None


def _view_from_pil(image: Image.Image, name: str, background: Background, max_side: int) -> LoadedView:
    upright = ImageOps.exif_transpose(image)
    return LoadedView(_to_rgb(upright, background, max_side), name, (upright.height, upright.width))


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) after EXIF orientation, read before decoding the pixels."""
    width, height = image.size
    orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _draft_downscale(image: Image.Image, max_side: int) -> None:
    """Let JPEG decode at a reduced scale when the photo is far larger than needed."""
    scale = max_side / max(image.size)
    if scale < 1:
        image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


def _to_rgb(image: Image.Image, background: Background, max_side: int) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit and float scaled (not clipped), alpha composited."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale (PNG/TIFF): Pillow's convert("L") would clip at 255.
        values = np.asarray(image, dtype=np.float64) / 65535.0
        image = Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8), "L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, _BACKGROUND_RGB[background] + (255,))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def _register_heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


@dataclass(frozen=True)
class _FrameSampling:
    """Which frames of a video become views: every k-th (when ``every``), else ``count`` chosen by ``selection``."""

    every: int | None
    count: int
    cap: int
    selection: FrameSelection = "uniform"

    @property
    def wanted(self) -> int:
        return min(self.count, self.cap)

    def uniform(self, total: int) -> list[int]:
        if total == 0:
            return []
        if self.every is not None:
            return list(range(0, total, self.every)[:self.cap])
        return sorted({int(i) for i in np.round(np.linspace(0, total - 1, min(self.wanted, total)))})


CHANGE_THUMBNAIL = (32, 24)
"""(width, height) of the grey thumbnails whose differences measure the image change between frames."""
SHARPNESS_SIDE = 160
"""Long side of the grey image whose Laplacian variance measures a frame's sharpness."""


@dataclass
class FrameMeasures:
    """What frame selection by change looks at, per frame of a video."""

    thumbnails: np.ndarray
    """``[N, h, w]`` float grey thumbnails, each normalised to zero mean and unit deviation."""
    sharpness: np.ndarray
    """``[N]`` variance of the Laplacian (low: blurred)."""

    @classmethod
    def of(cls, frames: Iterable[Image.Image]) -> "FrameMeasures":
        thumbnails, sharpness = [], []
        for frame in frames:
            grey = frame.convert("L")
            small = np.asarray(grey.resize(CHANGE_THUMBNAIL, Image.Resampling.BILINEAR), np.float64)
            thumbnails.append((small - small.mean()) / (small.std() + 1e-6))
            scale = SHARPNESS_SIDE / max(grey.size)
            if scale < 1:
                grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                                   Image.Resampling.BILINEAR)
            sharpness.append(_laplacian_variance(np.asarray(grey, np.float64)))
        return cls(np.stack(thumbnails), np.array(sharpness))

    def change(self) -> np.ndarray:
        """``[N - 1]`` image change from each frame to the next: 1 - their thumbnails' correlation (0: same view)."""
        flat = self.thumbnails.reshape(len(self.thumbnails), -1)
        correlation = (flat[1:] * flat[:-1]).mean(axis=1)
        return np.clip(1 - correlation, 0, None)


def _laplacian_variance(grey: np.ndarray) -> float:
    if min(grey.shape) < 3:
        return 0.0
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
    return float(laplacian.var())


def select_frames_by_change(measures: FrameMeasures, count: int) -> list[int]:
    """``count`` frame indices spread evenly over the video's accumulated image change, the sharpest of each stretch.

    The accumulated change (the running sum of `FrameMeasures.change`) is cut into ``count``
    equal stretches; from each, the sharpest frame is taken. A still camera then gives few views
    and a fast pan many, so neighbouring views overlap about equally, and blurred frames are
    avoided where a sharper one shows nearly the same.
    """
    total = len(measures.sharpness)
    if count >= total:
        return list(range(total))
    progress = np.concatenate(([0.0], np.cumsum(measures.change())))
    if progress[-1] <= 0:  # nothing moves: evenly spaced in time
        progress = np.arange(total, dtype=np.float64)
    stretch = np.minimum((progress / progress[-1] * count).astype(int), count - 1)
    chosen = []
    for part in range(count):
        members = np.flatnonzero(stretch == part)
        if len(members):
            chosen.append(int(members[np.argmax(measures.sharpness[members])]))
    return chosen


def _load_video(path: Path, sampling: _FrameSampling, background: Background, max_side: int) -> list[LoadedView]:
    """Decode the chosen frames of one video (two passes: which frames, then those frames)."""
    import av

    if not path.is_file():
        raise InputError(f"{path.name}: file not found ({path})")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path.name} has no video stream")
            if sampling.selection == "change":
                measures = FrameMeasures.of(frame.to_image() for frame in container.decode(video=0))
                wanted = set(select_frames_by_change(measures, sampling.wanted))
            else:
                stream = container.streams.video[0]
                wanted = set(sampling.uniform(sum(1 for packet in container.demux(stream) if packet.size)))
        views: list[LoadedView] = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    image = _rotate_for_display(frame.to_image(), frame.rotation)
                    view = _view_from_pil(image, f"{path.stem}_frame{index:05d}.png", background, max_side)
                    view.frame_index = index
                    views.append(view)
                if len(views) == len(wanted):
                    break
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise InputError(f"{path.name}: cannot decode this video ({err})") from None
    if not views:
        raise InputError(f"{path.name}: no decodable video frame")
    return views


def chosen_frames(views: Sequence[LoadedView]) -> dict[str, list[int]]:
    """Per video (by the stem its views are named after), the indices of the frames taken, in order."""
    frames: dict[str, list[int]] = {}
    for view in views:
        if view.frame_index is not None:
            frames.setdefault(view.name.rsplit("_frame", 1)[0], []).append(view.frame_index)
    return frames


def _rotate_for_display(image: Image.Image, rotation: int) -> Image.Image:
    """Apply a video's display rotation (degrees counter-clockwise), as players do."""
    turn = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270,
            180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}.get(int(rotation))
    return image.transpose(turn) if turn is not None else image


def _with_unique_names(views: list[LoadedView]) -> list[LoadedView]:
    """Rename repeats (two folders with IMG_0001.jpg) so names identify views."""
    seen: dict[str, int] = {}
    for view in views:
        count = seen.get(view.name, 0)
        seen[view.name] = count + 1
        if count:
            stem, dot, suffix = view.name.rpartition(".")
            view.name = f"{stem}_{count + 1}.{suffix}" if dot else f"{view.name}_{count + 1}"
    return views


# -- preprocessing ------------------------------------------------------------------------
def preprocess(
    views: Sequence[LoadedView],
    mode: Mode = "crop",
    size: int = 518,
    *,
    target_size: tuple[int, int] | None = None,
    patch_size: int = 14,
    grid_multiple: int = 1,
) -> tuple[torch.Tensor, list[ViewTransform], list[str]]:
    """Resize views into one ``[S, 3, H, W]`` float tensor in [0, 1].

    Modes (the official loader's, generalised from 518 and 14 to ``size`` and ``step`` =
    ``patch_size * grid_multiple``; ``grid_multiple=2`` gives the even patch grids IGGT's
    instance branch needs):

    * ``crop``: width becomes ``size`` (rounded down to ``step``), height keeps the aspect
      ratio rounded to ``step``; taller than ``size`` is centre-cropped to ``size``;
    * ``pad``: the long side becomes ``size``, the other keeps the aspect ratio rounded to
      ``step``, then white padding centres it in a ``size`` x ``size`` square;
    * ``resize``: exactly ``target_size`` = (width, height), aspect ratio ignored.

    Views of different shapes are padded white, centred, to the largest height and width.
    Returns the tensor, one `ViewTransform` per view and the view names.
    """
    if not views:
        raise InputError("no views given: pass at least one photo or video")
    step = patch_size * grid_multiple
    if mode not in ("crop", "pad", "resize"):
        raise InputError(f"unknown preprocessing mode {mode!r}; use crop, pad or resize")
    if mode == "resize":
        if target_size is None:
            raise InputError("resize mode needs target_size = (width, height)")
        if any(side % step or side <= 0 for side in target_size):
            raise InputError(f"resize target {target_size[0]}x{target_size[1]} must be positive "
                             f"multiples of {step}")
    side = (size // step) * step
    if mode != "resize" and side < step:
        raise InputError(f"size {size} is smaller than one {step}-pixel step")

    arrays, transforms = [], []
    for view in views:
        width, height = view.image.size
        if min(view.original_size) < patch_size:
            raise InputError(f"{view.name}: {view.original_size[1]}x{view.original_size[0]} pixels is "
                             f"too small, it does not hold one {patch_size}x{patch_size} patch")
        if mode == "resize":
            resized_hw = (target_size[1], target_size[0])
        elif mode == "crop":
            resized_hw = (_round_to_step(height * side / width, step), side)
        elif width >= height:
            resized_hw = (_round_to_step(height * side / width, step), side)
        else:
            resized_hw = (side, _round_to_step(width * side / height, step))
        resized = view.image.resize((resized_hw[1], resized_hw[0]), Image.Resampling.BICUBIC)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        offset = (0, 0)
        if mode == "crop" and resized_hw[0] > side:
            top = (resized_hw[0] - side) // 2
            array = array[top:top + side]
            offset = (-top, 0)
        elif mode == "pad":
            array, offset = _pad_centred(array, (side, side))
        arrays.append(array)
        # The decoded picture may be downscaled; the transform still maps to the original photo.
        transforms.append(ViewTransform(view.original_size, resized_hw, offset))

    import torch

    target_hw = (max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays))
    for index, array in enumerate(arrays):
        if array.shape[:2] != target_hw:
            arrays[index], (dy, dx) = _pad_centred(array, target_hw)
            t = transforms[index]
            transforms[index] = ViewTransform(t.original_size, t.resized_size, (t.offset[0] + dy, t.offset[1] + dx))
    tensor = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return tensor, transforms, [view.name for view in views]


def _round_to_step(length: float, step: int) -> int:
    """Python's round, as the official loader, but never below one step."""
    return max(step, round(length / step) * step)


def _pad_centred(array: np.ndarray, target_hw: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad ``[h, w, 3]`` with white to ``target_hw``; the extra pixel goes bottom/right."""
    dy = (target_hw[0] - array.shape[0]) // 2
    dx = (target_hw[1] - array.shape[1]) // 2
    padded = np.full((*target_hw, array.shape[2]), _PAD_VALUE, dtype=array.dtype)
    padded[dy:dy + array.shape[0], dx:dx + array.shape[1]] = array
    return padded, (dy, dx)
