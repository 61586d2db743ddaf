"""Hand-computed cases for the evaluation metrics."""
import math

import numpy as np
import pytest

from iggt.evaluation import metrics


def two_objects() -> np.ndarray:
    """Two views of 4x4 pixels: object 1 on the left, object 2 on the right, 4 pixels each per view."""
    gt = np.zeros((2, 4, 4), dtype=np.int32)
    gt[:, 0:2, 0:2] = 1
    gt[:, 2:4, 2:4] = 2
    return gt


# ---------------------------------------------------------------------------- tracking


def test_perfect_tracking_scores_one():
    gt = two_objects()
    result = metrics.tracking_metrics(gt, np.where(gt > 0, gt - 1, -1))
    assert result.t_miou == 1.0 and result.t_sr == 1.0
    assert [o.pred_id for o in result.objects] == [0, 1]


def test_consistent_permutation_of_ids_still_tracks():
    gt = two_objects()
    pred = np.select([gt == 1, gt == 2], [7, 3], default=-1)
    result = metrics.tracking_metrics(gt, pred)
    assert (result.t_miou, result.t_sr) == (1.0, 1.0)
    assert {o.gt_id: o.pred_id for o in result.objects} == {1: 7, 2: 3}


def test_ids_swapped_between_views_fail_tracking():
    gt = two_objects()
    pred = np.where(gt > 0, gt - 1, -1)
    pred[1] = np.where(gt[1] > 0, 2 - gt[1], -1)  # view 1: ids exchanged
    result = metrics.tracking_metrics(gt, pred)
    # Each object shares 4 of its 8 pixels with either prediction: IoU 4 / (8 + 8 - 4).
    assert result.t_miou == pytest.approx(1 / 3)
    assert result.t_sr == 0.0


def test_split_instance_loses_the_view_where_it_is_split():
    gt = np.zeros((2, 2, 2), dtype=np.int32)
    gt[:] = 1
    pred = np.zeros((2, 2, 2), dtype=np.int32)
    pred[0] = [[0, 1], [1, 1]]  # view 0: 1 pixel with id 0, 3 with id 1; view 1: all id 0
    result = metrics.tracking_metrics(gt, pred)
    (obj,) = result.objects
    assert obj.pred_id == 0 and obj.iou == pytest.approx(5 / 8)  # id 0: 5 of the 8 pixels, no extra pixel
    assert obj.view_ious == {0: pytest.approx(0.25), 1: 1.0}
    assert result.t_sr == 0.0


def test_object_missing_from_a_view_is_judged_where_visible():
    gt = two_objects()
    gt[1][gt[1] == 2] = 0  # object 2 only in view 0
    pred = np.where(gt > 0, gt - 1, -1)
    result = metrics.tracking_metrics(gt, pred)
    assert (result.t_miou, result.t_sr) == (1.0, 1.0)
    assert set(result.objects[1].view_ious) == {0}


def test_object_the_prediction_misses_scores_zero():
    gt = two_objects()
    pred = np.where(gt == 1, 0, -1)
    result = metrics.tracking_metrics(gt, pred)
    assert result.t_miou == pytest.approx(0.5) and result.t_sr == pytest.approx(0.5)
    assert result.objects[1].pred_id is None


def test_empty_prediction_and_all_background():
    gt = two_objects()
    empty = metrics.tracking_metrics(gt, np.full(gt.shape, -1))
    assert (empty.t_miou, empty.t_sr, empty.num_predicted) == (0.0, 0.0, 0)
    nothing = metrics.tracking_metrics(np.zeros_like(gt), np.zeros_like(gt))
    assert math.isnan(nothing.t_miou) and math.isnan(nothing.t_sr) and nothing.objects == []


def test_objects_too_small_in_a_view_are_not_judged_there():
    gt = np.zeros((2, 10, 10), dtype=np.int32)
    gt[:, :5, :5] = 1
    gt[1, 9, 9] = 1  # one stray pixel far away in view 1: below 5 % of the view, still part of the mask
    pred = np.where(gt > 0, 0, -1)
    pred[1, 9, 9] = -1
    strict = metrics.tracking_metrics(gt, pred, min_view_fraction=0.0)
    assert strict.t_sr == 1.0  # IoU 25/26 in view 1 is still >= 0.5
    gt[1, :5, :5] = 0  # now view 1 has only the stray pixel, which the prediction misses
    assert metrics.tracking_metrics(gt, pred, min_view_fraction=0.0).t_sr == 0.0
    assert metrics.tracking_metrics(gt, pred, min_view_fraction=0.05).t_sr == 1.0


