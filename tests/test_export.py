"""Every export is read back by the library that consumes it."""
from __future__ import annotations

import json
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
import trimesh
from PIL import Image

from iggt.export import (
    FORMATS, PointCloudOptions, export_all, export_glb, feature_pca_colors, instance_overlays, select_points,
    upsample_labels, write_colmap, write_instance_masks, write_ply,
)
from iggt.geometry import unproject_depth
from iggt.instances import describe_instances
from iggt.scene import BACKGROUND, Scene, ViewTransform


def rotation_about_y(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def make_scene(views: int = 3, height: int = 28, width: int = 42, with_instances: bool = True) -> Scene:
    """A wall at depth 4 seen by cameras that turn a little; two square objects on it."""
    rng = np.random.default_rng(1)
    extrinsics = np.zeros((views, 3, 4))
    for s in range(views):
        extrinsics[s, :, :3] = rotation_about_y(4.0 * s)
        extrinsics[s, :, 3] = (-0.2 * s, 0.0, 0.0)
    intrinsics = np.tile(np.array([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]]), (views, 1, 1))
    depth = np.full((views, height, width), 4.0)
    labels = np.full((views, height, width), BACKGROUND)
    labels[:, 4:12, 6:16] = 7
    labels[:, 14:24, 22:36] = 3
    depth[labels >= 0] = 3.5
    points = unproject_depth(depth, extrinsics, intrinsics)
    images = rng.random((views, height, width, 3)).astype(np.float32)
    features = np.zeros((views, height, width, 8), np.float32)
    features[..., 0] = 1
    features[labels == 7] = np.eye(8)[1]
    features[labels == 3] = np.eye(8)[2]
    confidence = 1 + rng.random((views, height, width)).astype(np.float32)
    scene = Scene(
        images=images, extrinsics=extrinsics.astype(np.float32), intrinsics=intrinsics.astype(np.float32),
        depth=depth.astype(np.float32), depth_conf=confidence, world_points=points, world_points_conf=confidence,
        points_from_depth=points, features=features, view_names=[f"photo {s}.jpg" for s in range(views)],
        view_transforms=[ViewTransform((2 * height, 2 * width), (height, width))] * views, model_name="hand-made")
    if with_instances:
        scene.instances = describe_instances(labels, points, images)
    return scene


# -- point selection ----------------------------------------------------------------------
def test_confidence_percentile_is_a_real_percentile():
    scene = make_scene()
    total = scene.depth.size
    assert len(select_points(scene, PointCloudOptions(conf_percentile=0)).points) == total
    half = len(select_points(scene, PointCloudOptions(conf_percentile=50)).points)
    assert abs(half - total / 2) <= 1


def test_background_can_be_dropped_and_instances_highlighted():
    scene = make_scene()
    cloud = select_points(scene, PointCloudOptions(conf_percentile=0, drop_background=True, color_mode="instance"))
    assert (cloud.instance >= 0).all() and len(cloud.points) == (scene.instances.labels >= 0).sum()
    assert (cloud.colors == scene.instances.colors[cloud.instance]).all()
    lit = select_points(scene, PointCloudOptions(conf_percentile=0, color_mode="instance", highlight=[0]))
    kept = lit.instance == 0
    assert (lit.colors[kept] == scene.instances.colors[0]).all()
    assert not (lit.colors[~kept] == scene.instances.colors[np.maximum(lit.instance[~kept], 0)]).all(axis=1).any()


def test_instance_colouring_needs_instances():
    with pytest.raises(ValueError, match="no instances"):
        select_points(make_scene(with_instances=False), PointCloudOptions(color_mode="instance"))


def test_pca_colours_are_deterministic_and_separate_instances(monkeypatch):
    scene = make_scene()
    colors = feature_pca_colors(scene.features)
    assert colors.dtype == np.uint8 and colors.shape == (*scene.depth.shape, 3)
    assert (colors == feature_pca_colors(scene.features.copy())).all()
    # Eigenvectors are only defined up to sign; the fixed sign convention hides the solver's choice.
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda m: (eigh(m)[0], -eigh(m)[1]))
    assert (feature_pca_colors(scene.features) == colors).all()
    monkeypatch.undo()
    labels = scene.instances.labels
    assert not (colors[labels == 0][0] == colors[labels == 1][0]).all()
    assert not (colors[labels == 0][0] == colors[labels == BACKGROUND][0]).all()


