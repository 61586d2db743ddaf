"""Instance clustering and instance statistics (iggt.instances) on small generated scenes."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from iggt.instances import (OFFICIAL_METHOD, OFFICIAL_METHOD_52B129A, OFFICIAL_VIEW_PIXELS, ClusteringConfig,
                            assign_labels, describe_instances, instance_colors, segment_instances,
                            smooth_features_image, smooth_features_knn3d, split_disconnected)
from iggt.scene import BACKGROUND, Scene

# Fronto-parallel rectangles (x0, x1, y0, y1, depth) in front of a wall at depth 6: id 0 = wall.
RECTANGLES = [(-0.9, -0.2, -0.5, 0.4, 3.0), (0.1, 0.8, -0.6, -0.1, 2.5), (0.2, 0.9, 0.1, 0.6, 4.0),
              (-1.6, -1.1, -0.2, 0.5, 3.5), (-0.2, 0.1, -0.1, 0.3, 2.0)]
FOCAL = 60.0


def make_scene(views: int = 3, height: int = 56, width: int = 84, noise: float = 0.05,
               outlier_share: float = 0.02, seed: int = 0,
               rectangles: list[tuple[float, ...]] = RECTANGLES) -> tuple[Scene, np.ndarray]:
    """Cameras translated along x, looking at ``rectangles`` (x0, x1, y0, y1, depth) before a wall
    at depth 6 (id 0, the rectangles 1, 2, ...); features = instance direction + noise."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    rays = np.stack([(u - width / 2) / FOCAL, (v - height / 2) / FOCAL], -1)
    depth = np.full((views, height, width), 6.0, np.float32)
    truth = np.zeros((views, height, width), np.int64)
    centers = np.array([0.4 * s for s in range(views)], np.float32)
    for s in range(views):
        for index, (x0, x1, y0, y1, z) in enumerate(rectangles, start=1):
            x = centers[s] + z * rays[..., 0]
            y = z * rays[..., 1]
            hit = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z < depth[s])
            depth[s][hit] = z
            truth[s][hit] = index
    camera_points = np.concatenate([rays[None] * depth[..., None], depth[..., None]], -1)
    points = camera_points + np.stack([centers, np.zeros(views), np.zeros(views)], -1)[:, None, None]
    directions = np.eye(8, dtype=np.float32)[: len(rectangles) + 1] + 0.2
    features = directions[truth] + rng.normal(scale=noise, size=(*truth.shape, 8))
    outliers = rng.random(truth.shape) < outlier_share
    features[outliers] = rng.normal(size=(int(outliers.sum()), 8))
    extrinsics = np.zeros((views, 3, 4), np.float32)
    extrinsics[:, :, :3] = np.eye(3)
    extrinsics[:, 0, 3] = -centers
    intrinsics = np.repeat(np.array([[[FOCAL, 0, width / 2], [0, FOCAL, height / 2], [0, 0, 1]]], np.float32), views, 0)
    colors = rng.uniform(size=(len(rectangles) + 1, 3))
    scene = Scene(images=colors[truth].astype(np.float32), extrinsics=extrinsics, intrinsics=intrinsics,
                  depth=depth, depth_conf=np.full_like(depth, 2.0), world_points=points.astype(np.float32),
                  world_points_conf=np.ones_like(depth), points_from_depth=points.astype(np.float32),
                  features=features.astype(np.float32))
    return scene, truth


CONFIG = ClusteringConfig(min_cluster_size=60, min_samples=15, cluster_selection_epsilon=0.05,
                          confidence_percentile=0.0, max_cluster_points=3000)


def ari(a: np.ndarray, b: np.ndarray) -> float:
    return adjusted_rand_score(np.asarray(a).reshape(-1), np.asarray(b).reshape(-1))


@pytest.fixture(scope="module")
def scene_and_truth():
    return make_scene()


@pytest.fixture(scope="module")
def segmented(scene_and_truth):
    return segment_instances(scene_and_truth[0], CONFIG)


