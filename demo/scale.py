"""The Scale tab: click two points in a view, type their distance, and every size is in metres.

The two clicks are kept in the page (a `gr.State`) in the photo's own pixels; "Set scale" turns
them and the typed length into an `iggt.sfm.scale.KnownLength` and rescales the session's scene
(depth, points, cameras, instance sizes), so the instance table, the grounding's answers and the
downloads are in metres from then on. Without it every size is in "model units".
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
from PIL import Image, ImageDraw

from demo.handlers import Handlers
from demo.pictures import GALLERY_SIDE, depth_scale, instance_table, photo_at
from demo.session import Session
from iggt.errors import IGGTError
from iggt.sfm.colmap import view_transform
from iggt.sfm.scale import METRES, KnownLength, metric_factor, transform_scene

MARK_RADIUS = 6
MARK_COLOURS = ((255, 40, 40), (40, 120, 255))
INSTRUCTIONS = ("Click **two points** in a view whose distance you know (the two ends of a table, a door's "
                "width), type that distance and press **Set scale**: sizes and distances are then in metres. "
                "Without it they are in *model units*, which are not metres.")


@dataclass
class ScaleWidgets:
    view: gr.Number
    picture: gr.Image
    points: gr.State
    length: gr.Number
    apply: gr.Button
    clear: gr.Button
    status: gr.Markdown
    tab: gr.Tab


def scale_tab() -> ScaleWidgets:
    """The Scale tab and its widgets (call inside ``gr.Tabs``)."""
    with gr.Tab("Scale", elem_id="scale-tab") as tab:
        gr.Markdown(INSTRUCTIONS)
        with gr.Row():
            view = gr.Number(1, label="View", precision=0, minimum=1, scale=1, elem_id="scale-view-number")
            length = gr.Number(None, label="Distance between the two points (metres)", minimum=0, scale=2,
                               elem_id="scale-length")
            apply = gr.Button("Set scale", variant="primary", scale=1, elem_id="scale-apply")
            clear = gr.Button("Clear points", scale=1, elem_id="scale-clear")
        picture = gr.Image(label="Click two points", interactive=False, buttons=[], elem_id="scale-view")
        status = gr.Markdown(elem_id="scale-status")
        points = gr.State([])
    return ScaleWidgets(view, picture, points, length, apply, clear, status, tab)


def _view(session: Session, view_number) -> int:
    count = session.scene.num_views
    view = int(view_number or 1) - 1
    if not 0 <= view < count:
        raise IGGTError(f"there is no view {view + 1}: views are 1..{count}")
    return view


def _shown(session: Session, view: int) -> Image.Image:
    """The photo as the tab shows it (long side at most `GALLERY_SIDE`)."""
    if view < len(session.gallery.photos):
        return session.gallery.photos[view]
    image = Image.fromarray((session.scene.images[view] * 255).round().astype("uint8"))
    return photo_at(image, GALLERY_SIDE)


def _to_photo(session: Session, view: int, shown: Image.Image, x: float, y: float) -> tuple[float, float]:
    """A pixel of the shown picture -> the photo's own pixels (what `KnownLength` takes)."""
    height, width = view_transform(session.scene, view).original_size
    return x * width / shown.width, y * height / shown.height


def _picture(session: Session, view: int, points: list) -> Image.Image:
    """The view with the clicked points (photo pixels) marked and joined."""
    shown = _shown(session, view).convert("RGB")
    height, width = view_transform(session.scene, view).original_size
    marks = [(x * shown.width / width, y * shown.height / height) for x, y in points]
    draw = ImageDraw.Draw(shown)
    if len(marks) == 2:
        draw.line(marks, fill=(255, 255, 255), width=2)
    for (x, y), colour in zip(marks, MARK_COLOURS):
        draw.ellipse((x - MARK_RADIUS, y - MARK_RADIUS, x + MARK_RADIUS, y + MARK_RADIUS), outline=colour, width=3)
    return shown


class ScaleHandlers:
    """Event handlers of the Scale tab; the table and the downloads are `Handlers`'."""

    def __init__(self, handlers: Handlers):
        self.handlers = handlers

    def show(self, view_number, session: Session | None):
        """The chosen view, no points yet."""
        if session is None or session.scene is None:
            return gr.skip(), [], "Reconstruct a scene first."
        try:
            view = _view(session, view_number)
        except IGGTError as err:
            return gr.skip(), [], f"**{html.escape(str(err))}**"
        return _picture(session, view, []), [], f"Sizes are in **{html.escape(session.scene.units)}**."

    def pick(self, view_number, points: list, session: Session | None, evt: gr.SelectData):
        """A click: the first or second point (a third starts again)."""
        if session is None or session.scene is None:
            return gr.skip(), points, "Reconstruct a scene first."
        try:
            view = _view(session, view_number)
        except IGGTError as err:
            return gr.skip(), points, f"**{html.escape(str(err))}**"
        x, y = _to_photo(session, view, _shown(session, view), *(float(v) for v in evt.index))
        points = ([] if len(points) >= 2 else list(points)) + [(x, y)]
        told = "Now click the second point." if len(points) == 1 else "Type their distance and press Set scale."
        return _picture(session, view, points), points, told

    def apply(self, view_number, points: list, length, session: Session | None):
        """The scene in metres from the two points and their distance."""
        if session is None or session.scene is None:
            return "Reconstruct a scene first.", gr.skip(), gr.skip(), session
        if len(points) != 2:
            return "Click two points in the view first.", gr.skip(), gr.skip(), session
        try:
            known = KnownLength("pixels", float(length or 0), view=_view(session, view_number),
                                pixels=(tuple(points[0]), tuple(points[1])))
            factor = metric_factor(session.scene, known)
        except IGGTError as err:
            return f"**{html.escape(str(err))}**", gr.skip(), gr.skip(), session
        session.scene = transform_scene(session.scene, factor, units=METRES)
        session.downloads_pending = True
        return (f"Scale set: the two points are **{float(length):g} m** apart, so one unit was "
                f"{factor:.4g} m before. Sizes, distances and downloads are now in **metres**.",
                instance_table(session.scene, session.highlighted), depth_scale(session.scene), session)


def wire_scale(widgets: ScaleWidgets, handlers: Handlers, session, instance_list, depth_legend, downloads,
               status) -> ScaleHandlers:
    """Connect the Scale tab's events (internal to the page, no API endpoint)."""
    scale = ScaleHandlers(handlers)
    shown = [widgets.picture, widgets.points, widgets.status]
    gr.on([widgets.tab.select, widgets.view.change, widgets.clear.click], scale.show, [widgets.view, session], shown,
          api_name=False)
    widgets.picture.select(scale.pick, [widgets.view, widgets.points, session], shown, api_name=False)
    widgets.apply.click(scale.apply, [widgets.view, widgets.points, widgets.length, session],
                        [widgets.status, instance_list, depth_legend, session], api_name=False).then(
        handlers.write_downloads, session, [downloads, status], api_name=False)
    return scale
