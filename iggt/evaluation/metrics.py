"""Evaluation metrics: multi-view instance tracking, instance segmentation, depth, point maps, cameras.

Everything here is numpy/scipy on plain arrays, so the metrics can be checked on hand-made
cases and reused outside the evaluate command. Label conventions follow the data:

* ground-truth instance ids: ``0`` (and any negative value) is background (floor, walls,
  sky), ``1..K`` are objects, the same id in every view;
* predicted instance labels: negative (``iggt.scene.BACKGROUND`` = -1) is background,
  ``0..K-1`` are instances (0 is a real instance, as in `iggt.scene.Instances`).

A metric that is undefined for its input (no ground-truth object, a single view, no valid
pixel) is ``nan``; the report averages with ``nanmean`` and writes ``null`` to JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from iggt.geometry import median_scale, umeyama_alignment

TRACKING_IOU_THRESHOLD = 0.5
"""Per-view IoU an object must reach in every view where it is visible to count as tracked."""
MIN_VIEW_FRACTION = 0.001
"""An object is *visible* in a view when it covers at least this share of the view (and >= 1 pixel)."""
AP_IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
"""IoU thresholds of the instance AP, 0.50:0.05:0.95 as in the ScanNet benchmark."""
DELTA_THRESHOLD = 1.25
POSE_THRESHOLDS_DEG = (5.0, 15.0, 30.0)
POSE_AUC_MAX_DEG = 30
FUSION_VOXEL_FRACTION = 0.0025
"""Voxel edge of the fused point cloud, as a share of the ground-truth bounding-box diagonal
(2.5 cm in a generated room, about the footprint of one pixel of a 224-pixel view at 4 m)."""


def nan_mean(values) -> float:
    """Mean ignoring NaN; NaN when nothing is left."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if values.size and not np.isnan(values).all() else math.nan


# ============================================================================ label overlap


@dataclass
class LabelOverlap:
    """Contingency table of ground-truth ids against predicted labels over the same pixels/points."""

    gt_ids: np.ndarray
    """``[G]`` distinct ground-truth object ids (background excluded), ascending."""
    pred_ids: np.ndarray
    """``[P]`` distinct predicted instance labels (background excluded), ascending."""
    intersection: np.ndarray
    """``[G, P]`` number of pixels labelled ``gt_ids[g]`` and ``pred_ids[p]``."""
    gt_area: np.ndarray
    """``[G]`` pixels of each ground-truth object."""
    pred_area: np.ndarray
    """``[P]`` pixels of each predicted instance (including those on ground-truth background)."""

    def iou(self) -> np.ndarray:
        """``[G, P]`` intersection over union."""
        union = self.gt_area[:, None] + self.pred_area[None, :] - self.intersection
        return np.where(union > 0, self.intersection / np.maximum(union, 1), 0.0)


def label_overlap(gt_ids: np.ndarray, pred_labels: np.ndarray) -> LabelOverlap:
    """Count, for every (ground-truth object, predicted instance) pair, the pixels they share."""
    gt = np.asarray(gt_ids).ravel()
    pred = np.asarray(pred_labels).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth and prediction differ in size: {np.shape(gt_ids)} vs {np.shape(pred_labels)}")
    gt_foreground, pred_foreground = gt > 0, pred >= 0
    gt_values, gt_index = np.unique(gt[gt_foreground], return_inverse=True)
    pred_values, pred_index = np.unique(pred[pred_foreground], return_inverse=True)
    num_gt, num_pred = len(gt_values), len(pred_values)
    gt_full = np.full(gt.shape, -1, dtype=np.int64)
    pred_full = np.full(pred.shape, -1, dtype=np.int64)
    gt_full[gt_foreground] = gt_index.ravel()
    pred_full[pred_foreground] = pred_index.ravel()
    both = gt_foreground & pred_foreground
    intersection = np.bincount(gt_full[both] * num_pred + pred_full[both],
                               minlength=num_gt * num_pred).reshape(num_gt, num_pred)
    return LabelOverlap(gt_values, pred_values, intersection,
                        np.bincount(gt_index.ravel(), minlength=num_gt),
                        np.bincount(pred_index.ravel(), minlength=num_pred))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ============================================================================ tracking