# -- configuration -----------------------------------------------------------------------------
def test_presets_follow_the_official_demo():
    assert ClusteringConfig.from_preset("small").cluster_selection_epsilon == 0.005
    assert ClusteringConfig.from_preset("small").min_samples == 50
    medium = ClusteringConfig.from_preset("medium")
    assert (medium.cluster_selection_epsilon, medium.min_samples, medium.min_cluster_size) == (0.01, 100, 500)
    large = ClusteringConfig.from_preset("large", seed=3)
    assert (large.cluster_selection_epsilon, large.min_samples, large.min_cluster_size) == (0.06, 100, 500)
    assert large.knn_k == 20
    assert large.seed == 3
    with pytest.raises(ValueError, match="unknown clustering preset 'huge'"):
        ClusteringConfig.from_preset("huge")
    with pytest.raises(ValueError, match="min_samples must be at least 1, got 0.*smoothing must be"):
        ClusteringConfig(min_samples=0, smoothing="blur")


def test_sizes_scale_with_the_sample_and_keep_floors():
    config = ClusteringConfig.from_preset("large")
    assert config.sample_sizes(200_000, 200_000, OFFICIAL_VIEW_PIXELS) == (500, 100)
    assert config.sample_sizes(20_000, 200_000, OFFICIAL_VIEW_PIXELS) == (50, 10)
    assert config.sample_sizes(10_000, 2_000_000, OFFICIAL_VIEW_PIXELS) == (config.min_scaled_cluster_size,
                                                                      config.min_scaled_samples)
    assert config.sample_sizes(30, 30, OFFICIAL_VIEW_PIXELS) == (30, 29)  # clamped to what HDBSCAN accepts
    with pytest.raises(ValueError, match="reference_view_pixels must be at least 1 or None, got 0"):
        ClusteringConfig(reference_view_pixels=0)
    with pytest.raises(ValueError, match=r"split_gap must be in \(0, 1\) or None, got 0"):
        ClusteringConfig(split_gap=0)


def test_official_methods_name_the_release_versions():
    """bec6604 (HEAD): "large", 3D k-NN smoothing; 52b129a: "medium", no smoothing; both exact."""
    assert OFFICIAL_METHOD == ClusteringConfig.from_preset("large", **{**EXACT, "smoothing": "knn3d"})
    assert OFFICIAL_METHOD_52B129A == ClusteringConfig.from_preset("medium", **{**EXACT, "smoothing": "none"})


EXACT = dict(confidence_percentile=0.0, max_cluster_points=None, max_references_per_cluster=None, assignment_stride=1)


@pytest.mark.parametrize("sampled, total, view, scaled, as_given", [
    # 112 x 112 (the shipped small model), 6 views = 75,264 pixels: scale 12,544 / 203,056 = 0.0618
    (75_264, 75_264, 112 * 112, (31, 6), (500, 100)),        # 500 x 0.0618 = 30.9, 100 x 0.0618 = 6.2
    (10_000, 12_544, 112 * 112, (25, 5), (399, 80)),         # one view sampled: 10,000 / 203,056 = 0.0492
    (10_000, 75_264, 112 * 112, (10, 5), (66, 13)),          # 0.0082: both floors; as given 0.133
    # 518 x 392 (the released demo's 4:3 input): only the sampling ratio counts
    (203_056, 203_056, OFFICIAL_VIEW_PIXELS, (500, 100), (500, 100)),
    (20_000, 406_112, OFFICIAL_VIEW_PIXELS, (25, 5), (25, 5)),      # 0.0492
    # 252 x 336 = 84,672 (the 1B model on a smaller input): scale 0.417
    (169_344, 169_344, 252 * 336, (208, 42), (500, 100)),    # 500 x 0.417 = 208.5, 100 x 0.417 = 41.7
    (10_000, 169_344, 252 * 336, (12, 5), (30, 6)),          # 0.0591 x 0.417 = 0.0246; as given 0.0591
    # 518 x 518 (square input of the 1B model): larger than the reference, sizes are not grown
    (268_324, 268_324, 518 * 518, (500, 100), (500, 100)),
])
def test_sizes_scale_down_with_the_view_size(sampled, total, view, scaled, as_given):
    medium = ClusteringConfig.from_preset("medium", reference_view_pixels=OFFICIAL_VIEW_PIXELS)
    assert medium.sample_sizes(sampled, total, view) == scaled
    as_released = ClusteringConfig.from_preset("medium")  # the default: sizes as given
    assert as_released.reference_view_pixels is None and as_released.sample_sizes(sampled, total, view) == as_given
    for official in (OFFICIAL_METHOD, OFFICIAL_METHOD_52B129A):  # the released demo: never scaled
        assert official.sample_sizes(sampled, total, view) == as_given


