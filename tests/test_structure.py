"""Structure (floor, walls, large planes, sky) told apart from objects: `iggt.structure`, and how the
point selection, the scene file and the grounding's scope use it."""
from __future__ import annotations

import numpy as np

from grounding.agent import asks_about_structure
from iggt.export import PointCloudOptions, select_points
from iggt.instances import describe_instances
from iggt.scene import InstanceInfo, Scene
from iggt.structure import StructureConfig, mark_structure, sky_pixels, structure_mask

HEIGHT, WIDTH = 40, 60
FLOOR, WALL, BOOK = 0, 1, 2


def scene_of(points: np.ndarray, labels: np.ndarray, views: int = 1) -> Scene:
    """A scene of ``views`` identical views of ``points`` ``[H, W, 3]`` (camera at the origin looking
    along +z) with ``labels`` as its instances."""
    height, width = labels.shape
    images = np.full((views, height, width, 3), 0.5, np.float32)
    ones = np.ones((views, height, width), np.float32)
    points = np.repeat(points[None].astype(np.float32), views, axis=0)
    intrinsics = np.array([[40.0, 0, width / 2], [0, 40.0, height / 2], [0, 0, 1]], np.float32)
    scene = Scene(images=images, extrinsics=np.repeat(np.eye(3, 4, dtype=np.float32)[None], views, axis=0),
                  intrinsics=np.repeat(intrinsics[None], views, axis=0), depth=points[..., 2].copy(),
                  depth_conf=ones * 2, world_points=points, world_points_conf=ones * 2, points_from_depth=points,
                  features=np.zeros((views, height, width, 8), np.float32))
    scene.instances = describe_instances(np.repeat(labels[None], views, axis=0), scene.points_from_depth,
                                         scene.images)
    return scene


def room() -> tuple[Scene, np.ndarray]:
    """One view of a room: a wall (top half), a floor (bottom half) with a box standing on it that
    the clustering merged with the floor (same label), and a small flat book held above the floor."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH].astype(float)
    x = (cols - WIDTH / 2) * 0.1
    points = np.stack([x, (rows - HEIGHT / 2) * 0.1, np.full_like(x, 5.0)], axis=-1)  # the wall at z = 5
    floor = rows >= HEIGHT / 2
    depth = 2.0 + (rows[floor] - HEIGHT / 2) * 0.15
    points[floor] = np.stack([x[floor], np.full(floor.sum(), 1.0), depth], axis=-1)
    labels = np.where(floor, FLOOR, WALL)
    box = (rows >= 24) & (rows < 34) & (cols >= 22) & (cols < 38)
    points[box] = np.stack([x[box], 0.2 + (rows[box] - 24) * 0.05, np.full(box.sum(), 3.0)], axis=-1)
    book = (rows >= 36) & (rows < 39) & (cols >= 4) & (cols < 8)
    points[book, 1] = 0.8
    labels[book] = BOOK
    return scene_of(points, labels), box


def test_floor_and_wall_are_structure_and_the_box_on_the_floor_is_split_off():
    scene, box = room()
    instances = mark_structure(scene)
    mask = structure_mask(instances)
    assert mask[0, 5, 5] and mask[0, HEIGHT - 2, WIDTH - 2], "wall and floor are structure"
    box_ids = np.unique(instances.labels[0][box])
    assert len(box_ids) == 1 and not instances.info[box_ids[0]].structure, "the box stays an object"
    book_id = instances.labels[0, 37, 5]
    assert book_id >= 0 and not instances.info[book_id].structure, "a small flat thing is not structure"
    assert sorted(instances.object_ids) == sorted({int(box_ids[0]), int(book_id)})
    grey = np.array(instances.info[instances.labels[0, 5, 5]].color, float)
    assert np.ptp(grey) <= 0.3 * 255 + 1, "structure is drawn in a greyed colour"


def test_a_large_flat_object_with_room_on_both_sides_is_not_structure():
    """A cupboard front as wide as the room, standing mid-room: the floor runs in front of and behind
    it. Floor and back wall bound the scene and are structure; the cupboard is as large and as flat,
    but a quarter of the room lies in front of it and half behind, so it stays an object."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH].astype(float)
    x = (cols - WIDTH / 2) * 0.1  # the room is 6 wide
    wall, cupboard, floor = rows < 10, (rows >= 10) & (rows < 20), rows >= 20
    points = np.zeros((HEIGHT, WIDTH, 3))
    points[wall] = np.stack([x[wall], -1.0 - rows[wall] * 0.1, np.full(wall.sum(), 9.0)], axis=-1)
    points[cupboard] = np.stack([x[cupboard], (rows[cupboard] - 20) * 0.1, np.full(cupboard.sum(), 5.0)], axis=-1)
    points[floor] = np.stack([x[floor], np.ones(floor.sum()), 1.0 + (rows[floor] - 20) * 0.4], axis=-1)
    scene = scene_of(points, np.select([wall, cupboard], [WALL, BOOK], FLOOR))

    instances = mark_structure(scene)
    flagged = {name: instances.info[instances.labels[0, row, 30]].structure
               for name, row in (("wall", 5), ("cupboard", 15), ("floor", 30))}
    assert flagged == {"wall": True, "cupboard": False, "floor": True}
    one_sided_rule_off = mark_structure(scene, StructureConfig(max_far_side_share=1.0))
    assert one_sided_rule_off.info[one_sided_rule_off.labels[0, 15, 30]].structure, \
        "size and flatness alone take the cupboard for a wall"