@dataclass
class TrackedObject:
    """How one ground-truth object fared in the multi-view tracking evaluation."""

    gt_id: int
    pred_id: int | None
    """The predicted instance matched to it for the whole scene (None: unmatched)."""
    iou: float
    """Multi-view IoU (all views' pixels together) with the matched prediction; 0 if unmatched."""
    view_ious: dict[int, float]
    """Per-view IoU with the matched prediction, for the views where the object is visible."""
    tracked: bool


@dataclass
class TrackingResult:
    """T-mIoU and T-SR of one scene, see `tracking_metrics`."""

    t_miou: float
    t_sr: float
    objects: list[TrackedObject] = field(default_factory=list)
    num_predicted: int = 0

    def summary(self) -> dict[str, float]:
        return {"t_miou": self.t_miou, "t_sr": self.t_sr, "num_gt_objects": float(len(self.objects)),
                "num_predicted_instances": float(self.num_predicted)}


def tracking_metrics(gt_ids: np.ndarray, pred_labels: np.ndarray, *,
                     iou_threshold: float = TRACKING_IOU_THRESHOLD,
                     min_view_fraction: float = MIN_VIEW_FRACTION) -> TrackingResult:
    """Multi-view instance tracking: temporal mIoU (T-mIoU) and temporal success rate (T-SR).

    Definition (our reading of the IGGT paper's protocol, made exact):

    1. ``gt_ids`` and ``pred_labels`` are ``[S, H, W]`` label maps of the same S views.
       Background (GT <= 0, prediction < 0) is excluded from every mask.
    2. A ground-truth object is *visible* in view s when it covers at least
       ``max(1, ceil(min_view_fraction * H * W))`` pixels there. Objects visible in no view
       are too small to judge and are left out of both metrics.
    3. Predicted instances and GT objects are matched ONCE for the whole scene: Hungarian
       matching maximising the sum of multi-view IoUs, where the multi-view IoU of two
       labels is the IoU of their masks over all pixels of all views together. Pairs with
       IoU 0 are not matches. One prediction therefore cannot follow two objects, and an
       object cannot change its predicted id from one view to the next without penalty.
    4. T-IoU of an object = its multi-view IoU with its matched prediction (0 if unmatched);
       **T-mIoU** = mean T-IoU over the GT objects.
    5. An object is *tracked* when it is matched and, in every view where it is visible,
       the per-view IoU of its mask with the matched prediction's mask is >= ``iou_threshold``
       (0.5). **T-SR** = share of GT objects tracked.

    Both are ``nan`` for a scene without a visible ground-truth object.
    """
    gt_ids = np.asarray(gt_ids)
    pred_labels = np.asarray(pred_labels)
    if gt_ids.ndim != 3 or gt_ids.shape != pred_labels.shape:
        raise ValueError(f"need two [S, H, W] label maps of equal shape, got {gt_ids.shape} and {pred_labels.shape}")
    views, height, width = gt_ids.shape
    min_pixels = max(1, math.ceil(min_view_fraction * height * width))

    overlap = label_overlap(gt_ids, pred_labels)
    iou = overlap.iou()
    match_of_gt: dict[int, int] = {}
    if iou.size:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        match_of_gt = {int(r): int(c) for r, c in zip(rows, cols) if iou[r, c] > 0}

    objects = []
    for g, gt_id in enumerate(overlap.gt_ids):
        gt_mask = gt_ids == gt_id
        visible = [s for s in range(views) if gt_mask[s].sum() >= min_pixels]
        if not visible:
            continue
        p = match_of_gt.get(g)
        if p is None:
            objects.append(TrackedObject(int(gt_id), None, 0.0, {s: 0.0 for s in visible}, False))
            continue
        pred_mask = pred_labels == overlap.pred_ids[p]
        view_ious = {s: mask_iou(gt_mask[s], pred_mask[s]) for s in visible}
        tracked = all(v >= iou_threshold for v in view_ious.values())
        objects.append(TrackedObject(int(gt_id), int(overlap.pred_ids[p]), float(iou[g, p]), view_ious, tracked))

    return TrackingResult(
        t_miou=nan_mean([o.iou for o in objects]),
        t_sr=nan_mean([float(o.tracked) for o in objects]),
        objects=objects,
        num_predicted=len(overlap.pred_ids),
    )


