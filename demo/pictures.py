"""Pictures and small HTML snippets the page shows (no model logic).

Everything works on a `Scene`; the per-view instance overlays come from `iggt.export` so the
app and the command line draw the same thing.
"""
from __future__ import annotations

import html
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from grounding.agent import Answer
from iggt.export import instance_overlays, upsample_labels
from iggt.scene import Scene
from iggt.views import InputError, load_views

PREVIEW_SIDE = 320
"""Long side of an input thumbnail, in pixels (JPEGs are decoded at about this size, so it is quick)."""
GALLERY_SIDE = 512
"""Long side of the instance pictures in the gallery and of the view to click on (photo pixels)."""


def unusable_tile(reason: str) -> Image.Image:
    """A grey tile with ``reason`` written on it, standing in for a file that is not a usable photo."""
    tile = Image.new("RGB", (PREVIEW_SIDE, PREVIEW_SIDE * 3 // 4), (225, 225, 225))
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, tile.width - 1, tile.height - 1), outline=(200, 40, 40), width=6)
    draw.multiline_text((18, 18), textwrap.fill(reason, 24), fill=(120, 20, 20),
                        font=ImageFont.load_default(size=22), spacing=6)
    return tile


def input_previews(paths: list[str]) -> tuple[list[tuple[Image.Image, str]], list[str]]:
    """A thumbnail per photo (the first frame of a video) captioned with its file name, and why each
    file that cannot be used cannot (naming it); those files come first, as tiles that say why."""
    tiles, unusable, reasons = [], [], []
    for path in paths:
        try:
            view = load_views([path], max_views=1, max_frames=1, max_side=PREVIEW_SIDE)[0]
            tiles.append((view.image, Path(path).name))
        except InputError as err:
            unusable.append((unusable_tile(str(err)), f"⚠️ {err}"))
            reasons.append(str(err))
    return unusable + tiles, reasons


class GalleryViews:
    """The views as the page draws them: photos with long side ``side`` and instance colours on them.

    The photos at that size, and each view's instance labels at that size for the clustering they
    came from, are kept (one object per set of photos), so a new selection or Find only recolours:
    upsampling the labels is most of an overlay's cost.
    """

    def __init__(self, photos: list[Image.Image], side: int = GALLERY_SIDE):
        self.photos = [photo_at(photo, side) for photo in photos]
        self._source: np.ndarray | None = None  # the scene's label maps the kept ones were made from
        self._labels: dict[int, np.ndarray] = {}

    def labels(self, scene: Scene, view: int) -> np.ndarray:
        """View ``view``'s instance labels at its drawn size (`upsample_labels`)."""
        if self._source is not scene.instances.labels:  # clustered again: the kept labels are stale
            self._source, self._labels = scene.instances.labels, {}
        if view not in self._labels:
            self._labels[view] = upsample_labels(scene, view, self.photos[view].size[::-1])
        return self._labels[view]

    def overlays(self, scene: Scene, highlight: list[int] | None, views: list[int] | None = None) -> list[np.ndarray]:
        """Per-view uint8 pictures: the photos with instance colours (only ``highlight`` ids when given), or
        the plain photos when the scene has no instances."""
        views = list(range(scene.num_views)) if views is None else views
        if scene.instances is None:
            return [np.asarray(self.photos[view]) for view in views]
        return instance_overlays(scene, highlight=highlight, photos=self.photos, views=views,
                                 labels=[self.labels(scene, view) for view in views])


def photo_at(photo: Image.Image, side: int) -> Image.Image:
    """The photo scaled so its long side is at most ``side`` (the size `GalleryViews` draws at)."""
    scale = min(1.0, side / max(photo.size))
    return photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BILINEAR)


DEPTH_COLORMAP = "turbo"
DEPTH_PERCENTILES = (2, 98)


def depth_range(scene: Scene) -> tuple[float, float] | None:
    """The depths the colours stretch between: the 2nd and 98th percentile of all views (None: no depth)."""
    valid = np.isfinite(scene.depth) & (scene.depth > 0)
    if not valid.any():
        return None
    lo, hi = np.percentile(scene.depth[valid], DEPTH_PERCENTILES)
    return float(lo), float(max(hi, lo + 1e-6))


def depth_pictures(scene: Scene) -> list[np.ndarray]:
    """Depth maps coloured with turbo (near red, far blue) over `depth_range`."""
    limits = depth_range(scene)
    if limits is None:
        return [np.zeros((*scene.depth.shape[1:], 3), np.uint8) for _ in scene.depth]
    lo, hi = limits
    scaled = np.clip((scene.depth - lo) / (hi - lo), 0, 1)
    return [(colormaps[DEPTH_COLORMAP](1.0 - d)[..., :3] * 255).astype(np.uint8) for d in scaled]


