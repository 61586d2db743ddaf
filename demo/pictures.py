"""Pictures and small HTML snippets the page shows (no model logic).

Everything works on a `Scene`; the per-view instance overlays come from `iggt.export` so the
app and the command line draw the same thing.
"""
from __future__ import annotations

import html

import numpy as np
from matplotlib import colormaps

from grounding.agent import Answer
from iggt.export import instance_overlays
from iggt.scene import Scene


def view_overlays(scene: Scene, highlight: list[int] | None = None) -> list[np.ndarray]:
    """Per-view uint8 images with instance colours (only `highlight` ids when given)."""
    return instance_overlays(scene, highlight=highlight)


def depth_pictures(scene: Scene) -> list[np.ndarray]:
    """Depth maps coloured with turbo, stretched between the 2nd and 98th percentile of all views."""
    depth = scene.depth
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return [np.zeros((*depth.shape[1:], 3), np.uint8) for _ in depth]
    lo, hi = np.percentile(depth[valid], [2, 98])
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    return [(colormaps["turbo"](1.0 - d)[..., :3] * 255).astype(np.uint8) for d in scaled]


def instance_table(scene: Scene, highlight: list[int] | None = None) -> str:
    """An HTML table: colour swatch, id, name, views it appears in, pixels and 3D size."""
    if scene.instances is None or scene.instances.count == 0:
        return "<p>No instances found.</p>"
    chosen = set(highlight or [])
    rows = []
    for info in scene.instances.info:
        swatch = "#%02x%02x%02x" % tuple(info.color)
        views = ",".join(str(v + 1) for v in sorted(info.views))
        size = "×".join(f"{s:.2f}" for s in info.size)
        style = ' style="font-weight:bold;background:#fff3c4"' if info.id in chosen else ""
        rows.append(
            f"<tr{style}><td><span style='display:inline-block;width:1.2em;height:1.2em;"
            f"background:{swatch};border:1px solid #555'></span></td><td>{info.id}</td>"
            f"<td>{html.escape(info.name or '')}</td><td>{views}</td><td>{info.pixel_count}</td><td>{size}</td></tr>")
    header = "<tr><th></th><th>id</th><th>name</th><th>views</th><th>pixels</th><th>size (scene units)</th></tr>"
    return (f"<div style='max-height:460px;overflow:auto'><table class='instance-table' style='font-size:0.85em;width:100%'>"
            f"{header}{''.join(rows)}</table></div>")


def trace_markdown(answer: Answer) -> str:
    """The grounding's steps as a numbered Markdown list (what was asked, what came back)."""
    lines = [f"**Trace** ({answer.mode} mode, {answer.vlm_calls} VLM calls, {answer.total_seconds:.1f} s"
             + (", fell back to verify" if answer.fell_back else "") + ")", ""]
    for number, step in enumerate(answer.trace, 1):
        lines.append(f"{number}. *{step.kind}*: {html.escape(step.summary)}")
    return "\n".join(lines)