@dataclass
class MatchedInstances:
    """The released code's instance metric (``evaluate_matched_instances`` in its ``iggt/metrics.py``)."""

    matched_miou: float
    """Mean IoU over the Hungarian matches that reach ``MATCH_IOU``; unmatched objects do not count,
    so it is never below 0.5 when defined (NaN without a match)."""
    matched_pixel_accuracy: float
    """Mean over those matches of (shared pixels / ground-truth pixels)."""
    num_matches: int

    def summary(self) -> dict[str, float]:
        return {"matched_miou": self.matched_miou, "matched_pixel_accuracy": self.matched_pixel_accuracy,
                "num_matches": float(self.num_matches)}


MATCH_IOU = 0.5
"""The released metric keeps a Hungarian match only at IoU >= this."""


def matched_instance_metrics(gt_ids: np.ndarray, pred_labels: np.ndarray) -> MatchedInstances:
    """The release's matched mIoU: Hungarian matching on 1 - IoU between ground-truth and predicted
    masks (here over all views together, the masks our tracking uses), matches kept at IoU >= 0.5,
    mean IoU and pixel accuracy over the kept matches. Unlike T-mIoU it ignores missed objects."""
    overlap = label_overlap(gt_ids, pred_labels)
    iou = overlap.iou()
    kept = []
    if iou.size:
        rows, cols = linear_sum_assignment(1.0 - iou)
        kept = [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= MATCH_IOU]
    return MatchedInstances(
        matched_miou=nan_mean([iou[r, c] for r, c in kept]),
        matched_pixel_accuracy=nan_mean([overlap.intersection[r, c] / overlap.gt_area[r] for r, c in kept]),
        num_matches=len(kept),
    )


# ============================================================================ segmentation


@dataclass
class AveragePrecision:
    """Class-agnostic instance AP, see `instance_average_precision`."""

    ap: float
    ap50: float
    ap25: float
    per_threshold: dict[float, float]

    def summary(self) -> dict[str, float]:
        return {"ap": self.ap, "ap50": self.ap50, "ap25": self.ap25}


def _average_precision_at(iou: np.ndarray, background_share: np.ndarray, order: np.ndarray, threshold: float) -> float:
    """All-point interpolated AP of predictions taken in ``order`` against the GT rows of ``iou``."""
    num_gt = iou.shape[0]
    gt_taken = np.zeros(num_gt, dtype=bool)
    true_positive = []
    for p in order:
        candidates = np.where(~gt_taken & (iou[:, p] >= threshold), iou[:, p], -1.0)
        if candidates.max() >= 0:
            gt_taken[int(candidates.argmax())] = True
            true_positive.append(True)
        elif background_share[p] < threshold:  # a miss that lies mostly on background is ignored
            true_positive.append(False)
    if not true_positive:
        return 0.0
    hits = np.cumsum(true_positive)
    precision = hits / np.arange(1, len(hits) + 1)
    recall = hits / num_gt
    # Precision envelope (monotonically non-increasing), integrated over the recall steps.
    recall = np.concatenate(([0.0], recall))
    precision = np.concatenate(([0.0], precision))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * envelope[1:]))