# -- describe_instances --------------------------------------------------------------------------
def hand_made_labels() -> np.ndarray:
    labels = np.full((2, 4, 5), -1)
    labels[0, 1:3, 2:4] = 7   # 4 pixels in view 0 ...
    labels[1, 0, 0] = 7       # ... and 1 in view 1: 5 in all
    labels[1, 2:4, :] = 3     # 10 pixels, only in view 1
    labels[0, 0, 4] = 12      # 1 pixel: ties with nothing
    labels[0, 3, 0] = -5      # any negative value is background
    return labels


def test_describe_instances_orders_ids_and_measures_exactly():
    labels = hand_made_labels()
    points = np.random.default_rng(0).normal(size=(2, 4, 5, 3))
    images = np.random.default_rng(1).uniform(size=(2, 4, 5, 3))
    instances = describe_instances(labels, points, images)
    assert instances.count == 3
    assert [i.pixel_count for i in instances.info] == [10, 5, 1]
    assert [i.id for i in instances.info] == [0, 1, 2]
    expected = np.select([labels == 3, labels == 7, labels == 12], [0, 1, 2], BACKGROUND)
    np.testing.assert_array_equal(instances.labels, expected)
    second = instances.info[1]
    assert {s: (p.pixel_count, p.bbox) for s, p in second.views.items()} == {0: (4, (2, 1, 4, 3)), 1: (1, (0, 0, 1, 1))}
    assert instances.info[0].views[1].bbox == (0, 2, 5, 4) and list(instances.info[0].views) == [1]
    np.testing.assert_allclose(second.centroid, points[labels == 7].mean(axis=0))
    np.testing.assert_allclose(second.mean_color, images[labels == 7].mean(axis=0))
    np.testing.assert_allclose(second.bbox_min, np.percentile(points[labels == 7], 2, axis=0))
    np.testing.assert_allclose(second.bbox_max, np.percentile(points[labels == 7], 98, axis=0))


def test_describe_instances_breaks_ties_by_label_value_and_colours_every_view_alike():
    labels = np.zeros((2, 3, 3), int) - 1
    labels[0, 0, :2] = 9
    labels[1, 2, :2] = 9
    labels[0, 2, :] = 4
    labels[1, 0, 2] = 4
    instances = describe_instances(labels, np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.uint8))
    assert instances.count == 2  # both have 4 pixels: the smaller label value comes first
    np.testing.assert_array_equal(instances.labels == 0, labels == 4)
    picture = instances.color_image()
    for instance in instances.info:
        assert {tuple(c) for c in picture[instances.labels == instance.id]} == {instance.color}
    assert np.all(picture[instances.labels == BACKGROUND] == 0)


def test_colours_are_deterministic_and_distinct():
    colors = instance_colors(40)
    np.testing.assert_array_equal(colors, instance_colors(40))
    assert len({tuple(c) for c in colors}) == 40
    distances = np.linalg.norm(colors[:8, None].astype(float) - colors[None, :8].astype(float), axis=-1)
    assert distances[~np.eye(8, dtype=bool)].min() > 60  # the largest instances are easy to tell apart


