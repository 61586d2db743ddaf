"""The page layout: widgets and how their events are wired to `demo.handlers`.

Two events are public API endpoints (``/reconstruct`` and ``/ask``, usable with
`gradio_client`); every other event is internal to the page.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from demo.handlers import CLUSTERING_CHOICES, COLOR_MODES, Display, Handlers, Limits
from demo.services import BACKENDS, REPO_ROOT, ModelService
from demo.session import close_session
from grounding.agent import MODES
from iggt.views import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
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
                video = gr.Video(label="...or a video", sources=["upload"], height=160, elem_id="video")
                video_frames = gr.Slider(2, limits.max_video_frames, value=min(12, limits.max_video_frames), step=1,
                                         label="Frames sampled from the video")
                example = gr.Dropdown(["", *examples], value="", label="...or an example scene", elem_id="example")
                clustering = gr.Radio(list(CLUSTERING_CHOICES), value=models.info.clustering,
                                      label="Instance granularity (clustering preset)")
                run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
                status = gr.Markdown(label="Status", elem_id="status")
                downloads = gr.File(label="Downloads: GLB, PLY, masks, COLMAP model, scene file",
                                    file_count="multiple", interactive=False, elem_id="downloads")
            with gr.Column(scale=3):
                viewer = gr.Model3D(label="3D scene", height=420, elem_id="viewer")
                with gr.Row():
                    color_mode = gr.Radio(list(COLOR_MODES), value=defaults.color_mode, label="Colours")
                    conf_percentile = gr.Slider(0, 90, value=defaults.conf_percentile, step=1,
                                                label="Drop lowest-confidence %")
                    show_cameras = gr.Checkbox(defaults.show_cameras, label="Cameras")
                    drop_background = gr.Checkbox(defaults.drop_background, label="Hide background")
                with gr.Tab("Views and instances"):
                    with gr.Row():
                        with gr.Column(scale=1):
                            view_number = gr.Slider(1, 2, value=1, step=1, interactive=False,
                                                    label="View (click a pixel to select its instance)")
                            click_view = gr.Image(label="Click an object", interactive=False, buttons=[],
                                                  show_label=False, elem_id="click-view")
                            selection = gr.Markdown(label="Selection", elem_id="selection")
                        with gr.Column(scale=1):
                            instance_list = gr.HTML(label="Instances", elem_id="instances")
                    overlays = gr.Gallery(label="Instances in every view", columns=6, height=220, elem_id="overlays")
                with gr.Tab("Depth"):
                    depths = gr.Gallery(label="Depth maps", columns=6, height=220, elem_id="depths")
                with gr.Tab("Ask"):
                    with gr.Row():
                        question = gr.Textbox(label="Question", placeholder="Where is the red cube?", scale=4,
                                              elem_id="question")
                        ask = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                    with gr.Row():
                        backend = gr.Dropdown(list(BACKENDS), value=next(iter(BACKENDS)), label="VLM backend",
                                              elem_id="backend")
                        mode = gr.Radio(list(MODES), value="agent", label="Mode")
                    with gr.Row():
                        base_url = gr.Textbox(label="Server URL (OpenAI-compatible)",
                                              placeholder="http://localhost:8000/v1", elem_id="base-url")
                        model_name = gr.Textbox(label="Model name",
                                                placeholder="gpt-4o / Qwen/Qwen2.5-VL-7B-Instruct")
                        api_key = gr.Textbox(label="API key (used for your questions only, never stored)",
                                             type="password", elem_id="api-key")
                    answer = gr.Markdown(label="Answer", elem_id="answer")
                    trace = gr.Markdown(label="Trace", elem_id="trace")

        display = [color_mode, conf_percentile, show_cameras, drop_background]
        # One input at a time: a new upload or example replaces the others.
        files.upload(lambda: (None, ""), None, [video, example], api_name=False, queue=False)
        video.upload(lambda: (None, ""), None, [files, example], api_name=False, queue=False)
        example.input(lambda: (None, None), None, [files, video], api_name=False, queue=False)

        run.click(handlers.reconstruct, [files, video, video_frames, example, clustering, *display, session],
                  [status, viewer, overlays, depths, instance_list, downloads, view_number, click_view, selection,
                   session], api_name="reconstruct", concurrency_limit=2)
        # Display changes re-render the 3D view only (the slider when let go, not at every step).
        for trigger in (color_mode.input, show_cameras.input, drop_background.input, conf_percentile.release):
            trigger(handlers.rerender, [*display, session], viewer, api_name=False)
        view_number.change(handlers.show_view, [view_number, session], click_view, api_name=False)
        click_view.select(handlers.click, [view_number, *display, session],
                          [selection, viewer, overlays, instance_list, click_view, session], api_name=False)
        ask_inputs = [question, backend, base_url, model_name, api_key, mode, *display, session]
        ask_outputs = [answer, viewer, overlays, instance_list, trace, session]
        for trigger, name in ((ask.click, "ask"), (question.submit, False)):
            trigger(handlers.ask, ask_inputs, ask_outputs, api_name=name, concurrency_limit=4).success(
                handlers.show_view, [view_number, session], click_view, api_name=False)
    return demo
