"""The page layout: widgets and how their events are wired to `demo.handlers`.

Two events are public API endpoints (``/reconstruct`` and ``/ask``, usable with
`gradio_client`); every other event is internal to the page. The page's own Reconstruct and Ask
events run the same handlers but show a failure as a lasting message in place (`shown_in`); the
API endpoints, which no widget triggers, raise it to the client.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.handlers import (ALL_FRAMES, CLUSTERING_CHOICES, COLOR_MODES, FILTERS, GEOMETRIES, Display, Handlers, Limits,
                           shown_in)
from demo.services import BACKEND_CHOICES, REPO_ROOT, ModelService
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
Upload several photos of one scene (or a video), reconstruct it, look at it in 3D with every object
as one instance across all views, click an object to select it, and ask questions in plain language."""


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
        gr.Markdown(INTRO)
        gr.Markdown(models.info.banner(), elem_id="model-banner")

        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                files = gr.File(label=f"Photos (JPEG, PNG, HEIC, WebP, ...; up to {limits.max_views})",
                                file_count="multiple", file_types=[*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS],
                                height=160, elem_id="upload")
                previews = gr.Gallery(label="Photos to reconstruct", visible=False, columns=2, height=240,
                                      object_fit="contain", fit_columns=False, elem_id="inputs-preview")
                unusable = gr.Markdown(elem_id="inputs-note")
                video = gr.Video(label="...or a video", sources=["upload"], height=160, elem_id="video")
                video_frames = gr.Slider(2, limits.max_video_frames, value=min(12, limits.max_video_frames), step=1,
                                         label="Frames sampled from the video")
                example = gr.Dropdown(["", *examples], value="", label="...or an example scene", elem_id="example")
                clustering = gr.Radio(list(CLUSTERING_CHOICES), value=models.info.clustering,
                                      label="Instance granularity (clustering preset)")
                sizes = models.size_choices()
                input_size = gr.Radio(list(sizes.items()), value=models.load().size,
                                      label="Input size (long side of what the model sees)",
                                      info="Larger: finer depth and masks, slower (the status shows the "
                                           "model's time); masks are always shown at the photos' resolution.",
                                      elem_id="input-size")
                run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
                status = gr.Markdown(label="Status", elem_id="status")
                downloads = gr.File(label="Downloads: GLB, PLY, masks, COLMAP model, scene file",
                                    file_count="multiple", interactive=False, elem_id="downloads")
            with gr.Column(scale=3):
                viewer = viewer_component(elem_id="viewer")
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
                            view_number = gr.Slider(1, 2, value=1, step=1, interactive=False,
                                                    label="View (click a pixel to select its instance)",
                                                    elem_id="view-number")
                            click_view = gr.Image(label="Click an object", interactive=False, buttons=[],
                                                  show_label=False, format="jpeg", elem_id="click-view")
                            selection = gr.Markdown(label="Selection", elem_id="selection")
                        with gr.Column(scale=1):
                            instance_list = gr.HTML(label="Instances", elem_id="instances")
                    # JPEG: about 1 ms a picture where WebP (the default) takes 50 ms, a second for 20 views
                    overlays = gr.Gallery(label="Instances in every view", columns=6, height=220, object_fit="contain",
                                          fit_columns=False, format="jpeg", elem_id="overlays")
                with gr.Tab("Depth"):
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

        display = [color_mode, conf_percentile, show_cameras, drop_background, geometry, frame, show_structure, filters]
        # One input at a time: a new upload or example replaces the others.
        files.upload(lambda: (None, ""), None, [video, example], api_name=False, queue=False)
        video.upload(lambda: (None, ""), None, [files, example], api_name=False, queue=False)
        example.input(lambda: (None, None), None, [files, video], api_name=False, queue=False)
        gr.on([files.change, example.change], handlers.preview, [files, example], [previews, unusable],
              api_name=False)

        # The page shows a failure as a lasting message and keeps the earlier results; the API endpoints
        # (the same handlers, no trigger on the page) raise it to the client instead.
        inputs = [files, video, video_frames, example, clustering, *display, input_size, session]
        outputs = [status, viewer, overlays, depths, instance_list, downloads, view_number, click_view, selection,
                   frame, session]
        # The result is shown first; the download files are written right after (`write_downloads`).
        run.click(shown_in(0, len(outputs), "Could not reconstruct:")(handlers.reconstruct), inputs, outputs,
                  api_name=False, concurrency_limit=2, concurrency_id="reconstruct").then(
            handlers.write_downloads, session, [downloads, status], api_name=False)
        gr.on([], handlers.reconstruct_for_api, inputs, outputs, api_name="reconstruct",
              concurrency_id="reconstruct")
        # Display changes re-render the 3D view only (the slider when let go, not at every step).
        for trigger in (color_mode.input, geometry.input, frame.input, filters.input, show_cameras.input,
                        show_structure.input, drop_background.input, conf_percentile.release):
            trigger(handlers.rerender, [*display, session], viewer, api_name=False)
        view_number.change(handlers.show_view, [view_number, session], click_view, api_name=False)
        click_outputs = [selection, viewer, overlays, instance_list, click_view, session]
        click_view.select(shown_in(0, len(click_outputs), "Could not select:")(handlers.click),
                          [view_number, *display, session], click_outputs, api_name=False)
        ask_inputs = [question, backend, base_url, model_name, api_key, mode, *display, session]
        ask_outputs = [answer, viewer, overlays, instance_list, trace, answer_views, session]
        gr.on([ask.click, question.submit], shown_in(0, len(ask_outputs), "No answer:")(handlers.ask), ask_inputs,
              ask_outputs, api_name=False, concurrency_limit=4, concurrency_id="ask").success(
            handlers.show_view, [view_number, session], click_view, api_name=False)
        gr.on([], handlers.ask, ask_inputs, ask_outputs, api_name="ask", concurrency_id="ask")
    return demo
