"""Bounded memory after the model (issue 22, item 2): compact `Scene` dtypes, memory-mapped
``scene.npz``, chunked clustering and exports, and the viewers' point caps."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import trimesh
from sklearn.metrics import adjusted_rand_score

import iggt.export as export
import iggt.instances as instances
from iggt import cli_view, viewer
from iggt.data.oracle import oracle_scene
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.errors import IGGTError
from iggt.export import FeaturePCA, PointCloudOptions, feature_pca_colors, select_points, write_ply
from iggt.instances import ClusteringConfig, segment_instances
from iggt.scene import COMPACT_DTYPES, Scene, rgb_float, rgb_uint8, view_chunks


@pytest.fixture(scope="module")
def scene() -> Scene:
    """Ground truth of a generated room, float32 as a model gives it."""
    return oracle_scene(generate_scene(11, GeneratorConfig(num_views=5, image_size=(64, 80), object_count=(3, 4))))


def one_view_chunks(count: int, size: int = 1):
    return view_chunks(count, 1)


# -- compact dtypes -----------------------------------------------------------------------
def test_compact_scene_has_compact_dtypes_within_their_precision(scene):
    compact = scene.compact()
    for name, dtype in COMPACT_DTYPES.items():
        assert getattr(compact, name).dtype == dtype, name
    assert compact.depth is scene.depth and compact.points_from_depth.dtype == np.float32
    assert np.abs(rgb_float(compact.images) - scene.images).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_array_equal(rgb_uint8(compact.images), rgb_uint8(scene.images))
    assert np.abs(compact.features.astype(np.float32) - scene.features).max() < 1e-3
    assert compact.compact().features is compact.features  # already compact: shared, not copied


def test_confidences_beyond_float16_are_clipped_not_infinite(scene):
    loud = scene.with_instances(None)
    loud.depth_conf = np.full(scene.depth.shape, 1e6, np.float32)
    assert np.isfinite(loud.compact().depth_conf).all()


# -- scene.npz ----------------------------------------------------------------------------
@pytest.fixture
def map_small_arrays(monkeypatch):
    """This scene's arrays are below `MEMORY_MAP_BYTES`: map them too."""
    import iggt.scene

    monkeypatch.setattr(iggt.scene, "MEMORY_MAP_BYTES", 1024)


def test_saved_scene_is_compact_memory_mapped_and_copy_on_write(scene, tmp_path, map_small_arrays):
    path = scene.save(tmp_path / "scene.npz")
    with zipfile.ZipFile(path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    loaded = Scene.load(path)
    assert isinstance(loaded.features, np.memmap) and loaded.features.dtype == np.float16
    assert loaded.images.dtype == np.uint8 and loaded.depth.dtype == np.float32
    np.testing.assert_array_equal(loaded.depth, scene.depth)
    np.testing.assert_array_equal(loaded.instances.labels, scene.instances.labels)
    loaded.depth[0] = -1  # changes memory only
    np.testing.assert_array_equal(Scene.load(path).depth, scene.depth)
    read = Scene.load(path, memory_map=False)
    assert not isinstance(read.features, np.memmap)
    np.testing.assert_array_equal(read.features, loaded.features)


def test_saving_over_a_mapped_file_keeps_the_mapped_scene_readable(scene, tmp_path, map_small_arrays):
    path = scene.save(tmp_path / "scene.npz")
    loaded = Scene.load(path)
    scene.select_views([0, 1]).save(path)
    assert loaded.num_views == 5 and np.isfinite(loaded.depth).all()
    assert Scene.load(path).num_views == 2


def test_scene_files_of_earlier_versions_still_load(scene, tmp_path):
    """Earlier versions wrote float32 arrays with np.savez_compressed."""
    path = scene.save(tmp_path / "new.npz")
    with np.load(path) as new:
        meta = new["meta_json"]
    old = tmp_path / "old.npz"
    np.savez_compressed(old, **{name: getattr(scene, name) for name in Scene._ARRAYS}, meta_json=meta,
                        instance_labels=scene.instances.labels)
    loaded = Scene.load(old)
    assert loaded.features.dtype == np.float32 and not isinstance(loaded.features, np.memmap)
    np.testing.assert_array_equal(loaded.features, scene.features)
    assert loaded.instances.count == scene.instances.count


def test_a_member_holding_python_objects_is_refused(scene, tmp_path, map_small_arrays):
    path = scene.save(tmp_path / "scene.npz")
    with zipfile.ZipFile(path, "a") as archive, archive.open("evil.npy", "w") as member:
        np.lib.format.write_array(member, np.array([{"a": 1}] * 1000, dtype=object), allow_pickle=True)
    with pytest.raises(IGGTError, match="not a readable scene file"):
        Scene.load(path)


# -- clustering in chunks -----------------------------------------------------------------
def test_clustering_by_view_chunks_equals_clustering_at_once(scene, monkeypatch):
    config = ClusteringConfig.from_preset("medium", max_cluster_points=2000)
    whole = segment_instances(scene, config).labels
    monkeypatch.setattr(instances, "view_chunks", one_view_chunks)
    np.testing.assert_array_equal(segment_instances(scene, config).labels, whole)


def test_a_compact_scene_clusters_as_the_float32_one(scene):
    config = ClusteringConfig.from_preset("medium", max_cluster_points=2000)
    full, compact = segment_instances(scene, config).labels, segment_instances(scene.compact(), config).labels
    assert adjusted_rand_score(full.reshape(-1), compact.reshape(-1)) > 0.99


# -- exports in chunks --------------------------------------------------------------------
@pytest.mark.parametrize("options", [PointCloudOptions(), PointCloudOptions(max_points=500, color_mode="instance"),
                                     PointCloudOptions(color_mode="pca", drop_black=True, drop_white=True)])
def test_points_selected_by_view_chunks_are_those_selected_at_once(scene, monkeypatch, options):
    whole = select_points(scene, options)
    monkeypatch.setattr(export, "view_chunks", one_view_chunks)
    chunked = select_points(scene, options)
    for name in ("points", "colors", "instance", "view", "pixel"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)


def test_streamed_ply_holds_the_selected_points(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "view_chunks", one_view_chunks)
    cloud = select_points(scene.compact())
    ply = trimesh.load(write_ply(scene.compact(), tmp_path / "points.ply"))
    np.testing.assert_allclose(np.asarray(ply.vertices), cloud.points)
    np.testing.assert_array_equal(np.asarray(ply.colors)[:, :3], cloud.colors)


def test_glb_point_clouds_are_capped(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "GLB_MAX_POINTS", 300)
    loaded = trimesh.load(export.export_glb(scene, tmp_path / "scene.glb"))
    clouds = [g for g in loaded.geometry.values() if isinstance(g, trimesh.PointCloud)]
    assert len(clouds[0].vertices) == 300


def test_pca_is_fitted_on_a_sample_of_big_scenes(scene, monkeypatch):
    exact = feature_pca_colors(scene.features)
    monkeypatch.setattr(export, "PCA_FIT_PIXELS", 5000)
    sampled = FeaturePCA.fit(scene.features).colors(scene.features)
    assert sampled.shape == exact.shape and np.abs(sampled.astype(int) - exact).mean() < 8


# -- the viewers' caps --------------------------------------------------------------------
def test_iggt_view_defaults_to_the_viewers_stated_cap():
    import argparse

    parser = argparse.ArgumentParser()
    cli_view.register(parser.add_subparsers())
    assert parser.parse_args(["view", "scene.npz"]).max_points is None  # run() takes viewer.MAX_POINTS
    assert viewer.ViewerConfig().max_points == viewer.MAX_POINTS
