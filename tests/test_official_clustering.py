"""`OFFICIAL_METHOD` (and the earlier `OFFICIAL_METHOD_52B129A`) against the release's demo.py.

The reference below is written from the release's code (lifuguan/IGGT_official: demo.py at commit
bec6604 and at blob 52b129a, iggt/utils/misc.py and iggt/utils/geometry.py), not from
`iggt.instances`: torch for the neighbour graph (the release uses torch_cluster's ``knn_graph``
and torch_scatter's ``scatter_mean``, which do not install here), the ``hdbscan`` package (the
release's fallback when cuML is missing) and scikit-learn's ``NearestNeighbors`` for the noise.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from sklearn.metrics import adjusted_rand_score

from iggt.geometry import unproject_depth
from iggt.instances import (OFFICIAL_METHOD, OFFICIAL_METHOD_52B129A, confident_pixels, segment_instances,
                            smooth_features)
from iggt.scene import Scene

# demo.py's CLUSTERING_CONFIG at each version: "Large" at bec6604, "Medium" at blob 52b129a.
RELEASE_CONFIGS = {
    "bec6604": dict(eps=0.06, min_samples=100, min_cluster_size=500, knn_k=20, smoothed=True),
    "52b129a": dict(eps=0.01, min_samples=100, min_cluster_size=500, knn_k=20, smoothed=False),
}


# -- the release's pipeline, re-written from its code ------------------------------------------------
def release_world_points_from_depth(depth: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """geometry.unproject_depth_map_to_point_map: per view, camera points at integer pixel
    coordinates (float32), moved to the world with the closed-form inverse of world-to-camera."""
    world = []
    for d, extrinsic, intrinsic in zip(depth, extrinsics, intrinsics):
        height, width = d.shape
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        camera = np.stack(((u - intrinsic[0, 2]) * d / intrinsic[0, 0], (v - intrinsic[1, 2]) * d / intrinsic[1, 1], d),
                          axis=-1).astype(np.float32)
        rotation_t = extrinsic[:3, :3].T
        translation = -rotation_t @ extrinsic[:3, 3:]
        world.append(np.dot(camera, rotation_t.T) + translation[:, 0])
    return np.stack(world)


def release_knn_avg_features(points: np.ndarray, features: torch.Tensor, k: int) -> torch.Tensor:
    """misc.knn_avg_features_pyg: one k-NN graph over the points of all views (batch all zeros),
    ``loop=False`` (the k + 1 nearest, the point itself removed), ``scatter_mean`` of the
    neighbours' features onto each centre; no re-normalisation."""
    views, height, width, channels = features.shape
    flat_points = torch.from_numpy(points).float().reshape(-1, 3)
    flat_features = features.reshape(-1, channels)
    count = len(flat_points)
    distances = torch.cdist(flat_points, flat_points, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = distances.topk(k + 1, dim=1, largest=False).indices
    center = torch.arange(count)[:, None].expand_as(nearest).reshape(-1)
    source = nearest.reshape(-1)
    keep = source != center
    source, center = source[keep], center[keep]
    sums = torch.zeros(count, channels).index_add_(0, center, flat_features[source])
    counts = torch.zeros(count).index_add_(0, center, torch.ones(len(center)))
    return (sums / counts.clamp(min=1)[:, None]).view(views, height, width, channels)


def release_cluster_mv(feature_map: torch.Tensor, eps: float, min_samples: int, min_cluster_size: int) -> np.ndarray:
    """misc.cluster_features_to_masks_mv: HDBSCAN of every pixel of every view, noise (-1) to the
    label of its nearest labelled pixel (all noise: every label 0)."""
    from hdbscan import HDBSCAN
    from sklearn.neighbors import NearestNeighbors

    n, h, w, c = feature_map.shape
    all_pixels = feature_map.cpu().numpy().reshape(-1, c)
    all_labels = HDBSCAN(cluster_selection_epsilon=eps, min_samples=min_samples, min_cluster_size=min_cluster_size,
                         allow_single_cluster=False).fit(all_pixels).labels_
    invalid = all_labels == -1
    if invalid.sum() > 0:
        if invalid.sum() == len(invalid):
            all_labels = np.zeros_like(all_labels)
        else:
            indices = NearestNeighbors(n_neighbors=1).fit(all_pixels[~invalid]).kneighbors(all_pixels[invalid])[1]
            all_labels[invalid] = all_labels[~invalid][indices[:, 0]]
    return all_labels.reshape(n, h, w)


def release_demo(depth, extrinsics, intrinsics, part_feat, version: str) -> tuple[np.ndarray, torch.Tensor]:
    """IGGTProcessor._post_process_predictions + _process_features_and_clustering: labels and the
    features that were clustered. ``part_feat`` is ``[S, H, W, C]`` (the demo permutes it so)."""
    settings = RELEASE_CONFIGS[version]
    world_points = release_world_points_from_depth(depth, extrinsics, intrinsics)
    part_feature = F.normalize(torch.from_numpy(part_feat), dim=3)
    clustered = (release_knn_avg_features(world_points, part_feature, settings["knn_k"]) if settings["smoothed"]
                 else part_feature)
    labels = release_cluster_mv(clustered, settings["eps"], settings["min_samples"], settings["min_cluster_size"])
    return labels, clustered


# -- a scene: a room (the inside of a sphere) and three balls, seen from three rotated cameras ------
BALLS = [((-1.2, 0.6, 0.5), 0.9), ((1.1, 0.4, -0.3), 1.0), ((0.1, -1.0, 1.4), 0.7)]


def look_at(eye: np.ndarray) -> np.ndarray:
    """World-to-camera ``[3, 4]`` (OpenCV) of a camera at ``eye`` looking at the origin."""
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])
    return np.concatenate([rotation, -rotation @ eye[:, None]], axis=1)


