"""Event handlers of the page: each turns widget values into library calls and back into widget values.

No model, clustering or VLM logic lives here: that is `iggt` and `grounding`. Every handler
turns failures into a readable `gr.Error` (`user_errors`: the project's `IGGTError`s as their
message; anything else logged with its traceback and shown as a software fault, never as a
stack trace or a server path); `shown_in` turns that error into a lasting message on the page.
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

from demo.pictures import (answer_markdown, answer_pictures, depth_pictures, depth_scale, input_previews,
                           instance_table, trace_markdown)
from demo.services import ModelService, VLMService
from demo.session import Session
from demo.viewer3d import viewer_value
from grounding.agent import MODES, answer
from iggt.errors import IGGTError
from iggt.export import PointCloudOptions, export_all, glb_scene, write_ply
from iggt.instances import ClusteringConfig, segment_instances
from iggt.merge import merge_small_instances
from iggt.reconstruct import parameter_millions
from iggt.scene import Scene
from iggt.structure import mark_structure
from iggt.views import InputError, load_views

log = logging.getLogger(__name__)

COLOR_MODES = {"RGB": "rgb", "Instances": "instance", "Feature PCA": "pca"}
GEOMETRIES = {"Depth + cameras": "depth", "Point map": "points"}
"""VGGT's prediction modes: depth unprojected with the predicted cameras, or the point-map branch."""
ALL_FRAMES = "All"
FILTERS = ("Black background", "White background", "Sky")
CLUSTERING_CHOICES = (*ClusteringConfig.PRESETS, "none")
CLUSTERING_HELP = ("small: finest pieces; medium: the released demo's; large: coarser, neighbours may join; "
                   "none: geometry only. A change re-clusters the scene shown, without the model.")
MERGE_HELP = "Smaller pieces join the neighbour they touch most (0: off); real photos split into fragments."
DEFAULT_MERGE_PERCENT = 0.0
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
    geometry: str = next(iter(GEOMETRIES))
    frame: str = ALL_FRAMES
    """`ALL_FRAMES`, or one view as "N" or "N: name" (N from 1)."""
    show_structure: bool = True
    filters: tuple[str, ...] = ()

    @classmethod
    def from_widgets(cls, color_mode, conf_percentile, show_cameras, drop_background, geometry=None, frame=None,
                     show_structure=True, filters=()) -> "Display":
        if color_mode not in COLOR_MODES:
            raise InputError(f"Unknown colouring '{color_mode}': choose one of {', '.join(COLOR_MODES)}.")
        geometry = geometry or cls.geometry
        if geometry not in GEOMETRIES:
            raise InputError(f"Unknown prediction mode '{geometry}': choose one of {', '.join(GEOMETRIES)}.")
        unknown = [f for f in filters or () if f not in FILTERS]
        if unknown:
            raise InputError(f"Unknown filter '{unknown[0]}': choose from {', '.join(FILTERS)}.")
        frame = str(frame or ALL_FRAMES)
        if frame != ALL_FRAMES and not re.match(r"\d+(:|$)", frame):
            raise InputError(f"Unknown frame '{frame}': choose {ALL_FRAMES} or a view number.")
        return cls(color_mode, float(np.clip(float(conf_percentile or 0), 0, 99)), bool(show_cameras),
                   bool(drop_background), geometry, frame, bool(show_structure), tuple(filters or ()))

    def options(self, scene: Scene, highlight: list[int]) -> PointCloudOptions:
        """The point selection this display asks for."""
        has_instances = scene.instances is not None
        color_mode = COLOR_MODES[self.color_mode]
        if color_mode == "instance" and not has_instances:
            color_mode = "rgb"
        views = None
        if self.frame != ALL_FRAMES:
            views = [int(np.clip(int(self.frame.split(":")[0]) - 1, 0, scene.num_views - 1))]
        return PointCloudOptions(color_mode=color_mode, geometry=GEOMETRIES[self.geometry],
                                 conf_percentile=self.conf_percentile,
                                 drop_background=self.drop_background and has_instances,
                                 drop_structure=not self.show_structure, views=views, highlight=highlight or None,
                                 drop_black=FILTERS[0] in self.filters, drop_white=FILTERS[1] in self.filters,
                                 drop_sky=FILTERS[2] in self.filters)


