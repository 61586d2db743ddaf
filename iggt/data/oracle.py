"""The ground truth of a scene record as a `Scene`, as a perfect model would predict it: the
reference that evaluation and grounding compare against."""
from __future__ import annotations

import numpy as np

from iggt.data.scene_format import SceneRecord, relative_extrinsics
from iggt.geometry import unproject_depth
from iggt.instances import describe_instances
from iggt.scene import Scene, ViewTransform, labels_from_one_based

ORACLE_FEATURE_DIM = 8


def oracle_scene(record: SceneRecord) -> Scene:
    """The record's ground truth as a `Scene`, as a perfect model would predict it.

    World = first camera; depth confidence high where there is a surface; features are fixed
    random unit vectors per instance id (so clustering recovers the instances); instances come
    from `describe_instances` on the true ids, named "<color_name> <category>".
    """
    extrinsics = relative_extrinsics(record.extrinsics)
    depth = record.depth.astype(np.float32)
    points = unproject_depth(depth, extrinsics, record.intrinsics)
    confidence = np.where(depth > 0, 50.0, 1.0).astype(np.float32)
    images = record.images.astype(np.float32) / 255.0
    directions = np.random.default_rng(0).normal(size=(int(record.instance_ids.max()) + 1, ORACLE_FEATURE_DIM))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    labels = labels_from_one_based(record.instance_ids)
    instances = describe_instances(labels, points, images)
    for info in instances.info:  # describe_instances orders ids by size: map back to the record's ids
        record_id = int(record.instance_ids[instances.labels == info.id][0])
        info.name = record.object(record_id).name
    height, width = record.image_size
    return Scene(images=images, extrinsics=extrinsics, intrinsics=record.intrinsics.astype(np.float32), depth=depth,
                 depth_conf=confidence, world_points=points, world_points_conf=confidence.copy(),
                 points_from_depth=points.copy(),
                 features=directions[record.instance_ids].astype(np.float32),
                 view_names=[f"{record.name}/{i:03d}" for i in range(record.num_views)],
                 view_transforms=[ViewTransform((height, width), (height, width))] * record.num_views,
                 model_name="oracle (ground truth)", instances=instances)
