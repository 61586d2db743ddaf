"""The page layout: widgets and how their events are wired to `demo.handlers`.

Two events are public API endpoints (``/reconstruct`` and ``/ask``, usable with
`gradio_client`); every other event is internal to the page. The page's own Reconstruct and Ask
events run the same handlers but show a failure as a lasting message in place (`shown_in`); the
API endpoints, which no widget triggers, raise it to the client.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.handlers import (ALL_FRAMES, CLUSTERING_CHOICES, CLUSTERING_HELP, COLOR_MODES, DEFAULT_MERGE_PERCENT, FILTERS,
                           GEOMETRIES, MERGE_HELP, Display, Handlers, Limits, shown_in)
from demo.services import BACKEND_CHOICES, REPO_ROOT, ModelService
from demo.find import find_tab, wire_find
from demo.scale import scale_tab, wire_scale
from demo.session import close_session
from demo.viewer3d import viewer_component
from grounding.agent import MODES
from iggt.views import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
MODE_HELP = ("verify: every instance is outlined in turn and the VLM is asked \"is this <your object>?\" "
             "(the paper's method; one request per instance; for finding things). agent: the VLM plans, "
             "looks at pictures and uses 3D tools (positions, distances, left/right, counts): for questions "
             "like \"which is nearest to the red cube?\"; it falls back to verify if it gets stuck.")
SESSION_TTL_S = 3 * 3600
"""A session's scene and files are dropped this long after its last change (or an hour after the tab closes)."""

INTRO = """# IGGT: photos → 3D scene with consistent instances → answers
Upload several photos of one scene (or a video), or click an example; look at it in 3D with every object
as one instance across all views, click an object (in 3D or in a view) to select it, and ask questions."""

PAGE_CSS = """
#downloads .label-clear-button, #view-files .label-clear-button { display: none; }
"""
"""The page's own CSS (`app.py` passes it to ``launch``): read-only file lists offer no remove buttons."""
TRANSLATIONS = gr.I18n(en={"common.upload": "Upload other photos (they replace these)"})
"""A label Gradio's English texts lack (its file box showed "common.upload" as the upload button's tooltip)."""


def bundled_examples(root: Path = EXAMPLES_DIR) -> dict[str, list[Path]]:
    """Example scenes shipped in ``assets/examples/<name>/`` (images only)."""
    if not root.is_dir():
        return {}
    found = {folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
             for folder in sorted(root.iterdir()) if folder.is_dir()}
    return {name: paths for name, paths in found.items() if paths}