def instance_average_precision(gt_ids: np.ndarray, pred_labels: np.ndarray,
                               scores: dict[int, float] | None = None) -> AveragePrecision:
    """Class-agnostic instance AP over points (pixels of all views, or a fused point cloud).

    Definition: predicted instances are ranked by ``scores`` (default: their size in points,
    larger first; ties by label). At each IoU threshold t, each prediction in turn is a true
    positive if some not-yet-matched GT object has IoU >= t with it (it takes the one with the
    highest IoU); otherwise it is a false positive, unless at least a share t of its points lies
    on GT background: such a prediction is ignored (ScanNet's rule for predictions on
    unlabelled points; here it keeps the floor and wall segments that IGGT's clustering makes,
    like any method's, from counting as false positives). AP(t) is the area under the
    precision-recall curve with the precision envelope (all-point interpolation, PASCAL VOC
    2010+). ``ap`` averages AP(t) over t = 0.50:0.05:0.95 (ScanNet), ``ap50`` / ``ap25`` are
    AP(0.5) / AP(0.25). Predicted points on GT background count in a prediction's area, so
    merging an object with the floor lowers its IoU. ``nan`` when there is no GT object; 0 when
    there is no prediction.
    """
    overlap = label_overlap(gt_ids, pred_labels)
    iou = overlap.iou()
    thresholds = (*AP_IOU_THRESHOLDS, 0.25)
    if len(overlap.gt_ids) == 0:
        values = {t: math.nan for t in thresholds}
    else:
        if scores is None:
            score = overlap.pred_area.astype(np.float64)
        else:
            score = np.array([scores[int(p)] for p in overlap.pred_ids], dtype=np.float64)
        order = np.lexsort((overlap.pred_ids, -score))
        on_objects = overlap.intersection.sum(axis=0)
        background_share = 1.0 - on_objects / np.maximum(overlap.pred_area, 1)
        values = {t: _average_precision_at(iou, background_share, order, t) for t in thresholds}
    return AveragePrecision(ap=nan_mean([values[t] for t in AP_IOU_THRESHOLDS]), ap50=values[0.5], ap25=values[0.25],
                            per_threshold={float(t): values[t] for t in AP_IOU_THRESHOLDS})


def semantic_from_instances(pred_labels: np.ndarray, gt_semantic: np.ndarray) -> np.ndarray:
    """Give every predicted instance the majority ground-truth category of its pixels.

    This is the labelling protocol of our semantic mIoU: a class-agnostic instance
    segmentation is named by an oracle, so the mIoU measures how well the instance masks
    follow the objects, not a classifier. Predicted background gets category 0; an instance
    lying mostly on background becomes background.
    """
    pred_labels = np.asarray(pred_labels)
    gt_semantic = np.asarray(gt_semantic)
    semantic = np.zeros(gt_semantic.shape, dtype=np.int64)
    foreground = pred_labels >= 0
    if not foreground.any():
        return semantic
    majority = majority_label(pred_labels[foreground].astype(np.int64), np.maximum(gt_semantic[foreground], 0))
    semantic[foreground] = majority.values[majority.inverse]
    return semantic


def semantic_from_names(pred_labels: np.ndarray, categories: dict[int, int]) -> np.ndarray:
    """Paint every predicted instance with the category it was named (open-vocabulary protocol).

    ``categories`` maps instance label -> category index (1-based, as the ground truth; 0 =
    background, e.g. an instance named floor or wall). Instances missing from it, and predicted
    background, get 0. Unlike `semantic_from_instances` no ground truth is consulted: the mIoU
    then measures the masks and the naming model together.
    """
    pred_labels = np.asarray(pred_labels)
    lookup = np.zeros(max([int(pred_labels.max(initial=0)) + 1, *(k + 1 for k in categories)]), np.int64)
    for label, category in categories.items():
        if label >= 0:
            lookup[label] = category
    return np.where(pred_labels >= 0, lookup[np.maximum(pred_labels, 0)], 0)


def semantic_miou(pred_semantic: np.ndarray, gt_semantic: np.ndarray) -> float:
    """Mean IoU over the object categories (> 0) present in the ground truth; ``nan`` if none."""
    pred = np.asarray(pred_semantic).ravel()
    gt = np.asarray(gt_semantic).ravel()
    classes = np.unique(gt[gt > 0])
    return nan_mean([mask_iou(gt == c, pred == c) for c in classes])


