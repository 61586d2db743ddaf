"""Pictures that show a VLM one instance (or all of them) of a reconstructed scene.

A VLM cannot read instance masks, so every question about an instance travels as an image:

* `highlight_instance`: the views where the instance is seen best, each cropped around it
  with some context, everything but the instance dimmed towards grey, the instance outlined
  in `CONTOUR_COLOR`, tiled into one picture within a pixel budget;
* `overview`: whole views with every instance tinted in its display colour and a numbered
  mark (Set-of-Mark prompting), for questions about the scene as a whole.

The instance's own pixels are copied unchanged (the outline is drawn just outside the mask),
so the colour the VLM sees is the colour of the photo.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from iggt.scene import Scene

CONTOUR_COLOR = (255, 0, 255)
"""Outline colour of a highlighted instance (named in the prompts as magenta)."""
CANVAS_COLOR = (0, 0, 0)
"""Colour of the gaps between tiles."""
DIM_TARGET = 0.5
"""Grey level that the rest of the image is blended towards."""
PANEL_GAP = 4
"""Pixels between the views of an overview."""


@dataclass(frozen=True)
class HighlightConfig:
    """How instances are highlighted."""

    max_views: int = 3
    """At most this many views per instance, the best ones first."""
    context: float = 0.35
    """Margin around the instance's box, as a fraction of the box's larger side."""
    min_crop: int = 48
    """Crops are at least this many pixels wide and high (when the image allows)."""
    dim: float = 0.6
    """How strongly the rest of the image is blended towards grey (0 = not at all)."""
    contour_width: int = 2
    """Outline thickness in pixels; 0 draws no outline."""
    max_pixels: int = 640 * 640
    """Pixel budget of the whole tiled picture."""
    max_upscale: float = 3.0
    """Small crops are enlarged by at most this factor."""
    gap: int = 4
    """Pixels between tiles."""
    border_penalty: float = 0.25
    """Score factor of a view where the instance touches the image border (cut off)."""


@dataclass(frozen=True)
class Tile:
    """Where one view's crop came from and where it went in the tiled picture."""

    view: int
    crop_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) in the view, inclusive-exclusive."""
    placed_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) of the crop's pixels in the tiled picture (outline margin excluded)."""
    scale: float


@dataclass(frozen=True)
class Highlight:
    """A tiled picture of one instance and how it was made."""

    instance_id: int
    image: Image.Image
    tiles: list[Tile]


def _require_instances(scene: Scene):
    if scene.instances is None:
        raise ValueError("the scene has no instances yet: segment it (iggt.instances) before grounding")
    return scene.instances


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] (or uint8) RGB -> uint8 RGB."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def best_views(scene: Scene, instance_id: int, max_views: int, border_penalty: float = 0.25) -> list[int]:
    """Views where the instance is seen best: most pixels, penalised when cut by the image border."""
    instances = _require_instances(scene)
    if not 0 <= instance_id < instances.count:
        raise ValueError(f"instance {instance_id} does not exist (the scene has {instances.count} instances)")
    height, width = scene.image_size
    scores = []
    for view, presence in instances.info[instance_id].views.items():
        x0, y0, x1, y1 = presence.bbox
        cut = x0 <= 0 or y0 <= 0 or x1 >= width or y1 >= height
        scores.append((presence.pixel_count * (border_penalty if cut else 1.0), -view))
    scores.sort(reverse=True)
    return [-view for _, view in scores[:max_views]]


def _crop_box(bbox: tuple[int, int, int, int], image_hw: tuple[int, int], config: HighlightConfig
              ) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = bbox
    height, width = image_hw
    margin = config.context * max(x1 - x0, y1 - y0)
    half_w = max((x1 - x0) / 2 + margin, config.min_crop / 2)
    half_h = max((y1 - y0) / 2 + margin, config.min_crop / 2)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (max(0, int(math.floor(cx - half_w))), max(0, int(math.floor(cy - half_h))),
            min(width, int(math.ceil(cx + half_w))), min(height, int(math.ceil(cy + half_h))))


def dim_outside(image: np.ndarray, mask: np.ndarray, dim: float) -> np.ndarray:
    """uint8 image with every pixel outside ``mask`` blended towards grey; mask pixels unchanged."""
    dimmed = image.astype(np.float32) * (1.0 - dim) + 255.0 * DIM_TARGET * dim
    return np.where(mask[..., None], image, np.rint(dimmed).astype(np.uint8))


def _outlined_crop(image: np.ndarray, mask: np.ndarray, config: HighlightConfig) -> np.ndarray:
    """Dim and outline one crop; the crop is padded by the outline width so the outline always closes."""
    pad = config.contour_width
    picture = dim_outside(image, mask, config.dim)
    if pad == 0:
        return picture
    fill = np.rint(255.0 * DIM_TARGET * config.dim).astype(np.uint8)
    picture = np.pad(picture, ((pad, pad), (pad, pad), (0, 0)), constant_values=fill)
    padded_mask = np.pad(mask, pad)
    ring = ndimage.binary_dilation(padded_mask, iterations=pad) & ~padded_mask
    picture[ring] = CONTOUR_COLOR
    return picture


