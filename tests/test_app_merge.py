"""The app's post-processing that needs no browser: merging small pieces (`iggt.merge`, issue 25
item 8) and the 3D view's selection box and structure selection (`demo.viewer3d`, item 3)."""
from __future__ import annotations

import base64
from dataclasses import replace

import numpy as np

from grounding.evaluation import benchmark_scene
from iggt.export import PointCloudOptions
from iggt.instances import describe_instances
from iggt.merge import border_lengths, merge_small_instances
from iggt.scene import Instances
from demo.viewer3d import viewer_value


def with_labels(scene, labels: np.ndarray):
    return scene.with_instances(describe_instances(labels, scene.points_from_depth, scene.images))


def test_a_small_piece_joins_the_neighbour_it_touches_most():
    _, scene = benchmark_scene(3)
    views, height, width = scene.instances.labels.shape
    labels = np.zeros((views, height, width), np.int32)
    labels[:, :, width // 2:] = 1
    labels[:, :4, width // 2 - 3: width // 2 + 1] = 2  # a sliver on the border of 0 and 1, mostly on 0's side
    labels[:, -3:, -3:] = -1
    labels[:, -2:, -2:] = 3  # surrounded by background: touches no instance
    scene = with_labels(scene, labels)
    sizes = {info.id: info.pixel_count for info in scene.instances.info}
    assert len(sizes) == 4
    sliver = scene.instances.labels[0, 0, width // 2 - 2]
    lone = scene.instances.labels[0, -1, -1]
    borders = border_lengths(scene.instances.labels, 4)
    assert (borders == borders.T).all() and borders[lone].sum() == 0
    neighbour = int(np.argmax(borders[sliver]))

    merged = merge_small_instances(scene, 0.01)
    assert merged.count == 3, "the sliver is merged, the lone piece stays"
    joined = merged.labels[scene.instances.labels == sliver]
    assert (joined == merged.labels[scene.instances.labels == neighbour][0]).all()
    assert merged.info[merged.labels[0, -1, -1]].pixel_count == sizes[lone]
    assert merge_small_instances(scene, 0.0) is scene.instances
    assert sum(i.pixel_count for i in merged.info) == sum(sizes.values())


def segments_of(value: dict) -> np.ndarray:
    lines = np.frombuffer(base64.b64decode(value["lines"]), np.float32).reshape(-1, 2, 3)
    return lines[value["camera_segments"]:]


def test_the_selection_box_follows_the_points_shown():
    """In point-map mode the box surrounds the point-map points, not the depth branch's stored box."""
    _, scene = benchmark_scene(3)
    chosen = max(scene.instances.object_ids, key=lambda k: scene.instances.info[k].pixel_count)
    shift = np.array([0.5, 0.0, 0.0], np.float32)
    scene = replace(scene, world_points=scene.points_from_depth + shift)
    for geometry, offset in (("depth", 0.0), ("points", 0.5)):
        value, instance = viewer_value(scene, PointCloudOptions(geometry=geometry, conf_percentile=0), True, [chosen])
        box = segments_of(value).reshape(-1, 3)
        assert len(box) == 24, "twelve edges"
        stored = (np.array(scene.instances.info[chosen].bbox_min) + scene.instances.info[chosen].bbox_max) / 2
        centre = (box.min(axis=0) + box.max(axis=0)) / 2
        assert abs(centre[0] - stored[0] - offset) < 0.05, geometry
        assert len(instance) == value["count"]


def test_a_selected_structure_instance_is_drawn_and_tinted_when_structure_is_hidden():
    _, scene = benchmark_scene(3)
    info = list(scene.instances.info)
    floor = max(info, key=lambda i: i.pixel_count).id
    info[floor] = replace(info[floor], structure=True)
    scene = scene.with_instances(Instances(scene.instances.labels, info))
    hidden = PointCloudOptions(color_mode="instance", drop_structure=True, conf_percentile=0)
    _, nothing = viewer_value(scene, hidden, False, [])
    value, shown = viewer_value(scene, hidden, False, [floor])
    assert floor not in nothing and (shown == floor).sum() > 0
    colors = np.frombuffer(base64.b64decode(value["colors"]), np.uint8).reshape(-1, 3)[shown == floor]
    own = np.array(info[floor].color)
    assert (np.abs(colors.astype(int) - own).sum(axis=1) > 60).all(), "the selected structure is not tinted"