def first_hit(eye: np.ndarray, directions: np.ndarray, center, radius: float, inside: bool = False) -> np.ndarray:
    """Ray parameter of the first hit of a sphere (the far one from inside; inf where missed)."""
    offset = eye - np.asarray(center)
    b = directions @ offset
    a = (directions ** 2).sum(-1)
    disc = b * b - a * (offset @ offset - radius ** 2)
    root = np.sqrt(np.maximum(disc, 0))
    t = (-b + root) / a if inside else (-b - root) / a
    return np.where((disc > 0) & (t > 0), t, np.inf)


def make_scene(views: int = 3, height: int = 36, width: int = 54, seed: int = 7) -> Scene:
    rng = np.random.default_rng(seed)
    focal = 0.9 * width
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:height, 0:width]
    rays = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones((height, width))], -1).reshape(-1, 3)
    extrinsics, depths, ids = [], [], []
    for s in range(views):
        angle = 0.5 * s - 0.5
        eye = np.array([4.2 * np.sin(angle), -0.8 + 0.3 * s, -4.2 * np.cos(angle)])
        extrinsic = look_at(eye)
        directions = rays @ extrinsic[:, :3]  # R^T ray: the ray parameter is the depth
        depth = first_hit(eye, directions, (0, 0, 0), 6.0, inside=True)
        label = np.zeros(len(rays), np.int64)
        for index, (center, radius) in enumerate(BALLS, start=1):
            t = first_hit(eye, directions, center, radius)
            label = np.where(t < depth, index, label)
            depth = np.minimum(depth, t)
        extrinsics.append(extrinsic)
        depths.append(depth.reshape(height, width))
        ids.append(label.reshape(height, width))
    # predicted depth is never exactly smooth: 1 % noise also leaves no ties among the neighbours
    depth = (np.stack(depths) * (1 + 0.01 * rng.standard_normal((views, height, width)))).astype(np.float32)
    extrinsics = np.stack(extrinsics).astype(np.float32)
    intrinsics = np.repeat(intrinsics[None], views, 0)
    truth = np.stack(ids)
    directions = rng.normal(size=(len(BALLS) + 1, 8))
    features = 2.5 * directions[truth] + rng.normal(scale=0.6, size=(*truth.shape, 8))  # raw: not unit length
    outliers = rng.random(truth.shape) < 0.03
    features[outliers] = rng.normal(size=(int(outliers.sum()), 8))
    points_from_depth = unproject_depth(depth, extrinsics, intrinsics)
    return Scene(images=rng.uniform(size=(*truth.shape, 3)).astype(np.float32), extrinsics=extrinsics,
                 intrinsics=intrinsics, depth=depth,
                 depth_conf=(1 + np.exp(rng.normal(0.5, 1.0, size=depth.shape))).astype(np.float32),
                 # the point head's map is not what the demo clusters with: a shifted, noisy one here
                 world_points=(points_from_depth + rng.normal(scale=0.5, size=points_from_depth.shape)
                               ).astype(np.float32),
                 world_points_conf=np.ones_like(depth), points_from_depth=points_from_depth,
                 features=features.astype(np.float32))


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene()


