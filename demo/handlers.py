"""Event handlers of the page: each turns widget values into library calls and back into widget values.

No model, clustering or VLM logic lives here: that is `iggt` and `grounding`. Every handler
turns failures into a readable `gr.Error`; unexpected errors are logged on the server and
shown as a short message, never as a stack trace or a server path.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from demo.pictures import depth_pictures, instance_table, trace_markdown, view_overlays
from demo.services import ModelService, VLMService
from demo.session import Session
from grounding.agent import MODES, answer
from iggt.export import export_all, export_glb
from iggt.instances import ClusteringConfig, segment_instances
from iggt.views import InputError, load_views

log = logging.getLogger(__name__)

COLOR_MODES = {"RGB": "rgb", "Instances": "instance", "Feature PCA": "pca"}
CLUSTERING_CHOICES = ("small", "medium", "large", "none")
CLICK_VIEW_SIDE = 448
_DIRECTORIES = re.compile(r"(?<![\w:/.\-])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"`]+)+[\\/]")
"""Directory part of an absolute path inside a message (the file name after it is kept)."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_views: int = 32
    max_video_frames: int = 32
    max_upload_mb: int = 50


@dataclass(frozen=True)
class Display:
    """How the 3D view is drawn; changing it re-renders the scene without running the model."""

    color_mode: str = "Instances"
    conf_percentile: float = 2.0
    show_cameras: bool = True
    drop_background: bool = True

    @classmethod
    def from_widgets(cls, color_mode, conf_percentile, show_cameras, drop_background) -> "Display":
        if color_mode not in COLOR_MODES:
            raise InputError(f"Unknown colouring '{color_mode}': choose one of {', '.join(COLOR_MODES)}.")
        return cls(color_mode, float(np.clip(float(conf_percentile or 0), 0, 99)), bool(show_cameras),
                   bool(drop_background))


def click_view_factor(image_size: tuple[int, int]) -> int:
    """How many times the clickable view is enlarged: its long side reaches about `CLICK_VIEW_SIDE` pixels."""
    return max(1, round(CLICK_VIEW_SIDE / max(image_size)))


def without_paths(message: str) -> str:
    """The message with directories of absolute paths removed, so no server path reaches the page."""
    return _DIRECTORIES.sub("", message)


def _shown(message: str) -> gr.Error:
    """An error the page shows as it is; the user's mistakes put no stack trace into the server log."""
    return gr.Error(without_paths(message), print_exception=False)