# -- files --------------------------------------------------------------------------------
def test_glb_holds_points_and_cameras_and_is_upright(tmp_path):
    scene = make_scene()
    loaded = trimesh.load(export_glb(scene, tmp_path / "scene.glb", conf_percentile=0))
    clouds = [g for g in loaded.geometry.values() if isinstance(g, trimesh.PointCloud)]
    meshes = [g for g in loaded.geometry.values() if isinstance(g, trimesh.Trimesh)]
    assert len(clouds) == 1 and len(meshes) == scene.num_views
    cloud = next(g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.PointCloud))
    # The first camera is the world frame; viewers want y up, so the OpenCV frame (y down,
    # z forward) turns 180 degrees about z: image top (OpenCV -y) becomes viewer +y.
    assert np.allclose(cloud.vertices, scene.points_from_depth.reshape(-1, 3) * [-1, -1, 1], atol=1e-5)
    assert (cloud.colors[:, :3] == np.round(scene.images * 255).reshape(-1, 3)).all()
    assert cloud.vertices.reshape(*scene.depth.shape, 3)[0, 0, :, 1].min() > 0


def test_ply_is_read_back_with_instances(tmp_path):
    scene = make_scene()
    path = write_ply(scene, tmp_path / "points.ply", PointCloudOptions(conf_percentile=0))
    cloud = trimesh.load(path)
    assert isinstance(cloud, trimesh.PointCloud)
    assert np.allclose(cloud.vertices, scene.points_from_depth.reshape(-1, 3), atol=1e-5)
    raw = cloud.metadata["_ply_raw"]["vertex"]["data"]
    assert (raw["instance"] == scene.instances.labels.reshape(-1)).all()
    assert (raw["red"] == np.round(scene.images[..., 0].reshape(-1) * 255)).all()