def depth_scale(scene: Scene) -> str:
    """The colour scale of `depth_pictures` as an HTML bar, labelled with its depths (model units)."""
    limits = depth_range(scene)
    if limits is None:
        return "<p>No valid depth.</p>"
    stops = ", ".join("#%02x%02x%02x" % tuple(int(255 * c) for c in colormaps[DEPTH_COLORMAP](1.0 - t)[:3])
                      for t in np.linspace(0, 1, 9))
    return (f"<div class='depth-scale' style='display:flex;align-items:center;gap:8px;font-size:0.85em'>"
            f"<span>near {limits[0]:.2f}</span>"
            f"<span style='flex:1;height:14px;border-radius:3px;background:linear-gradient(to right, {stops})'>"
            f"</span><span>far {limits[1]:.2f}</span>"
            f"<span style='opacity:0.7'>(depth in {html.escape(scene.units)}, from camera; the ends are the "
            f"{DEPTH_PERCENTILES[0]} % and {DEPTH_PERCENTILES[1]} % points of all views)</span></div>")


STRUCTURE_TAG = " <small title='floor, wall or another large plane (iggt.structure)'>structure</small>"


def instance_table(scene: Scene, highlight: list[int] | None = None) -> str:
    """An HTML table: colour swatch, id, name, views it appears in, pixels and 3D size."""
    if scene.instances is None or scene.instances.count == 0:
        return "<p>No instances found.</p>"
    chosen = set(highlight or [])
    named = any(info.name for info in scene.instances.info)  # names come from an agent question
    labelled = any(info.label for info in scene.instances.info)  # labels from Label all (demo/find.py)
    rows = []
    for info in scene.instances.info:
        swatch = "#%02x%02x%02x" % tuple(info.color)
        views = ", ".join(str(v + 1) for v in sorted(info.views))
        size = " × ".join(f"{s:.2f}" for s in info.size)
        style = ' style="font-weight:bold;background:#fff3c4"' if info.id in chosen else ""
        name = f"<td>{html.escape(info.name or '')}</td>" if named else ""
        name += f"<td class='instance-label'>{html.escape(info.label or '')}</td>" if labelled else ""
        rows.append(
            f"<tr{style}><td><span style='display:inline-block;width:1.2em;height:1.2em;"
            f"background:{swatch};border:1px solid #555'></span>{STRUCTURE_TAG if info.structure else ''}</td>"
            f"<td>{info.id}</td>"
            f"{name}<td>{views}</td><td>{info.pixel_count}</td><td>{size}</td></tr>")
    header = ("<tr><th></th><th>id</th>" + ("<th>name</th>" if named else "") + ("<th>label</th>" if labelled else "")
              + f"<th>views</th><th>pixels</th><th>size ({html.escape(scene.units)})</th></tr>")
    return (f"<div style='max-height:460px;overflow:auto;max-width:100%'>"
            f"<table class='instance-table' style='font-size:0.85em;width:100%;table-layout:auto'>"
            f"{header}{''.join(rows)}</table></div>")


def _instance_label(instance_id: int, name: str | None) -> str:
    return f"#{instance_id} {name}" if name else f"#{instance_id}"


def answer_markdown(answer: Answer, vlm_name: str) -> str:
    """The answer, then the instances it refers to by id and name, and which VLM gave it."""
    found = ", ".join(_instance_label(k, answer.instance_names.get(k)) for k in answer.instance_ids) or "none"
    return f"**{answer.text}**\n\nInstances: {found}\n\n<small>Answered by {vlm_name} in {answer.mode} mode.</small>"


def answer_pictures(answer: Answer, overlays: list[tuple[np.ndarray, str]], max_views: int = 2
                    ) -> list[tuple[np.ndarray, str]]:
    """The views that show the answered instances best, from ``overlays`` (the views with the answer
    highlighted), captioned with the instances by id and name."""
    if not answer.instance_ids or answer.scene is None:
        return []
    shown = np.isin(answer.scene.instances.labels, answer.instance_ids).sum(axis=(1, 2))
    best = [int(v) for v in np.argsort(-shown, kind="stable")[:max_views] if shown[v] > 0]
    named = ", ".join(_instance_label(k, answer.instance_names.get(k)) for k in answer.instance_ids)
    return [(overlays[v][0], f"{named} in view {v + 1}") for v in best]


def trace_markdown(answer: Answer) -> str:
    """The grounding's steps as a numbered Markdown list (what was asked, what came back)."""
    lines = [f"**Trace** ({answer.mode} mode, {answer.vlm_calls} VLM calls, {answer.total_seconds:.1f} s"
             + (", fell back to verify" if answer.fell_back else "") + ")", ""]
    for number, step in enumerate(answer.trace, 1):
        lines.append(f"{number}. *{step.kind}*: {html.escape(step.summary)}")
    return "\n".join(lines)