def test_describe_instances_ignores_non_finite_points_and_handles_no_instances():
    labels = np.zeros((1, 2, 2), int)
    points = np.arange(12, dtype=float).reshape(1, 2, 2, 3)
    points[0, 0, 0] = np.nan
    instances = describe_instances(labels, points, np.zeros((1, 2, 2, 3)))
    np.testing.assert_allclose(instances.info[0].centroid, points[0].reshape(-1, 3)[1:].mean(axis=0))
    empty = describe_instances(np.full((1, 2, 2), -1), points, np.zeros((1, 2, 2, 3)))
    assert empty.count == 0 and np.all(empty.labels == BACKGROUND)


def test_describe_instances_rejects_bad_input():
    with pytest.raises(ValueError, match="world points must be"):
        describe_instances(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="must be integers"):
        describe_instances(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="colors must be"):
        describe_instances(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)),
                           colors=np.zeros((3, 3), np.uint8))


# -- smoothing -------------------------------------------------------------------------------------
def test_knn3d_smoothing_averages_neighbours_without_the_point_itself():
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 10, 10]], float)
    features = np.eye(4, dtype=np.float32)
    smoothed = smooth_features_knn3d(features, points, k=2)
    np.testing.assert_allclose(smoothed[0], [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(smooth_features_knn3d(features[:1], points[:1], k=20), features[:1])


def test_knn3d_smoothing_drops_only_the_point_itself_among_duplicates():
    """As knn_graph(loop=False): the k + 1 nearest, minus the row itself when it is among them."""
    points = np.array([[0, 0, 0], [0, 0, 0], [5, 0, 0], [5, 0, 1]], float)
    features = np.eye(4, dtype=np.float32)
    smoothed = smooth_features_knn3d(features, points, k=1)
    np.testing.assert_allclose(smoothed[:2], [[0, 1, 0, 0], [1, 0, 0, 0]])  # each other, never itself
    np.testing.assert_allclose(smoothed[2:], [[0, 0, 0, 1], [0, 0, 1, 0]])


def test_image_smoothing_stays_on_its_surface(scene_and_truth):
    scene, truth = scene_and_truth
    clean = np.eye(8, dtype=np.float32)[truth]
    focal = scene.intrinsics[:, 0, 0]
    smoothed = smooth_features_image(clean, scene.points_from_depth, scene.depth, focal,
                                     np.ones(truth.shape, bool), k=20, gate=3.0)
    # Rectangles and wall lie at different depths: no feature leaks across their outlines.
    np.testing.assert_allclose(smoothed, clean, atol=1e-6)

    # On noisy features it is close to the exact 3D k-NN mean, and removes most of the noise.
    noiseless = make_scene(noise=0.0, outlier_share=0.0)[0].features
    image = smooth_features_image(scene.features, scene.points_from_depth, scene.depth, focal,
                                  np.ones(truth.shape, bool), k=20, gate=3.0)
    exact = smooth_features_knn3d(scene.features.reshape(-1, 8), scene.points_from_depth.reshape(-1, 3), k=20)
    noise = np.median(np.linalg.norm(scene.features - noiseless, axis=-1))
    assert np.median(np.linalg.norm(image - noiseless, axis=-1)) < 0.5 * noise
    assert np.median(np.linalg.norm(image.reshape(-1, 8) - exact, axis=1)) < 0.5 * noise


# -- segment_instances ------------------------------------------------------------------------------
def test_segment_instances_recovers_known_instances(scene_and_truth, segmented):
    _, truth = scene_and_truth
    assert segmented.count == len(RECTANGLES) + 1
    assert ari(segmented.labels, truth) > 0.95
    assert [i.pixel_count for i in segmented.info] == sorted((i.pixel_count for i in segmented.info), reverse=True)


def test_labels_are_shared_across_views(scene_and_truth, segmented):
    _, truth = scene_and_truth
    for instance in range(len(RECTANGLES) + 1):
        majority = {int(np.bincount(segmented.labels[s][truth[s] == instance]).argmax())
                    for s in range(truth.shape[0]) if (truth[s] == instance).sum() > 20}
        assert len(majority) == 1, f"instance {instance} got labels {majority} in different views"


def test_low_confidence_pixels_are_background(scene_and_truth):
    scene, _ = scene_and_truth
    confidence = scene.depth_conf.copy()
    confidence[:, :10] = 1.0
    result = segment_instances(replace(scene, depth_conf=confidence),
                               replace(CONFIG, min_confidence=1.5))
    assert np.all(result.labels[:, :10] == BACKGROUND)
    assert np.all(result.labels[:, 10:] >= 0)
    by_percentile = segment_instances(replace(scene, depth_conf=confidence),
                                      replace(CONFIG, confidence_percentile=25.0))
    assert np.all(by_percentile.labels[:, :10] == BACKGROUND)  # 18 % of the pixels: all below the 25th
    assert np.all(by_percentile.labels[:, 10:] >= 0)  # ties at the threshold are kept


def test_segment_instances_is_deterministic(scene_and_truth, segmented):
    again = segment_instances(scene_and_truth[0], CONFIG)
    np.testing.assert_array_equal(again.labels, segmented.labels)


def test_a_small_object_at_112_px_is_found_only_with_sizes_scaled_to_the_view():
    """A rectangle of ~165 pixels per view in 112 x 112 views (3 views, default sampling): with the
    "medium" sizes as given (133 of the 10k samples) it is merged into the wall; scaled to the
    view (the floor, 10) it is an instance of its own."""
    rectangles = [(-0.9, -0.2, -0.5, 0.4, 3.0), (0.1, 0.5, -0.2, 0.2, 2.0)]
    scene, truth = make_scene(views=3, height=112, width=112, rectangles=rectangles, outlier_share=0.0)
    small = truth == 2
    assert 150 <= small.sum() / 3 <= 180

    def best_iou(config: ClusteringConfig) -> float:
        labels = segment_instances(scene, config).labels
        found = labels == np.bincount(labels[small]).argmax()
        return (found & small).sum() / (found | small).sum()

    scaled = ClusteringConfig.from_preset("medium", reference_view_pixels=OFFICIAL_VIEW_PIXELS)
    assert scaled.sample_sizes(10_000, small.size, 112 * 112) == (10, 5)
    assert best_iou(scaled) > 0.95
    assert best_iou(replace(scaled, reference_view_pixels=None)) < 0.1


def test_sampled_clustering_agrees_with_clustering_every_pixel():
    scene, _ = make_scene(views=2, height=42, width=70, seed=1)
    small_sample = replace(CONFIG, max_cluster_points=1500, max_references_per_cluster=50)
    full = segment_instances(scene, replace(CONFIG, max_cluster_points=None, max_references_per_cluster=None,
                                            assignment_stride=1))
    fast = segment_instances(scene, small_sample)
    assert ari(fast.labels, full.labels) > 0.95


def test_split_disconnected_gives_parts_apart_in_3d_labels_of_their_own():
    """Two views of a row of points, cubes of about 1.9 (gap 0.1 x the 2nd-98th percentile extent):
    label 0 has two parts 8 apart (split) and a stray point far away (under min_part: kept), label 1
    is a run of points 1 apart (kept whole); with gap 0.5 nothing is apart."""
    x = np.array([0, 1, 2, 3, 11, 12, 13, 20, 5, 6, 7, 8], float)
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])[None].repeat(2, 0)[:, None]  # [2, 1, 12]
    labels[1, 0, -1] = BACKGROUND
    points = np.zeros((2, 1, 12, 3))
    points[..., 0] = x
    points[1, 0, 3] = np.nan  # ignored (keeps its label)
    split = split_disconnected(labels, points, gap=0.1, min_part=3)
    for view in split:
        assert len(set(view[0, :3])) == 1 and len(set(view[0, 4:7])) == 1 and view[0, 0] != view[0, 4]
    np.testing.assert_array_equal(split[0], split[1] * (labels[1] >= 0) + labels[0] * (labels[1] < 0))  # shared
    assert split[0, 0, 0] == 0 and split[0, 0, 7] == 0 and split[1, 0, 3] == 0  # stray point, NaN point
    assert set(split[0, 0, 8:]) == {1} and split[1, 0, -1] == BACKGROUND
    np.testing.assert_array_equal(split_disconnected(labels, points, gap=0.5, min_part=3), labels)