def test_masks_are_16bit_ids_plus_overlays(tmp_path):
    scene = make_scene()
    written = write_instance_masks(scene, tmp_path / "masks")
    assert len(written) == 2 * scene.num_views
    ids = np.array(Image.open(tmp_path / "masks" / "001_photo_1_ids.png"))  # at the photo's size, twice the input
    assert ids.dtype in (np.uint16, np.int32) and ids.shape == scene.view_transforms[1].original_size
    assert (ids[::2, ::2] == scene.instances.labels[1] + 1).mean() > 0.95
    overlay = Image.open(tmp_path / "masks" / "001_photo_1_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (42, 28)
    pixels = np.array(overlay)
    assert (pixels[4, 6:16] == 255).all()  # top edge of an instance is a white contour


def test_glb_without_cameras_and_with_fewer_points(tmp_path):
    loaded = trimesh.load(export_glb(make_scene(), tmp_path / "light.glb", color_mode="pca", show_cameras=False,
                                     max_points=100))
    (cloud,) = loaded.geometry.values()
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == 100


def test_overlays_show_only_highlighted_instances():
    scene = make_scene()
    everything = instance_overlays(scene)
    only_first = instance_overlays(scene, highlight=[0])
    photo = np.round(scene.images[0] * 255).astype(np.uint8)
    first, second = scene.instances.labels[0] == 0, scene.instances.labels[0] == 1
    assert len(everything) == scene.num_views and everything[0].dtype == np.uint8
    for overlay in (everything[0], only_first[0]):
        assert (overlay[first] != photo[first]).any(axis=1).all()  # tinted or outlined
    assert (everything[0][second] != photo[second]).any(axis=1).all()
    assert (only_first[0][second] == photo[second]).all()  # not highlighted: the plain photo


def test_colmap_model_is_read_by_pycolmap(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    scene = make_scene()
    write_colmap(scene, tmp_path / "colmap", max_points=300, conf_percentile=0)
    model = pycolmap.Reconstruction(tmp_path / "colmap")
    assert len(model.cameras) == scene.num_views and len(model.images) == scene.num_views
    assert len(model.points3D) == 300
    for index in range(scene.num_views):
        image = model.images[index + 1]
        assert np.allclose(image.cam_from_world().matrix(), scene.extrinsics[index], atol=1e-5)
        camera = model.cameras[image.camera_id]
        assert (camera.width, camera.height) == (84, 56)  # the original photo size
        assert image.name == f"photo_{index}.jpg"
    # Observations agree with the cameras: reprojection error about zero, tracks span views.
    errors = []
    for point in model.points3D.values():
        for element in point.track.elements:
            image = model.images[element.image_id]
            projected = model.cameras[image.camera_id].img_from_cam(image.cam_from_world() * point.xyz)
            errors.append(np.linalg.norm(projected - image.points2D[element.point2D_idx].xy))
    assert max(errors) < 1e-2
    assert np.mean([p.track.length() for p in model.points3D.values()]) > 1.5


def test_colmap_tracks_of_many_views_are_capped(tmp_path):
    """Issue 22: with more views than `MAX_OBSERVATIONS_PER_POINT`, a point keeps about that many
    observations (every k-th view from an offset of its own), spread over all views, its own view always."""
    pycolmap = pytest.importorskip("pycolmap")
    scene = make_scene(views=20)
    write_colmap(scene, tmp_path / "all", max_points=200, conf_percentile=0)
    with mock.patch("iggt.export.MAX_OBSERVATIONS_PER_POINT", 4):  # every 5th view
        write_colmap(scene, tmp_path / "capped", max_points=200, conf_percentile=0)
    full, capped = (pycolmap.Reconstruction(tmp_path / name) for name in ("all", "capped"))
    assert len(capped.points3D) == len(full.points3D) == 200
    full_lengths = np.array([p.track.length() for p in full.points3D.values()])
    lengths = np.array([p.track.length() for p in capped.points3D.values()])
    assert full_lengths.max() > 5 and lengths.max() <= 4 + 1 and lengths.sum() < full_lengths.sum() / 2
    observed = {element.image_id for p in capped.points3D.values() for element in p.track.elements}
    assert observed == set(capped.images)


def test_export_all_writes_every_format(tmp_path):
    scene = make_scene()
    steps = []
    written = export_all(scene, tmp_path, progress=lambda f, m: steps.append(f))
    assert {"glb", "glb_instances", "glb_features", "ply", "masks", "json", "colmap", "scene"} == set(written)
    assert all(path.exists() for path in written.values())
    summary = json.loads(written["json"].read_text())
    assert summary["num_views"] == 3 and summary["num_instances"] == 2
    assert summary["views"][1]["name"] == "photo 1.jpg"
    assert np.allclose(summary["views"][1]["extrinsics_world_to_camera"], scene.extrinsics[1], atol=1e-6)
    reloaded = Scene.load(written["scene"])
    assert reloaded.instances.count == 2
    assert steps[0] == 0 and steps[-1] == 1.0 and steps == sorted(steps)


def test_export_all_refuses_masks_without_instances_and_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="no instances"):
        export_all(make_scene(with_instances=False), tmp_path, formats=["masks"])
    with pytest.raises(ValueError, match="unknown export format"):
        export_all(make_scene(), tmp_path, formats=["obj"])
    assert set(FORMATS) >= {"glb", "ply", "masks", "json", "colmap", "scene"}


def test_upsampled_labels_have_smooth_edges_not_blocks():
    """A diagonal edge between two instances, upsampled 8x: the edge moves by about one photo pixel per
    row (as the bilinear features do), not in steps of 8 as nearest-neighbour upsampling would."""
    scene = make_scene(views=1, height=16, width=16)
    yy, xx = np.mgrid[:16, :16]
    labels = np.where(xx > yy, 1, 0)[None]
    scene.features = np.stack([labels[0] * 2.0 - 1.0, np.zeros((16, 16))] + [np.zeros((16, 16))] * 6,
                              axis=-1)[None].astype(np.float32)
    scene.instances = describe_instances(labels, scene.points_from_depth, scene.images)
    scene.view_transforms = [ViewTransform((128, 128), (16, 16))]
    up = upsample_labels(scene, 0, (128, 128))
    edge = np.array([np.argmax(row != row[0]) for row in up[8:100]])
    steps = np.diff(edge)
    assert set(np.unique(steps)) <= {0, 1, 2} and (steps > 0).mean() > 0.5


def test_the_app_gallery_redraws_a_highlight_from_kept_labels_as_from_scratch(monkeypatch):
    """The app keeps each view's upsampled labels (`demo.pictures.GalleryViews`): a new highlight draws the same
    pictures as drawing from scratch without upsampling again, and a new clustering is upsampled afresh."""
    import demo.pictures as pictures

    scene = make_scene()
    photos = [Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((84, 56)) for image in scene.images]
    upsampled = []
    real_upsample = pictures.upsample_labels
    monkeypatch.setattr(pictures, "upsample_labels", lambda *args: upsampled.append(args[1]) or real_upsample(*args))
    gallery = pictures.GalleryViews(photos, side=64)
    for highlight in (None, [0], [1]):
        kept = gallery.overlays(scene, highlight)
        fresh = instance_overlays(scene, highlight=highlight, photos=photos, max_side=64)
        assert all(a.shape == (43, 64, 3) and np.array_equal(a, b) for a, b in zip(kept, fresh, strict=True))
    assert upsampled == [0, 1, 2]  # once per view for three highlights
    reclustered = scene.with_instances(replace(scene.instances, labels=scene.instances.labels[:, ::-1].copy()))
    assert np.array_equal(gallery.overlays(reclustered, None, views=[1])[0],
                          instance_overlays(reclustered, photos=photos, max_side=64, views=[1])[0])
    assert upsampled == [0, 1, 2, 1]
