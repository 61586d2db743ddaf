"""A viser viewer for reconstructed scenes, beside the web app (`python -m iggt view`).

Why: the Gradio page shows a GLB in a small canvas, enough for a first look. Big scenes
(millions of points, dozens of views) need a viewer that streams points as binary buffers
and keeps every view's points and camera as nodes of their own, so frames can be toggled one
by one without sending anything again. viser does both (VGGT ships a viser demo too).

The page offers the colours of `iggt.export` (photo RGB, instances, feature PCA), point size,
camera frustums showing their photos, every frame on its own checkbox, unassigned points
(and structure: floor, walls, large planes, when the scene marks it) hidden or shown, and an
instance picker (a list, or a click on a point) that dims everything else and boxes the
instance.

Scene tree, in the scene's world (OpenCV, first camera at the origin, y down):

    /points/view_NNN                the points of view NNN
    /cameras/view_NNN               its camera pose; the frustum with its photo in .../frustum
    /instances/instance_KKK         instance KKK at its centroid: .../label and .../box
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from iggt.export import (
    FRUSTUM_DEPTH, ColorMode, Geometry, PointCloudOptions, camera_color, dim_colors, kept_pixels, scene_size,
    select_points,
)
from iggt.geometry import invert_extrinsics
from iggt.scene import BACKGROUND, InstanceInfo, Scene, rgb_uint8

if TYPE_CHECKING:
    import viser

COLOR_MODES: dict[str, ColorMode] = {"RGB": "rgb", "Instances": "instance", "Feature PCA": "pca"}
"""Colour choices of the page, by label."""
NO_INSTANCE = "(none)"
PICK_CONE = 0.01
"""A click picks among the points within this angle (radians) of its ray."""
POINT_SIZE_SCALE = (0.25, 8.0, 1.5)
"""Point size slider: least, most and first multiple of `pixel_footprint`."""
FRUSTUM_LINE_PIXELS = 2.0
MAX_POINTS = 4_000_000
"""The viewer sends at most this many points (a fixed-seed random subset beyond, drawn while the
points are selected, so a scene of 1000 views never builds its full cloud): what a browser draws
smoothly; ``iggt view --max-points`` changes it and says when it thins."""


@dataclass
class ViewerConfig:
    """Where the viewer listens and which points it sends to the browser."""

    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port; a busy port moves on to the next free one."""
    geometry: Geometry = "depth"
    conf_percentile: float = 5.0
    max_points: int | None = MAX_POINTS
    """Send at most this many points (a fixed random subset beyond it); None sends all."""


def pixel_footprint(scene: Scene) -> float:
    """World size of one pixel at the median depth: points about this size close a surface."""
    depth = scene.depth[scene.depth > 0]
    if depth.size == 0:
        return 0.01
    return float(np.median(depth) / np.median(scene.intrinsics[:, 0, 0]))


def pick_instance(points: np.ndarray, instance: np.ndarray, origin: np.ndarray, direction: np.ndarray,
                  cone: float = PICK_CONE) -> int | None:
    """The instance of the nearest point within ``cone`` radians of a ray; None when that is background or nothing."""
    direction = np.asarray(direction, np.float64) / np.linalg.norm(direction)
    offsets = np.asarray(points, np.float64) - np.asarray(origin, np.float64)
    along = offsets @ direction
    across = np.linalg.norm(offsets - along[:, None] * direction, axis=1)
    near = np.flatnonzero((along > 0) & (across <= cone * along))
    if near.size == 0:
        return None
    hit = near[np.argmin(along[near])]
    return None if instance[hit] == BACKGROUND else int(instance[hit])


def instance_label(info: InstanceInfo) -> str:
    """How the picker lists an instance: id, name when known (else whether it is structure), size in pixels."""
    return f"{info.id}: {info.name or ('structure' if info.structure else 'instance')} ({info.pixel_count:,} px)"


