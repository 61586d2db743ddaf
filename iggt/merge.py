"""Merge small pieces: instances below a share of the scene join the neighbour they touch most.

A post-processing step after `iggt.instances.segment_instances`, for features that split one
object into many fragments (the small model on real photos): a piece covering less than
``min_share`` of the scene's assigned pixels is merged into the instance it shares the longest
border with in the label maps (summed over all views), smallest pieces first. A piece that
touches no other instance in any view stays as it is. Ids are renumbered by size afterwards, as
`describe_instances` does, so the result is an ordinary `Instances`.
"""
from __future__ import annotations

import numpy as np

from iggt.instances import describe_instances
from iggt.scene import Instances, Scene


def border_lengths(labels: np.ndarray, count: int) -> np.ndarray:
    """``[K, K]`` symmetric: how many pairs of 4-neighbour pixels lie on the border of instances a and b."""
    pairs = []
    for first, second in ((labels[:, :, :-1], labels[:, :, 1:]), (labels[:, :-1, :], labels[:, 1:, :])):
        touching = (first != second) & (first >= 0) & (second >= 0)
        pairs.append(first[touching].astype(np.int64) * count + second[touching])
    lengths = np.bincount(np.concatenate(pairs), minlength=count * count).reshape(count, count)
    return lengths + lengths.T


def merge_small_instances(scene: Scene, min_share: float) -> Instances:
    """The scene's instances with every piece under ``min_share`` (0..1) of the assigned pixels merged
    into its longest-bordering neighbour. Structure flags and names are not kept (mark structure after)."""
    instances = scene.instances
    if instances is None:
        raise ValueError("the scene has no instances: segment it before merging small pieces")
    if min_share <= 0 or instances.count < 2:
        return instances
    count = instances.count
    sizes = np.array([info.pixel_count for info in instances.info], np.int64)
    smallest = min_share * sizes.sum()
    borders = border_lengths(instances.labels, count)
    owner = np.arange(count)  # each instance's id after the merges (a representative of its group)
    for piece in np.argsort(sizes, kind="stable"):
        if owner[piece] != piece or sizes[piece] >= smallest:
            continue
        neighbour = int(np.argmax(borders[piece]))
        if borders[piece, neighbour] == 0:
            continue  # touches nothing: it stays on its own
        owner[owner == piece] = neighbour
        sizes[neighbour] += sizes[piece]
        borders[neighbour] += borders[piece]
        borders[:, neighbour] += borders[:, piece]
        borders[neighbour, neighbour] = 0
        borders[piece] = borders[:, piece] = 0
    if (owner == np.arange(count)).all():
        return instances
    labels = np.where(instances.labels >= 0, owner[np.maximum(instances.labels, 0)], instances.labels)
    return describe_instances(labels, scene.points_from_depth, scene.images)