def test_split_gap_separates_objects_whose_features_are_alike():
    """Two rectangles apart in 3D with the same feature: one instance, two with ``split_gap``."""
    scene, truth = make_scene()
    twin = scene.features.copy()
    twin[truth == 2] += np.median(twin[truth == 1], axis=0) - np.median(twin[truth == 2], axis=0)  # looks like 1
    scene = replace(scene, features=twin)

    def labels_of(instance: int, labels: np.ndarray) -> int:
        return int(np.bincount(labels[truth == instance]).argmax())

    merged = segment_instances(scene, CONFIG).labels
    assert labels_of(1, merged) == labels_of(2, merged)
    split = segment_instances(scene, replace(CONFIG, split_gap=0.02))  # 0.2: 1 and 2 are 0.58 apart
    assert labels_of(1, split.labels) != labels_of(2, split.labels)
    assert len(np.unique(merged)) == len(RECTANGLES) and split.count == len(RECTANGLES) + 1
    assert ari(split.labels, truth) > 0.95


def test_coarse_to_fine_assignment_matches_searching_every_pixel(scene_and_truth):
    scene, truth = scene_and_truth
    rng = np.random.default_rng(0)
    references = rng.normal(size=(200, 8)).astype(np.float32)
    reference_labels = np.arange(200) % 7
    confident = np.ones(truth.shape, bool)
    confident[0, 5:9, 5:30] = False
    features = references[truth * 20] + rng.normal(scale=0.01, size=(*truth.shape, 8)).astype(np.float32)
    exact = np.full(truth.shape, BACKGROUND)
    assign_labels(exact, features, confident, references, reference_labels, stride=1)
    coarse = np.full(truth.shape, BACKGROUND)
    assign_labels(coarse, features, confident, references, reference_labels, stride=2)
    np.testing.assert_array_equal(coarse, exact)
    assert np.all(exact[~confident] == BACKGROUND)


