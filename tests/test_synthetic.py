"""The procedural generator: deterministic, geometrically exact, varied, and its oracle Scene."""
import collections

import numpy as np
import pytest

from iggt.data.oracle import oracle_scene
from iggt.data.scene_format import STRUCTURE_IDS, load_scene_record, relative_extrinsics, semantic_index
from iggt.data.synthetic import CATEGORIES, GeneratorConfig, generate_dataset, generate_scene, layout, scene_seed
from iggt.geometry import unproject_depth

SMALL = GeneratorConfig(num_views=4, image_size=(96, 128))
TINY = GeneratorConfig(num_views=3, image_size=(28, 28))
ROOM_SEED_7_PIXEL_SUM = 624878
"""Sum of the pixels of ``generate_scene(7, TINY)``, measured before table-top scenes existed."""


@pytest.fixture(scope="module")
def record():
    return generate_scene(11, SMALL)


def test_same_seed_same_scene_other_seed_other_scene(record):
    again = generate_scene(11, SMALL)
    for name in ("images", "depth", "extrinsics", "intrinsics", "instance_ids", "semantic", "structure"):
        np.testing.assert_array_equal(getattr(again, name), getattr(record, name), err_msg=name)
    assert again.objects == record.objects
    other = generate_scene(12, SMALL)
    assert not np.array_equal(other.images, record.images)


def test_record_shapes_and_conventions(record):
    views, (height, width) = 4, SMALL.image_size
    assert record.images.shape == (views, height, width, 3) and record.images.dtype == np.uint8
    assert record.depth.shape == (views, height, width) and record.depth.dtype == np.float32
    assert record.instance_ids.dtype == np.int32 and record.semantic.shape == (views, height, width)
    assert record.intrinsics[0, 0, 2] == width / 2 and record.intrinsics[0, 1, 2] == height / 2
    ids = {o.id for o in record.objects}
    assert ids == set(range(1, len(record.objects) + 1))
    assert set(np.unique(record.instance_ids)) <= ids | {0}
    # semantic labels agree with the objects' categories
    for obj in record.objects:
        mask = record.instance_ids == obj.id
        if mask.any():
            assert set(np.unique(record.semantic[mask])) == {semantic_index(CATEGORIES, obj.category)}
    assert (record.semantic[record.instance_ids == 0] == 0).all()


def test_structure_labels_are_the_room_surfaces_they_name():
    """Checked on the geometry, not on the renderer's bookkeeping: floor pixels lie at z = 0, the
    pixels of one wall on one plane x = const (or y = const), and -x lies below +x."""
    record = generate_scene(5, GeneratorConfig(num_views=6, image_size=(96, 128)))
    room = (record.depth > 0) & (record.instance_ids == 0)
    assert np.array_equal(record.structure > 0, room)  # every room pixel has a surface, nothing else does
    points = unproject_depth(record.depth, record.extrinsics, record.intrinsics)
    floor = points[record.structure == STRUCTURE_IDS["floor"]]
    assert len(floor) > 100 and np.abs(floor[:, 2]).max() < 0.02
    seen_walls = 0
    for axis, name in ((0, "x"), (1, "y")):
        planes = {}
        for sign in "-+":
            wall = points[record.structure == STRUCTURE_IDS[f"wall {sign}{name}"]]
            if len(wall) > 20:
                assert np.ptp(wall[:, axis]) < 0.05, f"wall {sign}{name} is not one plane"
                assert wall[:, 2].min() > -0.02  # above the floor
                planes[sign] = np.median(wall[:, axis])
        if len(planes) == 2:
            assert planes["-"] < planes["+"]
        seen_walls += len(planes)
    assert seen_walls >= 1


def _cross_view_agreement(record, i, j):
    """Share of view i's object pixels that are visible in view j and carry the same id there."""
    points = unproject_depth(record.depth[i:i + 1], record.extrinsics[i:i + 1], record.intrinsics[i:i + 1])[0]
    valid = record.depth[i] > 0
    cam = points[valid] @ record.extrinsics[j, :, :3].T + record.extrinsics[j, :, 3]
    k = record.intrinsics[j]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(k[0, 0] * cam[:, 0] / z + k[0, 2])
        v = np.rint(k[1, 1] * cam[:, 1] / z + k[1, 2])
    height, width = record.depth.shape[1:]
    inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v = u[inside].astype(int), v[inside].astype(int)
    seen = np.abs(record.depth[j, v, u] - z[inside]) < 0.01 * z[inside] + 0.005  # not occluded in view j
    ids_i = record.instance_ids[i][valid][inside][seen]
    ids_j = record.instance_ids[j, v, u][seen]
    objects = ids_i > 0
    return (ids_i[objects] == ids_j[objects]).mean(), objects.sum()


def test_depth_and_ids_are_consistent_across_views(record):
    for i, j in [(0, 1), (1, 3), (3, 0)]:
        agreement, count = _cross_view_agreement(record, i, j)
        assert count > 50, (i, j, count)
        assert agreement > 0.95, (i, j, agreement)


def test_depth_matches_the_object_boxes(record):
    """Points unprojected from depth lie inside (or on) the bounding box of their object."""
    points = unproject_depth(record.depth, record.extrinsics, record.intrinsics)
    for obj in record.objects:
        mask = record.instance_ids == obj.id
        if not mask.any():
            continue
        low = np.array(obj.center) - np.array(obj.size) / 2 - 0.01
        high = np.array(obj.center) + np.array(obj.size) / 2 + 0.01
        inside = ((points[mask] >= low) & (points[mask] <= high)).all(axis=1)
        assert inside.mean() > 0.99, (obj, inside.mean())