def user_errors(handler: Callable) -> Callable:
    """Show known failures as their message and unknown ones as a short notice (details in the log)."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as err:
            raise _shown(str(err.message)) from None
        except (InputError, ValueError) as err:
            raise _shown(str(err)) from None
        except Exception:
            log.exception("handler %s failed", handler.__name__)
            raise _shown("Something went wrong on the server while doing this. Please try again.") from None

    return wrapper


def _need_scene(session: Session | None) -> Session:
    if session is None or session.scene is None:
        raise gr.Error("Reconstruct a scene first.")
    return session


class Handlers:
    """The app's behaviour, bound to one shared model service and the bundled examples."""

    def __init__(self, models: ModelService, examples: dict[str, list[Path]], limits: Limits = Limits(),
                 vlms: VLMService | None = None):
        self.models = models
        self.vlms = vlms or VLMService()
        self.examples = examples
        self.limits = limits

    # -- reconstruction ------------------------------------------------------------------
    def _input_paths(self, files: list[str] | None, video: str | None, example: str | None) -> list[str]:
        given = [name for name, value in (("photos", files), ("a video", video), ("an example", example)) if value]
        if not given:
            raise InputError("Upload some photos or a video, or pick an example scene.")
        if len(given) > 1:
            raise InputError(f"Give one input only: you gave {' and '.join(given)}.")
        if example:
            if example not in self.examples:
                raise InputError(f"Unknown example scene '{example}'.")
            return [str(p) for p in self.examples[example]]
        paths = [video] if video else list(files)
        if len(paths) > self.limits.max_views:
            raise InputError(f"Too many photos: {len(paths)} given, at most {self.limits.max_views} allowed.")
        too_big = [Path(p).name for p in paths if Path(p).stat().st_size > self.limits.max_upload_mb * 2**20]
        if too_big:
            raise InputError(f"{too_big[0]} is larger than {self.limits.max_upload_mb} MB.")
        return paths

    @user_errors
    def reconstruct(self, files, video, video_frames, example, clustering, color_mode, conf_percentile,
                    show_cameras, drop_background, session: Session | None, progress=gr.Progress()):
        """Photos, a video or an example scene -> 3D scene, instances, pictures and downloads."""
        paths = self._input_paths(files, video, example)
        if clustering not in CLUSTERING_CHOICES:
            raise InputError(f"Unknown clustering preset '{clustering}': choose one of "
                             f"{', '.join(CLUSTERING_CHOICES)}.")
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background)
        session = session or Session()
        timings: dict[str, float] = {}

        progress(0.0, desc="Loading the views")
        start = time.perf_counter()
        views = load_views(paths, max_views=self.limits.max_views,
                           max_frames=int(np.clip(int(video_frames or 12), 1, self.limits.max_video_frames)))
        timings["loading"] = time.perf_counter() - start

        progress(0.1, desc=f"Running the model on {len(views)} views")
        start = time.perf_counter()
        scene = self.models.reconstruct(views, progress=lambda f, msg: progress(0.1 + 0.6 * f, desc=f"Model: {msg}"))
        timings["model"] = time.perf_counter() - start

        progress(0.7, desc="Clustering instances")
        start = time.perf_counter()
        if clustering != "none":
            scene = scene.with_instances(segment_instances(scene, ClusteringConfig.from_preset(clustering)))
        timings["clustering"] = time.perf_counter() - start

        progress(0.85, desc="Exporting (3D view, pictures, downloads)")
        start = time.perf_counter()
        session.new_scene(scene)
        glb, overlays, depths, table = self._render_all(session, display)
        downloads = self._downloads(session)
        timings["export"] = time.perf_counter() - start
        session.timings = timings
        return (self._status(session), glb, overlays, depths, table, downloads,
                gr.update(maximum=max(scene.num_views, 2), value=1, interactive=scene.num_views > 1),
                self._view_picture(session, 0), "", session)

    def _status(self, session: Session) -> str:
        scene = session.scene
        found = (f"**{scene.instances.count} instances**" if scene.instances is not None
                 else "instances not clustered")
        stages = " · ".join(f"{name} {seconds:.1f} s" for name, seconds in session.timings.items())
        return (f"Done: **{scene.num_views} views** at {scene.image_size[1]}x{scene.image_size[0]} px, {found}. "
                f"Time: {stages} (total {sum(session.timings.values()):.1f} s). Model: {self.models.info.title}.")

    def _render_all(self, session: Session, display: Display):
        """The 3D view, the overlay and depth galleries and the instance table for the current state."""
        scene = session.scene
        has_instances = scene.instances is not None
        color_mode = COLOR_MODES[display.color_mode]
        if color_mode == "instance" and not has_instances:
            color_mode = "rgb"
        glb = export_glb(scene, session.output_dir("viewer") / "scene.glb", color_mode=color_mode,
                         conf_percentile=display.conf_percentile, show_cameras=display.show_cameras,
                         drop_background=display.drop_background and has_instances,
                         highlight=session.highlighted or None)
        names = scene.view_names or [f"view {i + 1}" for i in range(scene.num_views)]
        overlays = [(picture, f"{i + 1}: {name}") for i, (picture, name) in
                    enumerate(zip(self._view_pictures(session), names))]
        depths = [(picture, f"{i + 1}: {name}") for i, (picture, name) in
                  enumerate(zip(depth_pictures(scene), names))]
        return str(glb), overlays, depths, instance_table(scene, session.highlighted)

    @staticmethod
    def _view_pictures(session: Session) -> list[np.ndarray]:
        """Every view with its instances (only the highlighted ones when any), or the plain photos."""
        scene = session.scene
        if scene.instances is None:
            return [np.round(np.clip(image, 0, 1) * 255).astype(np.uint8) for image in scene.images]
        return view_overlays(scene, session.highlighted or None)

    def _view_picture(self, session: Session, index: int) -> np.ndarray:
        """One view for clicking, enlarged by a whole factor so small model inputs are easy to hit."""
        picture = self._view_pictures(session)[index]
        factor = click_view_factor(session.scene.image_size)
        return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)

    def _downloads(self, session: Session) -> list[str]:
        out = session.output_dir("downloads")
        formats = ("glb", "ply", "masks", "json", "colmap", "scene")
        if session.scene.instances is None:
            formats = tuple(f for f in formats if f != "masks")
        written = export_all(session.scene, out, formats=formats)
        files = []
        for path in written.values():
            path = Path(path)
            if path.is_dir():  # folders (masks, COLMAP model) travel as one zip each
                path = Path(shutil.make_archive(str(path), "zip", root_dir=path))
            files.append(str(path))
        return files

    @user_errors
    def rerender(self, color_mode, conf_percentile, show_cameras, drop_background, session: Session | None):
        """New 3D view with other display options, without running the model again."""
        if session is None or session.scene is None:
            return gr.skip()
        glb, *_ = self._render_all(session, Display.from_widgets(color_mode, conf_percentile, show_cameras,
                                                                 drop_background))
        return glb

    # -- selection -----------------------------------------------------------------------
    def _view_index(self, session: Session, view_number) -> int:
        return int(np.clip(int(view_number or 1) - 1, 0, session.scene.num_views - 1))

    @user_errors
    def show_view(self, view_number, session: Session | None):
        """The view to click on, with the current selection drawn."""
        if session is None or session.scene is None:
            return gr.skip()
        return self._view_picture(session, self._view_index(session, view_number))

    @user_errors
    def click(self, view_number, color_mode, conf_percentile, show_cameras, drop_background,
              session: Session | None, evt: gr.SelectData):
        """A click on a view selects the instance under the pointer in every view and in 3D."""
        session = _need_scene(session)
        scene = session.scene
        if scene.instances is None:
            raise gr.Error("This scene has no instances (clustering was off).")
        view = self._view_index(session, view_number)
        height, width = scene.image_size
        factor = click_view_factor(scene.image_size)
        x, y = (int(v) // factor for v in evt.index)
        label = int(scene.instances.labels[view, np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)])
        session.highlighted = [label] if label >= 0 else []
        if label >= 0:
            info = scene.instances.info[label]
            message = (f"Selected instance **{label}**" + (f" ({info.name})" if info.name else "")
                       + f", seen in {len(info.views)} of {scene.num_views} views.")
        else:
            message = "That pixel belongs to no instance: selection cleared."
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background)
        glb, overlays, _, table = self._render_all(session, display)
        return message, glb, overlays, table, self._view_picture(session, view), session

    # -- questions -----------------------------------------------------------------------
    @user_errors
    def ask(self, question, backend_choice, base_url, model_name, api_key, mode, color_mode, conf_percentile,
            show_cameras, drop_background, session: Session | None, progress=gr.Progress()):
        """Answer a question with the chosen VLM; highlight the instances the answer refers to."""
        session = _need_scene(session)
        if not (question or "").strip():
            raise gr.Error("Type a question first.")
        if session.scene.instances is None or session.scene.instances.count == 0:
            raise gr.Error("This scene has no instances to ask about.")
        if mode not in MODES:
            raise gr.Error(f"Unknown mode '{mode}': choose one of {', '.join(MODES)}.")
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background)
        progress(0.0, desc="Connecting to the VLM")
        backend = self.vlms.backend(backend_choice, base_url=(base_url or "").strip() or None,
                                    model=(model_name or "").strip() or None, api_key=(api_key or "").strip() or None)
        result = answer(session.scene, question, backend, mode=mode,
                        progress=lambda f, msg: progress(0.05 + 0.9 * f, desc=f"Grounding: {msg}"))
        if any(step.kind == "naming" and not step.detail.get("notes") for step in result.trace):
            session.scene = result.scene  # the agent named every instance: show the names in the table
        session.highlighted = list(result.instance_ids)
        glb, overlays, _, table = self._render_all(session, display)
        ids = ", ".join(str(i) for i in result.instance_ids) or "none"
        failed = sum(step.kind == "error" for step in result.trace)
        warning = (f"\n\n⚠️ {failed} request(s) to the VLM failed (see the trace): the answer may be incomplete."
                   if failed else "")
        return (f"**{result.text}**\n\nInstances: {ids}{warning}", glb, overlays, table, trace_markdown(result),
                session)