def without_paths(message: str) -> str:
    """The message with directories of absolute paths removed, so no server path reaches the page."""
    return _DIRECTORIES.sub("", message)


def _shown(message: str) -> gr.Error:
    """An error the page shows as it is; the user's mistakes put no stack trace into the server log."""
    return gr.Error(without_paths(message), print_exception=False)


SOFTWARE_FAULT = ("The app failed on its side: this is a fault of the software, not of your input. "
                  "The details are in the server log.")


def user_errors(handler: Callable) -> Callable:
    """The error boundary: the project's own errors (`IGGTError`, about the user's input or settings)
    are shown as their message; anything else is a bug, logged with its traceback and shown as one
    short line that says so."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as err:
            raise _shown(str(err.message)) from None
        except IGGTError as err:
            raise _shown(str(err)) from None
        except Exception:
            log.exception("handler %s failed", handler.__name__)
            raise _shown(SOFTWARE_FAULT) from None

    return wrapper


def shown_in(slot: int, outputs: int, heading: str) -> Callable[[Callable], Callable]:
    """For the page: a handler whose failure becomes a lasting message in output ``slot`` (the status
    or the answer) while every other output keeps what it showed, instead of a toast that fades and
    "Error" badges over every panel. The API endpoints keep raising, so clients get an exception."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except gr.Error as err:
                values = [gr.skip()] * outputs
                values[slot] = f"⚠️ **{heading}** {err.message}"
                return tuple(values)

        return wrapper

    return decorate


def _need_scene(session: Session | None) -> Session:
    if session is None or session.scene is None:
        raise gr.Error("Reconstruct a scene first.")
    return session


def _with_instances(session: Session | None) -> Session:
    session = _need_scene(session)
    if session.scene.instances is None:
        raise gr.Error("This scene has no instances (clustering was off).")
    return session


def _captioned(scene: Scene, pictures: list) -> list[tuple]:
    """A gallery's items: (picture, "N: name") per view."""
    names = scene.view_names or [f"view {i + 1}" for i in range(scene.num_views)]
    return [(picture, f"{i + 1}: {name}") for i, (picture, name) in enumerate(zip(pictures, names))]


def _checked_clustering(clustering: str) -> str:
    if clustering not in CLUSTERING_CHOICES:
        raise InputError(f"Unknown clustering preset '{clustering}': choose one of {', '.join(CLUSTERING_CHOICES)}.")
    return clustering


def _clustered(scene: Scene, clustering: str, merge_percent) -> Scene:
    """The scene with instances of the preset, small pieces merged, structure marked ("none": as it is)."""
    if clustering == "none":
        return scene
    scene = scene.with_instances(segment_instances(scene, ClusteringConfig.from_preset(clustering)))
    share = float(np.clip(float(merge_percent or 0), 0, 100)) / 100
    if share > 0:
        scene = scene.with_instances(merge_small_instances(scene, share))
    return scene.with_instances(mark_structure(scene))


def _clustering_note(clustering: str, merge_percent) -> str:
    """What the status says about the clustering used."""
    if clustering == "none":
        return "clustering off"
    merge = float(merge_percent or 0)
    return f"clustering {clustering}" + (f", pieces under {merge:g} % merged" if merge > 0 else "")


WARM_UP_EXAMPLE = "real-room-6-views"
"""The bundled example `warm_up` runs: six 4:3 photos, the shape of most cameras' (the model's first-call
set-up is per input shape, and its heads take four views at a time)."""
WARM_UP_MAX_CPU_MILLIONS = 100
"""Larger models are not warmed up on a CPU: their run takes minutes (the 1B model), which the start
would wait for, and their one-time costs are small beside a run."""