def test_variety_over_a_few_seeds():
    records = [generate_scene(seed, TINY) for seed in range(6)]
    categories = {o.category for r in records for o in r.objects}
    assert len(categories) >= 6, categories
    duplicates = [r for r in records
                  if max(collections.Counter((o.category, o.color_name) for o in r.objects).values()) >= 2]
    assert len(duplicates) >= 2
    assert len({r.meta["trajectory"] for r in records}) >= 2
    for r in records:
        assert 3 <= len(r.objects) <= 15
        for view in range(r.num_views):
            assert (r.instance_ids[view] > 0).any(), (r.name, view)  # every view sees an object


def test_objects_rest_on_the_floor_or_on_another_and_never_overlap():
    for seed in range(8):
        objects = layout.place_objects(GeneratorConfig(stack_probability=0.8), np.random.default_rng(seed))
        on_floor = [o for o in objects if abs(o.info.center[2] - o.info.size[2] / 2) < 1e-9]
        for o in objects:
            if o not in on_floor:
                bottom = o.info.center[2] - o.info.size[2] / 2
                assert any(abs(bottom - s.top) < 1e-9 and np.hypot(*np.subtract(o.info.center[:2], s.info.center[:2]))
                           + o.footprint <= s.top_radius for s in on_floor), o.info
        for a in range(len(on_floor)):
            for b in range(a + 1, len(on_floor)):
                gap = np.hypot(*np.subtract(on_floor[a].info.center[:2], on_floor[b].info.center[:2]))
                assert gap >= on_floor[a].footprint + on_floor[b].footprint


def test_bad_config_is_explained():
    with pytest.raises(ValueError, match="categories must be a non-empty subset"):
        GeneratorConfig(categories=("cube", "dragon"))
    with pytest.raises(ValueError, match="object_count"):
        GeneratorConfig(object_count=(5, 2))


def test_generate_dataset_writes_loadable_scenes_and_resumes(tmp_path):
    paths = generate_dataset(tmp_path, 2, seed=3, config=TINY, progress=False)
    assert [p.name for p in paths] == ["scene_000000", "scene_000001"]
    first = load_scene_record(paths[0])
    assert first.name == "scene_000000" and first.meta["seed"] == scene_seed(3, 0)
    stamp = (paths[0] / "meta.json").stat().st_mtime_ns
    generate_dataset(tmp_path, 3, seed=3, config=TINY, progress=False)
    assert (paths[0] / "meta.json").stat().st_mtime_ns == stamp  # finished scenes are not redone
    assert (tmp_path / "scene_000002" / "meta.json").is_file()


def test_oracle_scene(record):
    scene = oracle_scene(record)
    np.testing.assert_allclose(scene.extrinsics[0], np.eye(3, 4), atol=1e-6)
    np.testing.assert_allclose(scene.extrinsics, relative_extrinsics(record.extrinsics))
    visible = sorted(set(np.unique(record.instance_ids).tolist()) - {0})
    assert scene.instances.count == len(visible)
    names = sorted(i.name for i in scene.instances.info)
    assert names == sorted(record.object(k).name for k in visible)
    assert all(" " in n for n in names)
    # instance masks are the record's objects, and features separate them
    for info in scene.instances.info:
        record_ids = np.unique(record.instance_ids[scene.instances.mask(info.id)])
        assert len(record_ids) == 1 and record.object(int(record_ids[0])).name == info.name
    np.testing.assert_allclose(np.linalg.norm(scene.features, axis=-1), 1.0, atol=1e-5)
    # world points sit in the first camera's frame: view 0 points have camera z = depth
    valid = record.depth[0] > 0
    np.testing.assert_allclose(scene.world_points[0][valid][:, 2], record.depth[0][valid], rtol=1e-4, atol=1e-4)
    assert (scene.depth_conf[record.depth > 0] > scene.depth_conf[record.depth == 0].max(initial=0)).all()


@pytest.mark.slow
def test_parallel_generation_writes_the_same_files(tmp_path):
    serial = generate_dataset(tmp_path / "serial", 3, seed=8, config=TINY, progress=False)
    parallel = generate_dataset(tmp_path / "parallel", 3, seed=8, config=TINY, progress=False, workers=2)
    for a, b in zip(serial, parallel):
        files = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
        assert files == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_tabletop_scenes_hold_small_objects_seen_from_above():
    config = GeneratorConfig(kind="tabletop", num_views=3, image_size=(48, 48))
    room = [generate_scene(seed, GeneratorConfig(num_views=3, image_size=(48, 48))) for seed in range(4)]
    tabletop = [generate_scene(seed, config) for seed in range(4)]
    for r in tabletop:
        assert r.meta["trajectory"] == "above"
        assert {o.category for o in r.objects}.isdisjoint({"table", "chair"})
        for extrinsic in r.extrinsics:  # the optical axis (third row of R) points down by 20-80 degrees
            pitch = np.degrees(np.arcsin(-extrinsic[2, 2]))
            assert 20 < pitch < 80, pitch
        for view in range(r.num_views):
            assert (r.instance_ids[view] > 0).any(), (r.name, view)
    room_size = np.median([max(o.size) for r in room for o in r.objects])
    tabletop_size = np.median([max(o.size) for r in tabletop for o in r.objects])
    assert tabletop_size < 0.6 * room_size
    with pytest.raises(ValueError, match="kind must be one of"):
        GeneratorConfig(kind="garden")
    with pytest.raises(ValueError, match="tabletop scene needs"):
        GeneratorConfig(kind="tabletop", categories=("table",))


def test_room_scenes_are_unchanged_by_the_scene_kinds():
    """Digest of a room scene made before table-top scenes existed: the same seed, the same pixels."""
    record = generate_scene(7, TINY)
    assert int(record.images.astype(np.int64).sum()) == ROOM_SEED_7_PIXEL_SUM