def build_demo(models: ModelService, limits: Limits = Limits()) -> gr.Blocks:
    """The whole page, bound to a loaded model service."""
    examples = bundled_examples()
    handlers = Handlers(models, examples, limits)
    defaults = Display()

    with gr.Blocks(title="IGGT", delete_cache=(1800, SESSION_TTL_S)) as demo:
        session = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=close_session)
        uploaded = gr.State([])  # the files of the last upload, so that the next one replaces them
        gr.Markdown(INTRO)
        gr.Markdown(models.info.banner(), elem_id="model-banner")

        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                files = gr.File(label=f"Photos (JPEG, PNG, HEIC, WebP, ...; up to {limits.max_views})",
                                file_count="multiple", file_types=[*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS],
                                height=140, elem_id="upload")
                with gr.Row():
                    run = gr.Button("Reconstruct", variant="primary", scale=3, elem_id="reconstruct")
                    clear_inputs = gr.Button("Clear", scale=1, min_width=60, elem_id="clear-inputs")
                status = gr.Markdown(label="Status", elem_id="status")
                previews = gr.Gallery(label="Photos to reconstruct", visible=False, columns=2, height=240,
                                      object_fit="contain", fit_columns=False, elem_id="inputs-preview")
                unusable = gr.Markdown(elem_id="inputs-note")
                example_thumbnails = gr.Gallery(handlers.example_thumbnails(), label="...or click an example",
                                                columns=3, height=150, object_fit="cover", allow_preview=False,
                                                buttons=[], elem_id="examples")
                example = gr.Textbox("", visible=False, label="Example scene")  # set by a thumbnail; API input
                clustering = gr.Radio(list(CLUSTERING_CHOICES), value=models.info.clustering,
                                      label="Instance granularity (clustering preset)", info=CLUSTERING_HELP,
                                      elem_id="clustering")
                merge = gr.Slider(0, 5, value=DEFAULT_MERGE_PERCENT, step=0.1, label="Merge small pieces (% of "
                                  "the scene)", info=MERGE_HELP, elem_id="merge")
                sizes = models.size_choices()
                input_size = gr.Radio(list(sizes.items()), value=models.load().size,
                                      label="Input size (long side of what the model sees)",
                                      info="Larger: finer depth and masks, slower (the status shows the "
                                           "model's time); masks are always shown at the photos' resolution.",
                                      elem_id="input-size")
                video = gr.Video(label="...or a video", sources=["upload"], height=140, elem_id="video")
                video_frames = gr.Slider(2, limits.max_video_frames, value=min(12, limits.max_video_frames), step=1,
                                         label="Frames sampled from the video", visible=False, elem_id="video-frames")
                downloads = gr.File(label="Downloads: GLB, PLY, masks, COLMAP model, scene file",
                                    file_count="multiple", interactive=False, elem_id="downloads")
            with gr.Column(scale=3):
                viewer = viewer_component(elem_id="viewer")
                with gr.Row():
                    export_view = gr.Button("Download what I see (GLB + PLY)", size="sm", elem_id="export-view")
                    clear_selection = gr.Button("Clear selection", size="sm", elem_id="clear-selection")
                view_files = gr.File(label="What you see: the current filters, frame, colours and selection",
                                     file_count="multiple", interactive=False, visible=False, elem_id="view-files")
                with gr.Row():
                    color_mode = gr.Radio(list(COLOR_MODES), value=defaults.color_mode, label="Colours",
                                          elem_id="color-mode")
                    geometry = gr.Radio(list(GEOMETRIES), value=defaults.geometry, label="Prediction mode",
                                        info="depth unprojected with the cameras, or the point-map branch",
                                        elem_id="geometry")
                    frame = gr.Dropdown([ALL_FRAMES], value=defaults.frame, label="Points of frame",
                                        elem_id="frame")
                with gr.Row():
                    conf_percentile = gr.Slider(0, 90, value=defaults.conf_percentile, step=1,
                                                label="Drop lowest-confidence %")
                    filters = gr.CheckboxGroup(list(FILTERS), value=list(defaults.filters), label="Filter out",
                                               elem_id="filters")
                    show_cameras = gr.Checkbox(defaults.show_cameras, label="Cameras", elem_id="show-cameras")
                    show_structure = gr.Checkbox(defaults.show_structure, label="Structure (floor, walls, planes)",
                                                 elem_id="show-structure")
                    drop_background = gr.Checkbox(defaults.drop_background, label="Hide unassigned points",
                                                  elem_id="drop-background")
                with gr.Tab("Views and instances"):
                    with gr.Row():
                        with gr.Column(scale=1):
                            view_number = gr.Slider(1, 2, value=1, step=1, interactive=False, visible=False,
                                                    label="View (click a pixel to select its instance)",
                                                    elem_id="view-number")
                            click_view = gr.Image(label="Click an object", interactive=False, buttons=[],
                                                  show_label=False, format="jpeg", elem_id="click-view")
                            selection = gr.Markdown(label="Selection", elem_id="selection")
                        with gr.Column(scale=1):
                            instance_list = gr.HTML(label="Instances", elem_id="instances")
                    # JPEG: about 1 ms a picture where WebP (the default) takes 50 ms, a second for 20 views
                    overlays = gr.Gallery(label="Instances in every view (click one to make it the view above)",
                                          columns=6, height=220, object_fit="contain", fit_columns=False,
                                          format="jpeg", allow_preview=False, elem_id="overlays")
                with gr.Tab("Depth"):
                    depth_scale = gr.HTML(elem_id="depth-scale")
                    depths = gr.Gallery(label="Depth maps", columns=6, height=220, object_fit="contain",
                                        fit_columns=False, format="jpeg", elem_id="depths")
                with gr.Tab("Ask"):
                    with gr.Row():
                        question = gr.Textbox(label="Question", placeholder="Where is the red cube?", scale=4,
                                              elem_id="question")
                        ask = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                    with gr.Row():
                        backend = gr.Dropdown(list(BACKEND_CHOICES), value=next(iter(BACKEND_CHOICES)),
                                              label="VLM backend", elem_id="backend")
                        mode = gr.Radio(list(MODES), value="agent", label="Mode", info=MODE_HELP, elem_id="mode")
                    with gr.Row():
                        base_url = gr.Textbox(label="Server URL (OpenAI-compatible)",
                                              placeholder="http://localhost:8000/v1", elem_id="base-url")
                        model_name = gr.Textbox(label="Model name",
                                                placeholder="empty: the one the server serves (OpenAI: gpt-4o)")
                        api_key = gr.Textbox(label="API key (used for your questions only, never stored)",
                                             type="password", elem_id="api-key")
                    with gr.Row():
                        answer = gr.Markdown(label="Answer", elem_id="answer")
                        answer_views = gr.Gallery(label="The answer, highlighted", columns=2, height=320,
                                                  object_fit="contain", elem_id="answer-views")
                    trace = gr.Markdown(label="Trace", elem_id="trace")
                with gr.Tab("Find", elem_id="find-tab"):  # demo/find.py: text search and labels, no VLM
                    find_widgets = find_tab()
                scale_widgets = scale_tab()  # demo/scale.py: two clicks and a length -> metres

        display = [color_mode, conf_percentile, show_cameras, drop_background, geometry, frame, show_structure, filters]

        # -- inputs: one at a time (a new upload, video or example replaces the others) --------------
        files.upload(handlers.new_upload, [files, uploaded], [files, uploaded], api_name=False, queue=False).then(
            lambda: (None, "", gr.update(visible=False)), None, [video, example, video_frames], api_name=False,
            queue=False)
        video.upload(lambda: (None, [], "", gr.update(visible=True)), None, [files, uploaded, example, video_frames],
                     api_name=False, queue=False)
        video.clear(lambda: gr.update(visible=False), None, video_frames, api_name=False, queue=False)
        clear_inputs.click(lambda: (None, [], None, "", gr.update(visible=False)), None,
                           [files, uploaded, video, example, video_frames], api_name=False, queue=False)
        gr.on([files.change, example.change], handlers.preview, [files, example], [previews, unusable],
              api_name=False)

        # -- reconstruction: the page shows a failure as a lasting message and keeps the earlier results;
        # the API endpoint (the same handler, no trigger on the page) raises it to the client instead.
        inputs = [files, video, video_frames, example, clustering, merge, *display, input_size, session]
        # The 3D view and the table are shown first, the pictures right after (`show_pictures`), then the
        # download files are written (`write_downloads`); the API endpoint returns everything at once.
        shown_first = [status, viewer, instance_list, downloads, view_number, selection, frame, answer, trace,
                       answer_views, view_files, session]
        pictures = [overlays, depths, depth_scale, click_view]
        reconstruct = shown_in(0, len(shown_first), "Could not reconstruct:")(handlers.reconstruct)
        # The progress shows on the 3D view only: a tracker on each of the twelve outputs costs the browser
        # about 0.4 CPU s per run (each redraws its timer every frame), time the model then waits for on a
        # small machine (docs/app.md, "Speed").
        progress_on_viewer = {"show_progress_on": [viewer]}

        def then_pictures_and_downloads(event):
            event.then(handlers.show_pictures, session, pictures, api_name=False).then(
                handlers.write_downloads, session, [downloads, status], api_name=False)

        then_pictures_and_downloads(run.click(reconstruct, inputs, shown_first, api_name=False, concurrency_limit=2,
                                              concurrency_id="reconstruct", **progress_on_viewer))
        then_pictures_and_downloads(example_thumbnails.select(
            handlers.pick_example, None, [example, files, video], api_name=False, queue=False).then(
            reconstruct, inputs, shown_first, api_name=False, concurrency_id="reconstruct", **progress_on_viewer))
        gr.on([], handlers.reconstruct_for_api, inputs,
              [status, viewer, overlays, depths, instance_list, downloads, view_number, click_view, selection, frame,
               depth_scale, answer, trace, answer_views, view_files, session],
              api_name="reconstruct", concurrency_id="reconstruct")
        recluster_outputs = [status, viewer, overlays, instance_list, downloads, click_view, selection, view_number,
                             answer, trace, answer_views, session]
        gr.on([clustering.input, merge.release],
              shown_in(0, len(recluster_outputs), "Could not cluster:")(handlers.recluster),
              [clustering, merge, *display, session], recluster_outputs, api_name=False,
              concurrency_id="reconstruct", **progress_on_viewer).then(
            handlers.write_downloads, session, [downloads, status], api_name=False)

        # -- what the 3D view shows: display changes re-render it only (the slider when let go) ----------
        for trigger in (color_mode.input, geometry.input, frame.input, filters.input, show_cameras.input,
                        show_structure.input, drop_background.input, conf_percentile.release):
            trigger(handlers.rerender, [*display, session], viewer, api_name=False)
        export_view.click(handlers.export_view, [*display, session], view_files, api_name=False)

        # -- selection: a click on a view or on a point of the 3D view; a thumbnail picks the view ------
        view_number.change(handlers.show_view, [view_number, session], click_view, api_name=False)
        overlays.select(handlers.pick_view, None, view_number, api_name=False, queue=False)
        click_outputs = [selection, viewer, overlays, instance_list, click_view, session]
        selecting = [view_number, *display, session]
        click_view.select(shown_in(0, len(click_outputs), "Could not select:")(handlers.click), selecting,
                          click_outputs, api_name=False)
        viewer.select(shown_in(0, len(click_outputs), "Could not select:")(handlers.click_3d), selecting,
                      click_outputs, api_name=False)
        clear_selection.click(handlers.clear_selection, selecting, click_outputs, api_name=False)

        # -- questions -----------------------------------------------------------------------------------
        ask_inputs = [question, backend, base_url, model_name, api_key, mode, *display, session]
        ask_outputs = [answer, viewer, overlays, instance_list, trace, answer_views, session]
        gr.on([ask.click, question.submit], shown_in(0, len(ask_outputs), "No answer:")(handlers.ask), ask_inputs,
              ask_outputs, api_name=False, concurrency_limit=4, concurrency_id="ask").success(
            handlers.show_view, [view_number, session], click_view, api_name=False)
        gr.on([], handlers.ask, ask_inputs, ask_outputs, api_name="ask", concurrency_id="ask")
        wire_find(find_widgets, handlers, display, session, viewer, overlays, instance_list, downloads, status,
                  view_number, click_view)
        wire_scale(scale_widgets, handlers, session, instance_list, depth_scale, downloads, status)
    return demo
