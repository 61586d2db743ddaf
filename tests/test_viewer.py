"""The viser viewer (`python -m iggt view`): a real server on a free port, read through its scene
tree and over HTTP, the command in a subprocess, and the page in Debian's Chromium (Playwright).

The scene is the ground truth of a generated room (`oracle_scene`): named instances, floor and
walls unassigned, exact cameras.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from helpers import REPO_ROOT
from iggt.data.oracle import oracle_scene
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.export import PointCloudOptions, dim_colors, select_points
from iggt.geometry import invert_extrinsics
from iggt.scene import BACKGROUND, Instances, Scene
from iggt.viewer import NO_INSTANCE, SceneViewer, ViewerConfig, pick_instance, pixel_footprint
from tools.app_page import WEBGL_CHROMIUM_ARGS, open_viewer
from tools.app_server import free_port

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def scene() -> Scene:
    return oracle_scene(generate_scene(3, GeneratorConfig(num_views=3, image_size=(96, 128))))


@pytest.fixture
def viewer(scene):
    with SceneViewer(scene, ViewerConfig(port=0)) as running:
        yield running


def node(viewer: SceneViewer, name: str):
    handle = viewer.server.scene.get_handle_by_name(name)
    assert handle is not None, f"{name} is not in the scene tree"
    return handle


def shown_colors(viewer: SceneViewer) -> np.ndarray:
    """The colours the point nodes hold now, in `cloud` order (views in turn)."""
    return np.concatenate([node(viewer, f"/points/view_{v:03d}").colors for v in range(viewer.scene.num_views)])


# -- picking along a ray ------------------------------------------------------------------
def test_a_click_picks_the_nearest_point_on_its_ray():
    points = np.array([[0, 0, 5.0], [0, 0, 3.0], [0, 0.5, 2.0], [0, 0, -1.0]])
    origin, forward = np.zeros(3), np.array([0, 0, 2.0])
    assert pick_instance(points, np.array([1, 2, 3, 4]), origin, forward) == 2  # off the ray, behind: ignored
    assert pick_instance(points, np.array([1, BACKGROUND, 3, 4]), origin, forward) is None  # background in front
    assert pick_instance(points, np.array([1, 2, 3, 4]), origin, np.array([1.0, 0, 0])) is None  # nothing there


# -- the server and its scene tree --------------------------------------------------------
def test_page_is_served_and_the_scene_tree_holds_points_cameras_and_instances(viewer, scene):
    with urllib.request.urlopen(viewer.url, timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read(4096).lower()

    expected = select_points(scene, PointCloudOptions())
    for view in range(scene.num_views):
        points = node(viewer, f"/points/view_{view:03d}").points
        np.testing.assert_allclose(points, expected.points[expected.view == view], rtol=2e-3, atol=2e-3)  # float16

        centre = invert_extrinsics(scene.extrinsics[view].astype(np.float64))[:, 3]
        np.testing.assert_allclose(node(viewer, f"/cameras/view_{view:03d}").position, centre, atol=1e-5)
        frustum = node(viewer, f"/cameras/view_{view:03d}/frustum")
        assert frustum.image.shape == (*scene.image_size, 3)
        assert frustum.aspect == pytest.approx(scene.image_size[1] / scene.image_size[0])

    for info in scene.instances.info:
        name = f"/instances/instance_{info.id:03d}"
        np.testing.assert_allclose(node(viewer, name).position, info.centroid, atol=1e-5)
        assert node(viewer, f"{name}/label").text == info.name
        assert not node(viewer, f"{name}/box").visible  # boxes only for the picked instance


def test_colour_modes_are_the_export_colours(viewer, scene):
    for label, mode in (("Instances", "instance"), ("Feature PCA", "pca"), ("RGB", "rgb")):
        viewer.color_control.value = label
        np.testing.assert_array_equal(shown_colors(viewer), select_points(scene, PointCloudOptions(color_mode=mode)).colors)


def test_unassigned_points_frames_and_cameras_hide_and_show(viewer):
    cloud = viewer.cloud
    assert not viewer.structure_control.visible  # nothing is marked as structure
    viewer.background_control.value = False
    for view in range(viewer.scene.num_views):
        assert len(node(viewer, f"/points/view_{view:03d}").points) == np.sum((cloud.view == view) & (cloud.instance != BACKGROUND))
    viewer.background_control.value = True
    assert sum(len(node(viewer, f"/points/view_{v:03d}").points) for v in range(3)) == len(cloud.points)

    viewer.frame_controls[1].value = False
    assert [node(viewer, f"/points/view_{v:03d}").visible for v in range(3)] == [True, False, True]
    assert [node(viewer, f"/cameras/view_{v:03d}").visible for v in range(3)] == [True, False, True]
    viewer.cameras_control.value = False
    assert not any(node(viewer, f"/cameras/view_{v:03d}").visible for v in range(3))
    assert node(viewer, "/points/view_000").visible
    viewer.color_control.value = "Instances"  # while view 1 is hidden
    viewer.frame_controls[1].value = True
    assert len(node(viewer, "/points/view_001").points) == np.sum(cloud.view == 1)

    viewer.point_size_control.value = 4.0
    assert {node(viewer, f"/points/view_{v:03d}").point_size for v in range(3)} == {viewer.point_size}
    assert viewer.point_size == pytest.approx(4.0 * pixel_footprint(viewer.scene))


def test_picking_an_instance_boxes_it_and_dims_the_rest(viewer, scene):
    picked = scene.instances.info[2]
    viewer.pick(picked.id)
    assert viewer.picked == picked.id
    assert node(viewer, f"/instances/instance_{picked.id:03d}/box").visible
    assert node(viewer, f"/instances/instance_{picked.id:03d}/label").visible
    assert not node(viewer, "/instances/instance_000/box").visible
    assert picked.name in viewer.instance_details.content
    rgb = viewer.colors("RGB")
    np.testing.assert_array_equal(shown_colors(viewer), dim_colors(rgb, viewer.cloud.instance, [picked.id]))

    viewer.pick(None)
    assert viewer.instance_control.value == NO_INSTANCE
    assert not node(viewer, f"/instances/instance_{picked.id:03d}/box").visible
    np.testing.assert_array_equal(shown_colors(viewer), rgb)

    viewer.labels_control.value = True
    assert all(node(viewer, f"/instances/instance_{i.id:03d}/label").visible for i in scene.instances.info)


def test_structure_hides_and_shows_as_one_switch(scene):
    marked = scene.with_instances(Instances(scene.instances.labels, [
        replace(info, structure=info.id in (0, 3)) for info in scene.instances.info]))
    with SceneViewer(marked, ViewerConfig(port=0)) as viewer:
        assert viewer.structure_control.visible
        viewer.structure_control.value = False
        shown = np.concatenate([node(viewer, f"/points/view_{v:03d}").points for v in range(scene.num_views)])
        kept = ~np.isin(viewer.cloud.instance, [0, 3])
        assert len(shown) == kept.sum() < len(viewer.cloud.points)
        viewer.structure_control.value = True
        assert sum(len(node(viewer, f"/points/view_{v:03d}").points) for v in range(3)) == len(viewer.cloud.points)
        viewer.pick(3)
        assert "(structure)" in viewer.instance_details.content


def test_a_scene_without_instances_shows_its_points_and_cameras(scene):
    with SceneViewer(scene.with_instances(None), ViewerConfig(port=0)) as viewer:
        assert viewer.color_labels == ("RGB", "Feature PCA")
        assert viewer.instance_control.disabled and viewer.picked is None
        assert sum(len(node(viewer, f"/points/view_{v:03d}").points) for v in range(3)) == len(viewer.cloud.points)
        assert node(viewer, "/cameras/view_002/frustum").image is not None
        assert viewer.server.scene.get_handle_by_name("/instances/instance_000") is None


# -- the command --------------------------------------------------------------------------
def test_view_command_serves_the_scene_until_interrupted(scene, tmp_path):
    scene.save(tmp_path / "out" / "scene.npz")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "iggt", "view", str(tmp_path / "out"), "--port", str(port)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        deadline = time.monotonic() + TIMEOUT_S
        while not any("viewer at" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        assert f"3 views, {len(select_points(scene).points):,} points, {scene.instances.count} instances" in "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT_S) == 0, process.stdout.read()
    finally:
        process.kill()
        process.stdout.close()


def test_view_command_refuses_a_missing_scene(tmp_path):
    result = subprocess.run([sys.executable, "-m", "iggt", "view", str(tmp_path / "nothing.npz")], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: Scene file not found: nothing.npz"


# -- in the browser -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium_args() -> list[str]:
    """The `browser` fixture's arguments: viser draws with WebGL."""
    return WEBGL_CHROMIUM_ARGS


def canvas_picture(page) -> np.ndarray:
    canvas = page.locator("canvas").last
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))


@pytest.mark.browser
def test_page_draws_the_scene_and_a_click_picks_an_instance(browser, viewer, scene):
    page = open_viewer(browser, viewer)
    picture = canvas_picture(page)
    assert np.mean(np.abs(picture.astype(int) - picture[0, 0]).sum(axis=-1) > 30) > 0.05  # not a blank canvas

    # look at an instance from a fresh page: the middle of the canvas then shows it
    target = scene.instances.info[0]
    camera = viewer.server.initial_camera
    camera.look_at = target.centroid
    expected = pick_instance(viewer.cloud.points, viewer.cloud.instance, camera.position, camera.look_at - camera.position)
    assert expected == target.id
    page.close()
    page = open_viewer(browser, viewer)
    box = page.locator("canvas").last.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    deadline = time.monotonic() + TIMEOUT_S
    while viewer.picked is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert viewer.picked == expected
    page.close()