# ---------------------------------------------------------------------------- fused point cloud


@dataclass
class MajorityLabel:
    """Result of `majority_label`: the winning label of each group and the group of each element."""

    groups: np.ndarray
    """``[V]`` distinct group ids, ascending."""
    values: np.ndarray
    """``[V]`` most frequent label in each group (ties: the smaller label)."""
    inverse: np.ndarray
    """``[N]`` index into ``groups`` of each element."""


def majority_label(groups: np.ndarray, labels: np.ndarray) -> MajorityLabel:
    """For each distinct value of ``groups``, the most frequent value of ``labels`` among its elements."""
    groups = np.asarray(groups).ravel()
    labels = np.asarray(labels).ravel()
    group_values, inverse = np.unique(groups, return_inverse=True)
    order = np.lexsort((labels, inverse))
    g, lab = inverse[order], labels[order]
    run_start = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (lab[1:] != lab[:-1])])
    run_length = np.diff(np.r_[run_start, len(g)])
    run_group, run_label = g[run_start], lab[run_start]
    best = np.lexsort((-run_length, run_group))  # stable: among equal counts the smaller label stays first
    first_of_group = np.r_[True, run_group[best][1:] != run_group[best][:-1]]
    return MajorityLabel(group_values, run_label[best][first_of_group], inverse.ravel())


def voxel_groups(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """``[N]`` integer voxel key of each point ``[N, 3]`` (equal keys = same voxel)."""
    points = np.asarray(points, dtype=np.float64)
    cells = np.floor((points - points.min(axis=0)) / voxel_size).astype(np.int64)
    extent = cells.max(axis=0) + 1
    return (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2]


def fuse_labels(points: np.ndarray, valid: np.ndarray, *label_maps: np.ndarray,
                voxel_fraction: float = FUSION_VOXEL_FRACTION) -> list[np.ndarray]:
    """Fuse per-pixel label maps of all views into one label per voxel of a 3D point cloud.

    ``points`` ``[S, H, W, 3]`` (the ground-truth geometry, so that every method is scored
    on the same cloud) and ``valid`` ``[S, H, W]`` select the points; they are binned into
    voxels of ``voxel_fraction`` x the bounding-box diagonal, and each label map gives every
    voxel the majority label of its pixels. Overlapping views thus count a surface once.
    Returns one ``[V]`` array per label map, in the same voxel order.
    """
    valid = np.asarray(valid, dtype=bool) & np.isfinite(points).all(axis=-1)
    selected = np.asarray(points)[valid]
    if len(selected) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in label_maps]
    diagonal = float(np.linalg.norm(selected.max(axis=0) - selected.min(axis=0)))
    groups = voxel_groups(selected, max(diagonal * voxel_fraction, 1e-9))
    return [majority_label(groups, np.asarray(labels)[valid]).values for labels in label_maps]


# ============================================================================ depth


@dataclass
class DepthMetrics:
    """Depth errors after median scale alignment, see `depth_metrics`."""

    abs_rel_view: float
    delta1_view: float
    abs_rel_scene: float
    delta1_scene: float

    def summary(self) -> dict[str, float]:
        return {"abs_rel_view": self.abs_rel_view, "delta1_view": self.delta1_view,
                "abs_rel_scene": self.abs_rel_scene, "delta1_scene": self.delta1_scene}