def test_matched_miou_counts_only_matches_of_at_least_half():
    """The release's definition, by hand: one 10-pixel object, three predictions."""
    gt = np.zeros((1, 4, 10), dtype=np.int32)
    gt[0, 0] = 1  # object 1: row 0 (10 px)
    gt[0, 1] = 2  # object 2: row 1 (10 px)
    gt[0, 2, :4] = 3  # object 3: 4 px
    pred = np.full(gt.shape, -1)
    pred[0, 0, :8] = 0  # IoU 8/10 with object 1
    pred[0, 1, :] = 1
    pred[0, 3, :] = 1  # IoU 10/20 with object 2: exactly 0.5, kept
    pred[0, 2, :1] = 2  # IoU 1/4 with object 3: a match below 0.5, dropped
    matched = metrics.matched_instance_metrics(gt, pred)
    assert matched.num_matches == 2
    assert matched.matched_miou == pytest.approx((0.8 + 0.5) / 2)
    assert matched.matched_pixel_accuracy == pytest.approx((8 / 10 + 10 / 10) / 2)
    strict = metrics.tracking_metrics(gt, pred)
    assert strict.t_miou == pytest.approx((0.8 + 0.5 + 0.25) / 3)  # the strict one counts every object


def test_matched_miou_without_any_match_is_undefined():
    gt = two_objects()
    matched = metrics.matched_instance_metrics(gt, np.full(gt.shape, -1))
    assert matched.num_matches == 0 and math.isnan(matched.matched_miou)


# ---------------------------------------------------------------------------- segmentation


def test_average_precision_perfect_empty_and_no_ground_truth():
    gt = two_objects()
    perfect = metrics.instance_average_precision(gt, np.where(gt > 0, gt - 1, -1))
    assert (perfect.ap, perfect.ap50, perfect.ap25) == (1.0, 1.0, 1.0)
    empty = metrics.instance_average_precision(gt, np.full(gt.shape, -1))
    assert (empty.ap, empty.ap50) == (0.0, 0.0)
    assert math.isnan(metrics.instance_average_precision(np.zeros_like(gt), gt).ap)


def test_average_precision_by_threshold_and_ranking():
    gt = np.zeros((1, 1, 16), dtype=np.int32)
    gt[0, 0, :8] = 1
    gt[0, 0, 8:16] = 2
    pred = np.full(gt.shape, -1)
    pred[0, 0, :8] = 0          # object 1 exactly (8 pixels, ranked first by size)
    pred[0, 0, 8:13] = 1        # 5 of object 2's 8 pixels: IoU 5/8 = 0.625
    result = metrics.instance_average_precision(gt, pred)
    assert result.ap50 == 1.0
    # From IoU 0.65 on: a true positive then a false positive, precision 1 at recall 0.5.
    assert result.per_threshold[0.6] == 1.0 and result.per_threshold[0.65] == 0.5
    assert result.ap == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    # Ranked the other way (the poor instance first), the object found at rank 2 has precision 1/2.
    flipped = metrics.instance_average_precision(gt, pred, scores={0: 0.1, 1: 0.9})
    assert flipped.per_threshold[0.65] == pytest.approx(0.25)


def test_average_precision_ignores_predictions_on_background():
    gt = np.zeros((1, 1, 20), dtype=np.int32)
    gt[0, 0, 0:4], gt[0, 0, 4:8], gt[0, 0, 8:12] = 1, 2, 3  # pixels 12..19: background
    pred = np.full(gt.shape, -1)
    pred[0, 0, 0:4], pred[0, 0, 4:8] = 1, 2  # objects 1 and 2 exactly, object 3 missed
    pred[0, 0, 11:20] = 0  # largest, ranked first: 1 pixel of object 3, 8 of background (share 8/9)
    result = metrics.instance_average_precision(gt, pred)
    assert result.per_threshold[0.85] == pytest.approx(2 / 3)  # ignored: recall 2/3 at precision 1
    # From t = 0.9 on it is a false positive ranked first: precision 1/2 then 2/3 at recalls 1/3, 2/3.
    assert result.per_threshold[0.9] == pytest.approx(4 / 9)


def test_semantic_miou_names_instances_by_majority():
    semantic = np.array([[[0, 3, 3, 3, 5, 5]]])
    pred = np.array([[[0, 0, 0, 0, 1, -1]]])  # 0: mostly category 3 (+ 1 background pixel); 1: category 5
    named = metrics.semantic_from_instances(pred, semantic)
    np.testing.assert_array_equal(named, [[[3, 3, 3, 3, 5, 0]]])
    assert metrics.semantic_miou(named, semantic) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert math.isnan(metrics.semantic_miou(named, np.zeros_like(semantic)))


def test_fused_point_cloud_counts_a_surface_seen_twice_once():
    points = np.zeros((2, 1, 2, 3))
    points[:, 0, 1] = [10.0, 0.0, 0.0]  # both views see the same two points
    gt = np.array([[[1, 2]], [[1, 2]]])
    pred = np.array([[[0, 0]], [[0, 1]]])  # view 0 merges them; view 1 is right
    valid = np.ones((2, 1, 2), dtype=bool)
    fused_gt, fused_pred = metrics.fuse_labels(points, valid, gt, pred)
    np.testing.assert_array_equal(fused_gt, [1, 2])
    np.testing.assert_array_equal(fused_pred, [0, 0])  # tie (0 vs 1) in the second voxel: the smaller label


# ---------------------------------------------------------------------------- depth