def ari(a: np.ndarray, b: np.ndarray) -> float:
    return adjusted_rand_score(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1))


def test_the_scene_varies_in_depth_and_confidence(scene):
    assert scene.depth.min() < 4.0 < 5.5 < scene.depth.max()
    assert scene.depth_conf.max() > 5 * scene.depth_conf.min()
    release_points = release_world_points_from_depth(scene.depth, scene.extrinsics, scene.intrinsics)
    np.testing.assert_allclose(scene.points_from_depth, release_points, rtol=0, atol=1e-6)
    # Every pixel's 21st and 22nd nearest points (itself the first) are further apart than float32
    # rounding moves the points: the neighbour sets are the same whoever unprojects and searches.
    flat = scene.points_from_depth.reshape(-1, 3)
    distances = cKDTree(flat).query(flat, k=22)[0]
    assert (distances[:, 21] - distances[:, 20]).min() > 4e-6


def test_official_method_is_the_release_head_demo(scene):
    """Labels (ARI 1) and the clustered features (float tolerance) equal the release's at bec6604."""
    labels, clustered = release_demo(scene.depth, scene.extrinsics, scene.intrinsics, scene.features, "bec6604")
    assert len(np.unique(labels)) >= 3

    ours = segment_instances(scene, OFFICIAL_METHOD)
    assert (ours.labels >= 0).all()  # nothing is background, whatever the confidence
    assert ari(ours.labels, labels) == 1.0

    smoothed = smooth_features(scene, confident_pixels(scene, OFFICIAL_METHOD), OFFICIAL_METHOD)
    np.testing.assert_allclose(smoothed, clustered.numpy(), rtol=0, atol=2e-6)
    norms = np.linalg.norm(smoothed, axis=-1)
    assert norms.max() < 1 - 1e-3 or norms.min() < 0.9  # the mean of unit vectors, not re-normalised


def test_official_method_52b129a_is_the_release_previous_demo(scene):
    labels, clustered = release_demo(scene.depth, scene.extrinsics, scene.intrinsics, scene.features, "52b129a")
    ours = segment_instances(scene, OFFICIAL_METHOD_52B129A)
    assert (ours.labels >= 0).all()
    assert ari(ours.labels, labels) == 1.0
    unsmoothed = smooth_features(scene, confident_pixels(scene, OFFICIAL_METHOD_52B129A), OFFICIAL_METHOD_52B129A)
    np.testing.assert_allclose(unsmoothed, clustered.numpy(), rtol=0, atol=1e-6)


def test_the_two_versions_differ_on_this_scene(scene):
    """So that the tests above can tell the versions apart."""
    head = segment_instances(scene, OFFICIAL_METHOD).labels
    previous = segment_instances(scene, OFFICIAL_METHOD_52B129A).labels
    assert ari(head, previous) < 0.99