def warm_up(models: ModelService, examples: dict[str, list[Path]]) -> None:
    """Reconstruct and cluster a bundled example once, unseen, before the app opens: the first run in a
    process pays one-time costs (importing the clustering's libraries, the model's first-call set-up),
    1.1 s and 1.3 s with the shipped model on a CPU, which would otherwise fall on the first person's run.
    A failure is logged and the app starts all the same (the warm-up only saves time)."""
    paths = examples.get(WARM_UP_EXAMPLE) or next(iter(examples.values()), None)
    if not paths:
        return
    reconstructor = models.load()
    if reconstructor.device.type == "cpu" and parameter_millions(reconstructor.model) > WARM_UP_MAX_CPU_MILLIONS:
        return
    start = time.perf_counter()
    try:
        _clustered(models.reconstruct(load_views([str(path) for path in paths])), models.info.clustering,
                   DEFAULT_MERGE_PERCENT)
    except Exception:  # anything: the app works without it
        log.exception("the warm-up run failed; the app starts without it")
        return
    log.info("warmed up on %d photos in %.1f s", len(paths), time.perf_counter() - start)


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
    def preview(self, files: list[str] | None, example: str | None):
        """Thumbnails of the chosen photos (or example) before reconstructing, with their count, and a
        note under them naming each file that is not a usable photo and why (its tile comes first)."""
        paths = list(files or []) or [str(p) for p in self.examples.get(example or "", [])]
        if not paths:
            return gr.update(value=None, visible=False), ""
        tiles, reasons = input_previews(paths)
        tiles = [(picture, without_paths(caption)) for picture, caption in tiles]
        usable = len(paths) - len(reasons)  # a file flagged as unusable is not counted as a photo
        label = f"{usable} photo" + ("" if usable == 1 else "s") + " to reconstruct"
        if reasons:
            label += f" ({len(reasons)} unusable file" + ("s" if len(reasons) > 1 else "") + ")"
        note = "".join(f"⚠️ {without_paths(reason)}.  \n" for reason in reasons)
        if reasons:
            note += "Remove " + ("it" if len(reasons) == 1 else "them") + " before reconstructing."
        return gr.update(value=tiles, label=label, visible=True), note

    @staticmethod
    def new_upload(files: list[str] | None, previous: list[str] | None):
        """A new upload replaces the photos chosen before (the file box itself would add them to the list)."""
        fresh = [f for f in files or [] if f not in set(previous or [])] or list(files or [])
        return fresh, fresh

    def pick_example(self, evt: gr.SelectData):
        """A click on an example's thumbnail chooses it (and drops uploaded photos and video)."""
        names = list(self.examples)
        return names[int(np.clip(evt.index, 0, len(names) - 1))], None, None

    def example_thumbnails(self) -> list[tuple[str, str]]:
        """The first photo of each bundled example, captioned with its name."""
        return [(str(paths[0]), name) for name, paths in self.examples.items()]

    @user_errors
    def reconstruct(self, files, video, video_frames, example, clustering, merge_percent, color_mode,
                    conf_percentile, show_cameras, drop_background, geometry, frame, show_structure, filters,
                    input_size, session: Session | None, progress=gr.Progress()):
        """Photos, a video or an example scene -> 3D scene, instances, pictures and downloads.

        Everything of the scene before is reset: the answer, its pictures and trace, the selection."""
        paths = self._input_paths(files, video, example)
        clustering = _checked_clustering(clustering)
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        session = session or Session()
        timings: dict[str, float] = {}

        progress(0.0, desc="Loading the views")
        start = time.perf_counter()
        views = load_views(paths, max_views=self.limits.max_views,
                           max_frames=int(np.clip(int(video_frames or 12), 1, self.limits.max_video_frames)))
        timings["loading"] = time.perf_counter() - start

        progress(0.1, desc=f"Running the model on {len(views)} views")
        start = time.perf_counter()
        scene = self.models.reconstruct(views, progress=lambda f, msg: progress(0.1 + 0.6 * f, desc=f"Model: {msg}"),
                                        size=self.models.checked_size(input_size))
        timings["model"] = time.perf_counter() - start

        progress(0.7, desc="Clustering instances")
        start = time.perf_counter()
        scene = _clustered(scene, clustering, merge_percent)
        timings["clustering"] = time.perf_counter() - start

        progress(0.85, desc="Drawing the 3D view")
        start = time.perf_counter()
        session.new_scene(scene, [view.image for view in views])
        session.clustering = _clustering_note(clustering, merge_percent)
        viewer = self._viewer(session, display)
        timings["display"] = time.perf_counter() - start
        session.timings = timings
        names = scene.view_names or [""] * scene.num_views
        frames = [(f"{i + 1}: {name}", str(i + 1)) for i, name in enumerate(names)]  # shown, sent
        return (self._status(session, "preparing the pictures and downloads…"), viewer, instance_table(scene),
                None, gr.update(maximum=max(scene.num_views, 2), value=1, interactive=scene.num_views > 1,
                                visible=scene.num_views > 1),
                "", gr.update(choices=[(ALL_FRAMES, ALL_FRAMES), *frames], value=ALL_FRAMES),
                "", "", None, gr.update(value=None, visible=False), session)

    @user_errors
    def show_pictures(self, session: Session | None):
        """Right after the 3D view: the views with their instances, the depth maps and their colour scale,
        and the view to click on (the 3D view is drawn meanwhile)."""
        if session is None or session.scene is None or not session.downloads_pending:
            return (gr.skip(),) * 4
        start = time.perf_counter()
        overlays, depths = self._overlays(session), _captioned(session.scene, depth_pictures(session.scene))
        session.timings["pictures"] = time.perf_counter() - start
        return overlays, depths, depth_scale(session.scene), overlays[0][0]

    @user_errors
    def recluster(self, clustering, merge_percent, color_mode, conf_percentile, show_cameras, drop_background,
                  geometry, frame, show_structure, filters, session: Session | None, progress=gr.Progress()):
        """The current scene clustered again with another granularity or merge size (the model is not run)."""
        if session is None or session.scene is None:
            return (gr.skip(),) * 12
        clustering = _checked_clustering(clustering)
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        progress(0.0, desc="Clustering instances")
        start = time.perf_counter()
        session.new_scene(_clustered(session.scene.with_instances(None), clustering, merge_percent))
        session.clustering = _clustering_note(clustering, merge_percent)
        session.timings = {"clustering": time.perf_counter() - start}
        viewer, overlays, table = self._render_all(session, display)
        return (self._status(session, "preparing the downloads…"), viewer, overlays, table, None, overlays[0][0], "",
                gr.update(value=1), "", "", None, session)  # the answer named instances that are gone

    @user_errors
    def write_downloads(self, session: Session | None):
        """After the result is on screen: the files to download (GLB, PLY, masks, COLMAP, scene)."""
        if session is None or session.scene is None or not session.downloads_pending:
            return gr.skip(), gr.skip()
        start = time.perf_counter()
        files = self._downloads(session)
        session.timings["downloads"] = time.perf_counter() - start
        session.downloads_pending = False
        return files, self._status(session, "downloads ready.")

    @functools.wraps(reconstruct)  # the same parameters: the API documents them from this signature
    def reconstruct_for_api(self, *args, **kwargs):
        # `reconstruct`, then the pictures and the downloads: API clients get everything in one call.
        _, viewer, table, _, view_number, selection, frame, answer, trace, answer_views, view_files, session = \
            self.reconstruct(*args, **kwargs)
        overlays, depths, scale, click_view = self.show_pictures(session)
        files, status = self.write_downloads(session)
        return (status, viewer, overlays, depths, table, files, view_number, click_view, selection, frame, scale,
                answer, trace, answer_views, view_files, session)

    def _status(self, session: Session, downloads: str) -> str:
        scene = session.scene
        found = (f"**{scene.instances.count} instances**" if scene.instances is not None
                 else "instances not clustered")
        stages = " · ".join(f"{name} {seconds:.1f} s" for name, seconds in session.timings.items())
        views = f"{scene.num_views} view" + ("s" if scene.num_views > 1 else "")
        structure = (f" ({sum(i.structure for i in scene.instances.info)} of them structure: floor, walls, planes)"
                     if scene.instances is not None else "")
        return (f"Done: **{views}** at {scene.image_size[1]}x{scene.image_size[0]} px, {found}{structure}; "
                f"{session.clustering}. Time: {stages}. Model: {self.models.info.title}. Downloads: {downloads}")

    @staticmethod
    def _viewer(session: Session, display: Display) -> dict:
        """What the 3D view draws (`demo.viewer3d`); the session keeps which instance each point is."""
        options = display.options(session.scene, session.highlighted)
        value, session.viewer_instances = viewer_value(session.scene, options, display.show_cameras,
                                                       session.highlighted)
        return value

    def _render_all(self, session: Session, display: Display):
        """The 3D view, the overlay gallery and the instance table for the current selection (depths stay)."""
        return self._viewer(session, display), self._overlays(session), instance_table(session.scene,
                                                                                         session.highlighted)

    def _overlays(self, session: Session) -> list:
        """The overlay gallery: (picture, "N: name") per view."""
        return _captioned(session.scene, self._view_pictures(session))

    @staticmethod
    def _view_pictures(session: Session, views: list[int] | None = None) -> list[np.ndarray]:
        """Views with their instances (only the highlighted ones when any) drawn on the photos, masks at
        the photos' resolution (long side `GALLERY_SIDE`); the plain photos when there are no instances."""
        return session.gallery.overlays(session.scene, session.highlighted or None, views)

    def _view_picture(self, session: Session, index: int) -> np.ndarray:
        """One view for clicking, drawn on its photo."""
        return self._view_pictures(session, [index])[0]

    def _downloads(self, session: Session) -> list[str]:
        out = session.output_dir("downloads")
        formats = ("glb", "ply", "masks", "json", "colmap", "scene")
        if session.scene.instances is None:
            formats = tuple(f for f in formats if f != "masks")
        written = export_all(session.scene, out, formats=formats, photos=session.photos)
        files = []
        for path in written.values():
            path = Path(path)
            if path.is_dir():  # folders (masks, COLMAP model) travel as one zip each
                path = Path(shutil.make_archive(str(path), "zip", root_dir=path))
            files.append(str(path))
        return files

    @user_errors
    def rerender(self, color_mode, conf_percentile, show_cameras, drop_background, geometry, frame, show_structure,
                 filters, session: Session | None):
        """New 3D view with other display options, without running the model again."""
        if session is None or session.scene is None:
            return gr.skip()
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        return self._viewer(session, display)

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
    def click(self, view_number, color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
              show_structure, filters, session: Session | None, evt: gr.SelectData):
        """A click on a view selects the instance under the pointer in every view and in 3D."""
        session = _with_instances(session)
        view = self._view_index(session, view_number)
        labels = session.gallery.labels(session.scene, view)
        x, y = (int(v) for v in evt.index)
        label = int(labels[np.clip(y, 0, labels.shape[0] - 1), np.clip(x, 0, labels.shape[1] - 1)])
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        return self._select(session, label, display, view, "That pixel belongs to no instance")

    @user_errors
    def click_3d(self, view_number, color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                 show_structure, filters, session: Session | None, evt: gr.SelectData):
        """A click on a point of the 3D view selects its instance (``evt.index``: the point, -1 for none)."""
        session = _with_instances(session)
        index = int(evt.index if evt.index is not None else -1)
        shown = session.viewer_instances
        label = int(shown[index]) if 0 <= index < len(shown) else -1
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        return self._select(session, label, display, self._view_index(session, view_number),
                            "No point of an instance there")

    @user_errors
    def clear_selection(self, view_number, color_mode, conf_percentile, show_cameras, drop_background, geometry,
                        frame, show_structure, filters, session: Session | None):
        """Nothing selected: every instance in its colour again."""
        if session is None or session.scene is None:
            return (gr.skip(),) * 6
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        return self._select(session, -1, display, self._view_index(session, view_number), "Nothing selected")

    def _select(self, session: Session, label: int, display: Display, view: int, nothing: str):
        """Select instance ``label`` (-1: none) everywhere; the selection line, 3D view, pictures and table."""
        scene = session.scene
        session.highlighted = [label] if label >= 0 else []
        if label >= 0:
            info = scene.instances.info[label]
            message = (f"Selected instance **{label}**" + (f" ({info.name})" if info.name else "")
                       + (" (structure)" if info.structure else "")
                       + f", seen in {len(info.views)} of {scene.num_views} views.")
        else:
            message = f"{nothing}: selection cleared."
        viewer, overlays, table = self._render_all(session, display)
        return message, viewer, overlays, table, self._view_picture(session, view), session

    @staticmethod
    def pick_view(evt: gr.SelectData):
        """A click on a view's thumbnail makes it the view to click on."""
        return int(evt.index) + 1

    # -- what you see, as files ----------------------------------------------------------------
    @user_errors
    def export_view(self, color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                    show_structure, filters, session: Session | None):
        """The 3D view as it is now (filters, frame, colours, selection) as a GLB and a PLY."""
        session = _need_scene(session)
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        options = display.options(session.scene, session.highlighted)
        out = session.output_dir("view")
        glb = out / "view.glb"
        glb_scene(session.scene, options, display.show_cameras).export(glb, file_type="glb")
        return gr.update(value=[str(glb), str(write_ply(session.scene, out / "view.ply", options))], visible=True)

    # -- questions -----------------------------------------------------------------------
    @user_errors
    def ask(self, question, backend_choice, base_url, model_name, api_key, mode, color_mode, conf_percentile,
            show_cameras, drop_background, geometry, frame, show_structure, filters, session: Session | None,
            progress=gr.Progress()):
        """Answer a question with the chosen VLM; highlight the instances the answer refers to."""
        session = _need_scene(session)
        if not (question or "").strip():
            raise gr.Error("Type a question first.")
        if session.scene.instances is None or session.scene.instances.count == 0:
            raise gr.Error("This scene has no instances to ask about.")
        if mode not in MODES:
            raise gr.Error(f"Unknown mode '{mode}': choose one of {', '.join(MODES)}.")
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        progress(0.0, desc="Connecting to the VLM")
        backend = self.vlms.backend(backend_choice, base_url=(base_url or "").strip() or None,
                                    model=(model_name or "").strip() or None, api_key=(api_key or "").strip() or None)
        embedder = self.vlms.embedder() if mode == "agent" else None  # ranks the find checks (fewer VLM calls)
        result = answer(session.scene, question, backend, mode=mode, embedder=embedder,
                        progress=lambda f, msg: progress(0.05 + 0.9 * f, desc=f"Grounding: {msg}"))
        if any(step.kind == "naming" for step in result.trace):
            session.scene = result.scene  # the names the agent found (notes say which it did not): in the table
        session.highlighted = list(result.instance_ids)
        viewer, overlays, table = self._render_all(session, display)
        return (answer_markdown(result, backend.name), viewer, overlays, table, trace_markdown(result),
                answer_pictures(result, overlays), session)