def _depth_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(AbsRel, share of delta < 1.25) of already masked 1-D arrays, after median alignment."""
    positive = pred > 0
    aligned = pred * median_scale(pred, gt, positive) if positive.any() else pred
    abs_rel = float(np.mean(np.abs(aligned - gt) / gt))
    with np.errstate(divide="ignore"):
        ratio = np.where(aligned > 0, np.maximum(aligned / gt, gt / np.maximum(aligned, 1e-12)), np.inf)
    return abs_rel, float(np.mean(ratio < DELTA_THRESHOLD))


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> DepthMetrics:
    """AbsRel = mean |s*p - g| / g and delta1 = share of max(s*p/g, g/s*p) < 1.25.

    The scale s = median(g) / median(p) is taken per view (``*_view``: each view aligned on
    its own, metrics averaged over the views) and once for the whole scene (``*_scene``: one
    scale for all views, metrics over all pixels), the latter also checking that the views'
    depths agree with each other in scale. Pixels are those with finite g > 0 (and ``valid``);
    a non-finite or non-positive prediction there counts as an error (it gets no part in the
    median and fails delta1). Both ``nan`` when no pixel is valid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"need two [S, H, W] depth maps of equal shape, got {pred.shape} and {gt.shape}")
    mask = np.isfinite(gt) & (gt > 0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    pred = np.where(np.isfinite(pred), pred, 0.0)
    if not mask.any():
        return DepthMetrics(math.nan, math.nan, math.nan, math.nan)
    per_view = [_depth_errors(pred[s][mask[s]], gt[s][mask[s]]) for s in range(len(pred)) if mask[s].any()]
    scene = _depth_errors(pred[mask], gt[mask])
    return DepthMetrics(abs_rel_view=float(np.mean([v[0] for v in per_view])),
                        delta1_view=float(np.mean([v[1] for v in per_view])),
                        abs_rel_scene=scene[0], delta1_scene=scene[1])


# ============================================================================ point maps


@dataclass
class PointMapMetrics:
    """Point-cloud distances after a similarity alignment, see `pointmap_metrics`."""

    accuracy: float
    completeness: float
    chamfer: float
    scale: float
    """Scale of the fitted similarity (prediction -> ground truth)."""

    def summary(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "completeness": self.completeness, "chamfer": self.chamfer}


def pointmap_metrics(pred_points: np.ndarray, gt_points: np.ndarray, valid: np.ndarray | None = None,
                     max_points: int = 20000, seed: int = 0) -> PointMapMetrics:
    """Accuracy, completeness and Chamfer distance of a predicted point map, in ground-truth units.

    ``pred_points`` and ``gt_points`` are ``[..., 3]`` point maps of the same pixels; pixels with
    finite points on both sides (and ``valid``) are used, at most ``max_points`` of them drawn
    at random (``seed``). The prediction is first aligned to the ground truth with the
    least-squares similarity through the pixel correspondences (Umeyama), which removes the
    unknown scale and world frame. Then accuracy = mean distance from each aligned predicted
    point to its nearest GT point, completeness = mean distance from each GT point to its
    nearest aligned predicted point (KD-trees), Chamfer = their mean (as DUSt3R reports it).
    ``nan`` when fewer than 3 points are valid.
    """
    pred = np.asarray(pred_points, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt_points, dtype=np.float64).reshape(-1, 3)
    if pred.shape != gt.shape:
        raise ValueError(f"point maps differ in shape: {np.shape(pred_points)} vs {np.shape(gt_points)}")
    mask = np.isfinite(pred).all(axis=1) & np.isfinite(gt).all(axis=1)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).ravel()
    index = np.flatnonzero(mask)
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(index, max_points, replace=False))
    if len(index) < 3:
        return PointMapMetrics(math.nan, math.nan, math.nan, math.nan)
    pred, gt = pred[index], gt[index]
    try:
        scale, rotation, translation = umeyama_alignment(pred, gt, with_scale=True)
    except ValueError:  # every predicted point identical: nothing to align, score it unscaled
        scale, rotation, translation = 1.0, np.eye(3), gt.mean(axis=0) - pred.mean(axis=0)
    aligned = scale * pred @ rotation.T + translation
    accuracy = float(cKDTree(gt).query(aligned)[0].mean())
    completeness = float(cKDTree(aligned).query(gt)[0].mean())
    return PointMapMetrics(accuracy, completeness, (accuracy + completeness) / 2, float(scale))


# ============================================================================ cameras