def _grid(count: int) -> tuple[int, int]:
    """(rows, columns): up to three tiles side by side, more in a square-ish grid."""
    columns = count if count <= 3 else math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def highlight_instance(scene: Scene, instance_id: int, config: HighlightConfig = HighlightConfig(),
                       views: list[int] | None = None) -> Highlight:
    """Tile the best views of one instance into one picture (see the module docstring)."""
    instances = _require_instances(scene)
    views = best_views(scene, instance_id, config.max_views, config.border_penalty) if views is None else views
    if not views:
        raise ValueError(f"instance {instance_id} is not visible in any view")
    pad = config.contour_width
    crops = []
    for view in views:
        presence = instances.info[instance_id].views.get(view)
        if presence is None:
            raise ValueError(f"instance {instance_id} is not visible in view {view}")
        box = _crop_box(presence.bbox, scene.image_size, config)
        x0, y0, x1, y1 = box
        crops.append((view, box, to_uint8(scene.images[view, y0:y1, x0:x1]),
                      instances.labels[view, y0:y1, x0:x1] == instance_id))

    rows, columns = _grid(len(crops))
    cell = int(math.sqrt(config.max_pixels / (rows * columns))) - config.gap
    canvas = Image.new("RGB", (columns * (cell + config.gap) - config.gap, rows * (cell + config.gap) - config.gap),
                       CANVAS_COLOR)
    tiles = []
    for index, (view, box, image, mask) in enumerate(crops):
        height, width = mask.shape
        scale = min((cell - 2 * pad) / width, (cell - 2 * pad) / height, config.max_upscale)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (width, height):  # resize before outlining, so the outline stays crisp
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        picture = _outlined_crop(image, mask, config)
        row, column = divmod(index, columns)
        left = column * (cell + config.gap) + (cell - picture.shape[1]) // 2
        top = row * (cell + config.gap) + (cell - picture.shape[0]) // 2
        canvas.paste(Image.fromarray(picture), (left, top))
        tiles.append(Tile(view, box, (left + pad, top + pad, left + pad + size[0], top + pad + size[1]), scale))
    return Highlight(instance_id, canvas, tiles)


@dataclass(frozen=True)
class Mark:
    """One numbered mark of the overview."""

    instance_id: int
    view: int
    xy: tuple[int, int]
    """Mark centre in the view's pixels."""


@dataclass(frozen=True)
class Overview:
    """Views with every instance tinted and numbered (Set-of-Mark)."""

    image: Image.Image
    views: list[int]
    marks: list[Mark]


def covering_views(scene: Scene, max_views: int, min_pixels: int = 16) -> list[int]:
    """Few views that together show every instance: greedily the view showing most unseen ones."""
    instances = _require_instances(scene)
    seen_in = [{view for view, p in info.views.items() if p.pixel_count >= min_pixels} for info in instances.info]
    uncovered = set(range(instances.count))
    chosen: list[int] = []
    while uncovered and len(chosen) < max_views:
        gains = [(sum(view in seen_in[k] for k in uncovered), -view) for view in range(scene.num_views)
                 if view not in chosen]
        gain, view = max(gains)
        if gain == 0:
            break
        chosen.append(-view)
        uncovered -= {k for k in uncovered if -view in seen_in[k]}
    return sorted(chosen) or [0]


def _mark_position(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel farthest from the mask's border: a mark there sits on the instance."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def overview(scene: Scene, views: list[int] | None = None, max_views: int = 2, tint: float = 0.45,
             min_pixels: int = 16, max_pixels: int = 1024 * 1024) -> Overview:
    """Views side by side, every instance tinted in its colour with its id written on it."""
    instances = _require_instances(scene)
    views = covering_views(scene, max_views, min_pixels) if views is None else views
    height, width = scene.image_size
    scale = min(1.0, math.sqrt(max_pixels / (len(views) * height * width)))
    font = ImageFont.load_default(size=max(10, int(14 / max(scale, 0.5))))
    panels, marks = [], []
    for view in views:
        image = to_uint8(scene.images[view]).astype(np.float32)
        labels = instances.labels[view]
        if instances.count:
            colours = instances.colors[np.maximum(labels, 0)].astype(np.float32)
            image = np.where((labels >= 0)[..., None], image * (1 - tint) + colours * tint, image)
        panel = Image.fromarray(np.rint(image).astype(np.uint8))
        draw = ImageDraw.Draw(panel)
        for info in instances.info:
            presence = info.views.get(view)
            if presence is None or presence.pixel_count < min_pixels:
                continue
            x0, y0, x1, y1 = presence.bbox
            x, y = _mark_position(labels[y0:y1, x0:x1] == info.id)
            x, y = x + x0, y + y0
            marks.append(Mark(info.id, view, (x, y)))
            text = str(info.id)
            left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="mm")
            draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0), outline=info.color)
            draw.text((x, y), text, font=font, fill=(255, 255, 255), anchor="mm")
        panels.append(panel)
    canvas = Image.new("RGB", (len(panels) * (width + PANEL_GAP) - PANEL_GAP, height), CANVAS_COLOR)
    for index, panel in enumerate(panels):
        canvas.paste(panel, (index * (width + PANEL_GAP), 0))
    if scale < 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.Resampling.BILINEAR)
    return Overview(canvas, list(views), marks)