def curved_wall_room(margin: int) -> Scene:
    """Two identical views of `room` whose wall bends back by 0.12 x² (the model's walls are curved), the
    wall's label kept ``margin`` pixels away from the photo's border (unlabelled there)."""
    scene, _ = room()
    points = scene.points_from_depth[0].copy()
    wall = np.zeros((HEIGHT, WIDTH), bool)
    wall[: HEIGHT // 2] = True  # the top half (`room`)
    points[wall, 2] += 0.12 * points[wall, 0] ** 2
    labels = scene.instances.labels[0].copy()
    if margin:
        ring = np.ones(labels.shape, bool)
        ring[margin:-margin, margin:-margin] = False
        labels[ring & wall] = -1
    return scene_of(points, labels, views=2)


def test_a_curved_wall_that_runs_off_every_photo_is_structure():
    """The model's walls wave more than the plane tolerance: found with a looser one because the wall
    runs off the photo in every view, which an object rarely does (`edge_tolerance_factor`)."""
    def wall_is_structure(scene: Scene, config: StructureConfig = StructureConfig()) -> bool:
        instances = mark_structure(scene, config)
        return instances.info[instances.labels[0, 5, 30]].structure

    assert wall_is_structure(curved_wall_room(margin=0))
    assert not wall_is_structure(curved_wall_room(margin=0), StructureConfig(edge_tolerance_factor=1.0))
    assert not wall_is_structure(curved_wall_room(margin=1)), "inside every photo: the strict tolerance holds"


def test_structure_flag_is_saved_and_old_files_load_without_it(tmp_path):
    scene, _ = room()
    scene.instances = mark_structure(scene)
    loaded = Scene.load(scene.save(tmp_path / "room.npz"))
    assert [i.structure for i in loaded.instances.info] == [i.structure for i in scene.instances.info]
    old = scene.instances.info[0].to_json()
    del old["structure"]
    assert InstanceInfo.from_json(old).structure is False


def test_point_selection_drops_structure_frames_and_colours():
    scene, box = room()
    scene.instances = mark_structure(scene)
    everything = select_points(scene, PointCloudOptions(conf_percentile=0))
    objects = select_points(scene, PointCloudOptions(conf_percentile=0, drop_structure=True))
    assert len(everything.points) == HEIGHT * WIDTH and len(objects.points) == box.sum() + 12
    scene.images[0, :5] = 0.0  # black
    scene.images[0, 5:10] = 1.0  # white
    for drop in ("drop_black", "drop_white"):
        kept = select_points(scene, PointCloudOptions(conf_percentile=0, **{drop: True}))
        assert len(kept.points) == (HEIGHT - 5) * WIDTH, drop
    assert len(select_points(scene, PointCloudOptions(conf_percentile=0, views=[])).points) == 0


def test_sky_is_bright_or_blue_far_and_touches_the_top_edge():
    scene, _ = room()
    scene.images[0, :8] = (0.55, 0.75, 0.95)  # blue band along the top, far away (the wall)
    scene.images[0, 30:36, 40:50] = (0.2, 0.3, 0.9)  # a blue object on the floor: not sky
    scene.depth[0, :8] = 50.0
    sky = sky_pixels(scene)[0]
    assert sky[:8].all() and not sky[8:].any()


def test_questions_about_structure_keep_it_in_scope():
    assert asks_about_structure("What colour is the floor?") and asks_about_structure("Which wall is nearest?")
    assert not asks_about_structure("How many cubes are there?")