@dataclass
class PoseMetrics:
    """Relative camera pose errors over all view pairs, see `pose_metrics`."""

    rotation_errors: np.ndarray
    """``[pairs]`` degrees."""
    translation_errors: np.ndarray
    """``[pairs]`` degrees."""
    rra: dict[float, float]
    """Relative rotation accuracy: share of pairs with rotation error < threshold (degrees)."""
    rta: dict[float, float]
    """Relative translation accuracy: share of pairs with translation error < threshold."""
    auc30: float

    def summary(self) -> dict[str, float]:
        figures = {f"rra@{t:g}": v for t, v in self.rra.items()}
        figures.update({f"rta@{t:g}": v for t, v in self.rta.items()})
        figures["auc@30"] = self.auc30
        return figures


def _rotation_angle_deg(rotation: np.ndarray) -> np.ndarray:
    cosine = (np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _direction_angle_deg(a: np.ndarray, b: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """Angle between vectors; two (near) zero vectors agree (0), one zero vector is 90 degrees off."""
    norm_a, norm_b = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    cosine = (a * b).sum(-1) / (np.maximum(norm_a, eps) * np.maximum(norm_b, eps))
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return np.where((norm_a < eps) & (norm_b < eps), 0.0, angle)


def relative_pose_errors(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of the relative pose of every pair i < j.

    With world-to-camera ``[R_i | t_i]``, the pose of camera j relative to camera i is
    ``R_ij = R_j R_i^T``, ``t_ij = t_j - R_ij t_i``. Rotation error = angle of
    ``R_ij,pred R_ij,gt^T``; translation error = angle between ``t_ij,pred`` and ``t_ij,gt``
    (direction only, so the unknown scale does not matter; no folding of the sign). Both are
    invariant to the choice of world frame.
    """
    pred = np.asarray(pred_extrinsics, dtype=np.float64)
    gt = np.asarray(gt_extrinsics, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[1:] != (3, 4):
        raise ValueError(f"need two [S, 3, 4] extrinsics arrays of equal shape, got {pred.shape} and {gt.shape}")
    i, j = np.triu_indices(len(pred), k=1)

    def relative(extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rotation, translation = extrinsics[:, :, :3], extrinsics[:, :, 3]
        rotation_ij = rotation[j] @ np.swapaxes(rotation[i], -1, -2)
        translation_ij = translation[j] - (rotation_ij @ translation[i][..., None])[..., 0]
        return rotation_ij, translation_ij

    pred_rotation, pred_translation = relative(pred)
    gt_rotation, gt_translation = relative(gt)
    rotation_error = _rotation_angle_deg(pred_rotation @ np.swapaxes(gt_rotation, -1, -2))
    return rotation_error, _direction_angle_deg(pred_translation, gt_translation)


def pose_auc(rotation_errors: np.ndarray, translation_errors: np.ndarray,
             max_threshold: int = POSE_AUC_MAX_DEG) -> float:
    """AUC as in VGGT / PoseDiffusion: mean over t = 1..max_threshold degrees of the share of
    pairs whose max(rotation error, translation error) < t. ``nan`` without pairs."""
    errors = np.maximum(np.asarray(rotation_errors), np.asarray(translation_errors))
    if errors.size == 0:
        return math.nan
    return float(np.mean([(errors < t).mean() for t in range(1, max_threshold + 1)]))


def pose_metrics(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> PoseMetrics:
    """RRA / RTA at 5, 15, 30 degrees and AUC@30 of the relative poses of all view pairs."""
    rotation, translation = relative_pose_errors(pred_extrinsics, gt_extrinsics)
    if rotation.size == 0:
        nan = {t: math.nan for t in POSE_THRESHOLDS_DEG}
        return PoseMetrics(rotation, translation, dict(nan), dict(nan), math.nan)
    return PoseMetrics(rotation, translation,
                       rra={t: float((rotation < t).mean()) for t in POSE_THRESHOLDS_DEG},
                       rta={t: float((translation < t).mean()) for t in POSE_THRESHOLDS_DEG},
                       auc30=pose_auc(rotation, translation))