class SceneViewer:
    """A viser server showing one scene; the page's controls update its scene tree in place.

    Starts serving on construction; `stop` (or leaving a ``with`` block) ends it.
    """

    def __init__(self, scene: Scene, config: ViewerConfig = ViewerConfig()) -> None:
        import viser

        self.scene = scene
        self.options = PointCloudOptions(geometry=config.geometry, conf_percentile=config.conf_percentile,
                                         max_points=config.max_points)
        self.cloud = select_points(scene, self.options)
        self.kept_count = int(kept_pixels(scene, self.options).sum())
        """Points the options keep before the `ViewerConfig.max_points` thinning."""
        self.color_labels = tuple(label for label, mode in COLOR_MODES.items() if mode != "instance" or scene.instances is not None)
        self._colorings = {"RGB": self.cloud.colors}
        # select_points lists the points view by view: each view's are one slice
        bounds = np.searchsorted(self.cloud.view, np.arange(scene.num_views + 1))
        self.view_slices = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
        self.infos = scene.instances.info if scene.instances is not None else []
        self.structure_ids = np.array([info.id for info in self.infos if info.structure], np.int64)
        self._lock = threading.Lock()

        self.server = viser.ViserServer(host=config.host, port=config.port, label="IGGT scene", verbose=False)
        self.server.scene.set_up_direction("-y")  # OpenCV world: y points down
        self._add_points()
        self._add_cameras()
        self._add_instances()
        self._add_controls()
        self._place_initial_camera()
        self._refresh_points()

    @property
    def url(self) -> str:
        host = self.server.get_host()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.server.get_port()}/"

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> "SceneViewer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- scene tree ------------------------------------------------------------------------
    def _add_points(self) -> None:
        self.footprint = pixel_footprint(self.scene)
        self.point_size = self.footprint * POINT_SIZE_SCALE[2]
        self.point_nodes = [
            self.server.scene.add_point_cloud(f"/points/view_{view:03d}", np.zeros((0, 3), np.float32),
                                              np.zeros((0, 3), np.uint8), point_size=self.point_size,
                                              point_shape="rounded", point_shading="flat")
            for view in range(self.scene.num_views)]

    def _add_cameras(self) -> None:
        import viser.transforms as tf

        height, width = self.scene.image_size
        frustum_scale = scene_size(self.cloud.points) * FRUSTUM_DEPTH
        cam_to_world = invert_extrinsics(self.scene.extrinsics.astype(np.float64))
        self.camera_nodes = []
        for view in range(self.scene.num_views):
            node = self.server.scene.add_frame(
                f"/cameras/view_{view:03d}", show_axes=False,
                wxyz=tf.SO3.from_matrix(cam_to_world[view, :, :3]).wxyz, position=cam_to_world[view, :, 3])
            fy = float(self.scene.intrinsics[view, 1, 1])
            self.server.scene.add_camera_frustum(
                f"/cameras/view_{view:03d}/frustum", fov=2 * math.atan(height / 2 / fy), aspect=width / height,
                scale=frustum_scale, thickness=FRUSTUM_LINE_PIXELS, thickness_units="screen",
                color=tuple(int(c) for c in camera_color(view, self.scene.num_views)),
                image=rgb_uint8(self.scene.images[view]))
            self.camera_nodes.append(node)

    def _add_instances(self) -> None:
        self.box_nodes: dict[int, viser.BoxHandle] = {}
        self.label_nodes: dict[int, viser.LabelHandle] = {}
        for info in self.infos:
            if not np.isfinite(info.centroid).all():
                continue
            name = f"/instances/instance_{info.id:03d}"
            centroid = np.asarray(info.centroid, np.float64)
            low, high = np.asarray(info.bbox_min, np.float64), np.asarray(info.bbox_max, np.float64)
            self.server.scene.add_frame(name, show_axes=False, position=centroid)
            self.label_nodes[info.id] = self.server.scene.add_label(
                f"{name}/label", info.name or str(info.id), visible=False)
            self.box_nodes[info.id] = self.server.scene.add_box(
                f"{name}/box", color=info.color, dimensions=high - low, wireframe=True,
                position=(low + high) / 2 - centroid, visible=False)

    def _place_initial_camera(self) -> None:
        """A little behind and above the first camera, looking at the middle of the points."""
        size = scene_size(self.cloud.points)
        look_at = np.median(self.cloud.points, axis=0) if len(self.cloud.points) else np.zeros(3)
        self.server.initial_camera.position = (0.0, -0.45 * size, -0.35 * size)
        self.server.initial_camera.look_at = tuple(float(v) for v in look_at)

    # -- controls --------------------------------------------------------------------------
    def _add_controls(self) -> None:
        gui = self.server.gui
        count = "no instances" if self.scene.instances is None else f"{self.scene.instances.count} instances"
        gui.add_markdown(f"**{self.scene.num_views} views**, {len(self.cloud.points):,} points, {count}  \n"
                         f"model: {self.scene.model_name or 'unknown'}")
        with gui.add_folder("Display"):
            self.color_control = gui.add_dropdown("Colour", self.color_labels, initial_value="RGB")
            low, high, first = POINT_SIZE_SCALE
            self.point_size_control = gui.add_slider("Point size", low, high, step=0.25, initial_value=first,
                                                     hint="in pixels' sizes at the median depth")
            self.cameras_control = gui.add_checkbox("Cameras", True)
            self.background_control = gui.add_checkbox("Unassigned points", True,
                                                       hint="points that belong to no instance")
            self.structure_control = gui.add_checkbox("Structure", True, visible=self.structure_ids.size > 0,
                                                      hint="floor, walls, large planes")
            self.labels_control = gui.add_checkbox("Instance labels", False)
        with gui.add_folder("Instance"):
            self.instance_by_label = {instance_label(info): info.id for info in self.infos}
            self.instance_control = gui.add_dropdown(
                "Pick", (NO_INSTANCE, *self.instance_by_label), initial_value=NO_INSTANCE,
                hint="or click a point in the scene", disabled=not self.infos)
            self.instance_details = gui.add_markdown("")
        with gui.add_folder("Frames", expand_by_default=self.scene.num_views <= 12):
            self.frame_controls = [gui.add_checkbox(f"{view}: {self._view_name(view)}", True)
                                   for view in range(self.scene.num_views)]

        self.color_control.on_update(lambda _: self._refresh_points())
        self.background_control.on_update(lambda _: self._refresh_points())
        self.structure_control.on_update(lambda _: self._refresh_points())
        self.instance_control.on_update(lambda _: self._show_picked())
        self.labels_control.on_update(lambda _: self._show_instance_nodes())
        self.point_size_control.on_update(lambda _: self._set_point_size())
        self.cameras_control.on_update(lambda _: self._show_frames())
        for control in self.frame_controls:
            control.on_update(lambda _: self._show_frames())
        self.server.scene.on_click()(self._on_click)

    def _view_name(self, view: int) -> str:
        return self.scene.view_names[view] if view < len(self.scene.view_names) else f"view {view}"

    @property
    def picked(self) -> int | None:
        """Id of the instance picked on the page, None when none is."""
        return self.instance_by_label.get(self.instance_control.value)

    def pick(self, instance_id: int | None) -> None:
        """Pick an instance (None: none) as the page's picker does."""
        labels = {index: label for label, index in self.instance_by_label.items()}
        self.instance_control.value = labels.get(instance_id, NO_INSTANCE)

    def colors(self, label: str) -> np.ndarray:
        """``[N, 3]`` uint8 colours of `cloud` in one of the page's colour modes (made on first use:
        the feature PCA of a big scene takes seconds)."""
        if label not in self._colorings:
            # select_points keeps the same points whatever the colouring: only the colours differ
            colored = select_points(self.scene, replace(self.options, color_mode=COLOR_MODES[label]))
            self._colorings[label] = colored.colors
        return self._colorings[label]

    def shown_points(self) -> np.ndarray:
        """``[N]`` boolean: which of `cloud`'s points the page shows now."""
        return self._kept_points() & np.asarray([control.value for control in self.frame_controls])[self.cloud.view]

    def _kept_points(self) -> np.ndarray:
        """``[N]`` boolean: the points not hidden as unassigned or structure (whatever their frame)."""
        kept = np.ones(len(self.cloud.points), bool)
        if not self.background_control.value:
            kept &= self.cloud.instance != BACKGROUND
        if not self.structure_control.value:
            kept &= ~np.isin(self.cloud.instance, self.structure_ids)
        return kept

    # -- updates ---------------------------------------------------------------------------
    def _refresh_points(self) -> None:
        """Send every view's kept points in the chosen colours (the picked instance bright).

        Hidden frames get theirs too, so that showing a frame again is only a visibility switch.
        """
        with self._lock:
            colors = self.colors(self.color_control.value)
            if self.picked is not None:
                colors = dim_colors(colors, self.cloud.instance, [self.picked])
            kept = self._kept_points()
            with self.server.atomic():
                for part, node in zip(self.view_slices, self.point_nodes):
                    node.points = self.cloud.points[part][kept[part]]
                    node.colors = colors[part][kept[part]]

    def _set_point_size(self) -> None:
        self.point_size = self.footprint * float(self.point_size_control.value)
        with self.server.atomic():
            for node in self.point_nodes:
                node.point_size = self.point_size

    def _show_frames(self) -> None:
        """Each view's points and camera follow its checkbox (cameras also the Cameras one)."""
        with self.server.atomic():
            for control, points, camera in zip(self.frame_controls, self.point_nodes, self.camera_nodes):
                points.visible = control.value
                camera.visible = control.value and self.cameras_control.value

    def _show_picked(self) -> None:
        picked = self.picked
        self.instance_details.content = "" if picked is None else _describe(self.infos[picked])
        self._show_instance_nodes()
        self._refresh_points()

    def _show_instance_nodes(self) -> None:
        """The picked instance's box and label; every label when Instance labels is on."""
        picked = self.picked
        with self.server.atomic():
            for instance_id, box in self.box_nodes.items():
                box.visible = instance_id == picked
                self.label_nodes[instance_id].visible = self.labels_control.value or instance_id == picked

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        """Pick the instance of the clicked point; a click on nothing or on an unassigned point clears the pick."""
        if not self.instance_by_label:
            return
        shown = self.shown_points()
        hit = pick_instance(self.cloud.points[shown], self.cloud.instance[shown],
                            np.asarray(event.ray_origin), np.asarray(event.ray_direction))
        self.pick(hit)


def _describe(info: InstanceInfo) -> str:
    size = " x ".join(f"{extent:.2f}" for extent in info.size)
    views = ", ".join(str(view) for view in sorted(info.views))
    kind = " (structure)" if info.structure else ""
    return (f"**{info.name or f'instance {info.id}'}**{kind}  \n{info.pixel_count:,} pixels in views {views}  \n"
            f"box {size} (scene units)")