def test_depth_with_a_known_scale_is_perfect():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, size=(3, 4, 5))
    gt[0, 0, 0] = 0  # no ground truth here: ignored
    pred = gt * 0.37
    pred[0, 0, 0] = 1e6
    result = metrics.depth_metrics(pred, gt)
    assert result.abs_rel_view == pytest.approx(0) and result.abs_rel_scene == pytest.approx(0)
    assert result.delta1_view == 1.0 and result.delta1_scene == 1.0


def test_depth_scale_per_view_versus_per_scene():
    gt = np.ones((2, 2, 2))
    pred = np.stack([np.full((2, 2), 2.0), np.full((2, 2), 4.0)])
    result = metrics.depth_metrics(pred, gt)
    assert result.abs_rel_view == pytest.approx(0) and result.delta1_view == 1.0
    # One scale 1/3 for both views: depths 2/3 and 4/3, both 1/3 off, ratios 1.5 and 1.33.
    assert result.abs_rel_scene == pytest.approx(1 / 3) and result.delta1_scene == 0.0


def test_depth_failures_count_and_empty_ground_truth_is_nan():
    gt = np.ones((1, 2, 2))
    pred = np.array([[[1.0, 1.0], [np.nan, -1.0]]])
    result = metrics.depth_metrics(pred, gt)
    # Scale 1 (median of the positive predictions); errors 0, 0, 1 (NaN -> 0) and 2.
    assert result.abs_rel_view == pytest.approx(0.75) and result.delta1_view == 0.5
    assert math.isnan(metrics.depth_metrics(pred, np.zeros_like(gt)).abs_rel_scene)


# ---------------------------------------------------------------------------- point maps


def rotation_about(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def test_pointmap_alignment_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(2, 6, 7, 3))
    rotation = rotation_about("z", 30) @ rotation_about("x", -50)
    translation = np.array([0.5, -2.0, 3.0])
    pred = ((gt - translation) @ rotation) / 2.5  # gt = 2.5 * R @ pred + t
    pred[0, 0, 0] = np.nan
    result = metrics.pointmap_metrics(pred, gt)
    assert result.scale == pytest.approx(2.5)
    assert result.accuracy == pytest.approx(0, abs=1e-9) and result.chamfer == pytest.approx(0, abs=1e-9)


def test_pointmap_accuracy_and_completeness_are_nearest_distances():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    pred = gt.copy()
    valid = np.array([True, True, True, True])
    exact = metrics.pointmap_metrics(pred, gt, valid)
    assert exact.chamfer == pytest.approx(0, abs=1e-9)
    assert math.isnan(metrics.pointmap_metrics(pred, gt, np.array([True, True, False, False])).chamfer)


# ---------------------------------------------------------------------------- cameras


def extrinsics(rotations, translations) -> np.ndarray:
    return np.concatenate([np.asarray(rotations, float), np.asarray(translations, float)[..., None]], axis=-1)


def test_pose_metrics_invariant_to_world_frame_and_scale():
    rng = np.random.default_rng(2)
    rotations = [rotation_about("y", a) @ rotation_about("x", b) for a, b in rng.uniform(-40, 40, (4, 2))]
    gt = extrinsics(rotations, rng.normal(size=(4, 3)))
    # Another world frame (rotation G, origin c) and scale 3: R' = R G^T, t' = 3 t + R' c ... any similarity.
    frame = rotation_about("z", 70)
    pred = extrinsics(gt[:, :, :3] @ frame.T, 3 * gt[:, :, 3] + (gt[:, :, :3] @ frame.T) @ np.array([1.0, 2, 3]))
    result = metrics.pose_metrics(pred, gt)
    np.testing.assert_allclose(result.rotation_errors, 0, atol=1e-5)
    np.testing.assert_allclose(result.translation_errors, 0, atol=1e-5)
    assert result.auc30 == 1.0 and result.rra[5.0] == 1.0


def test_pose_auc_and_accuracies_on_known_rotations():
    gt = extrinsics([np.eye(3), np.eye(3)], [[0, 0, 0], [1, 0, 0]])
    pred = extrinsics([np.eye(3), rotation_about("y", 12.5)], [[0, 0, 0], [1, 0, 0]])
    result = metrics.pose_metrics(pred, gt)
    assert result.rotation_errors == pytest.approx([12.5])
    assert result.translation_errors == pytest.approx([0.0], abs=1e-6)
    assert result.rra == {5.0: 0.0, 15.0: 1.0, 30.0: 1.0}
    assert result.auc30 == pytest.approx(18 / 30)  # thresholds 13..30 of 1..30
    sideways = metrics.pose_metrics(extrinsics([np.eye(3)] * 2, [[0, 0, 0], [1, 1, 0]]), gt)
    assert sideways.translation_errors == pytest.approx([45.0])
    assert sideways.rta == {5.0: 0.0, 15.0: 0.0, 30.0: 0.0}


def test_pose_metrics_of_a_single_view_are_undefined():
    single = extrinsics([np.eye(3)], [[0, 0, 0]])
    result = metrics.pose_metrics(single, single)
    assert math.isnan(result.auc30) and math.isnan(result.rra[5.0])