def test_edge_cases_do_not_crash(scene_and_truth):
    scene, truth = scene_and_truth
    per_view = ("images", "extrinsics", "intrinsics", "depth", "depth_conf", "world_points", "world_points_conf",
                "points_from_depth", "features")
    one_view = replace(scene, **{name: getattr(scene, name)[:1] for name in per_view})
    assert segment_instances(one_view, CONFIG).count >= 2

    nothing_confident = replace(scene, depth=np.zeros_like(scene.depth))
    empty = segment_instances(nothing_confident, CONFIG)
    assert empty.count == 0 and np.all(empty.labels == BACKGROUND)

    uniform_noise = np.random.default_rng(0).normal(size=scene.features.shape).astype(np.float32)
    all_noise = segment_instances(replace(scene, features=uniform_noise),
                                  replace(CONFIG, min_cluster_size=2000, knn_k=1))
    assert all_noise.count == 1 and np.all(all_noise.labels == 0)

    per_pixel = [name for name in per_view if not name.endswith("trinsics")]
    tiny = replace(one_view, **{name: getattr(one_view, name)[:, :1, :1] for name in per_pixel})
    assert segment_instances(tiny, CONFIG).count == 1


def test_progress_is_reported(scene_and_truth):
    seen = []
    segment_instances(scene_and_truth[0], CONFIG, progress=lambda fraction, message: seen.append(fraction))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_bad_scene_is_rejected_with_a_clear_message(scene_and_truth):
    scene, _ = scene_and_truth
    with pytest.raises(ValueError, match="scene.features has shape"):
        segment_instances(replace(scene, features=scene.features[:, :10]), CONFIG)
