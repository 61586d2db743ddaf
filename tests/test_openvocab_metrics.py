"""The open-vocabulary metrics of `python -m iggt evaluate`, on hand-computed cases and one generated scene."""
import numpy as np
import pytest

from grounding.embedders.seeing import SeeingEmbedder
from iggt.data.oracle import oracle_scene
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.evaluation import evaluate, metrics
from iggt.instances import ClusteringConfig

GT = np.array([[[1, 1, 0], [2, 2, 0]]] * 2)
"""Two views of 2 x 3 pixels: category 1 on top, category 2 below, background on the right."""
PRED = np.array([[[0, 0, 1], [1, 1, -1]],    # view 0: instance 1 (named 2) spills onto a background pixel
                 [[0, 0, -1], [1, 1, -1]]])  # view 1: exact


def test_instances_are_painted_with_the_category_they_were_named():
    named = metrics.semantic_from_names(PRED, {0: 1, 1: 2})
    np.testing.assert_array_equal(named[0], [[1, 1, 2], [2, 2, 0]])
    np.testing.assert_array_equal(metrics.semantic_from_names(PRED, {1: 2})[1], [[0, 0, 0], [2, 2, 0]])
    assert not metrics.semantic_from_names(np.full((1, 2), -1), {}).any()


def test_open_vocabulary_miou_2d_and_3d_by_hand():
    named = metrics.semantic_from_names(PRED, {0: 1, 1: 2})
    # 2D: category 1 is exact (IoU 1); category 2 has 4 true pixels and 5 predicted (IoU 4/5).
    assert metrics.semantic_miou(named, GT) == pytest.approx((1 + 4 / 5) / 2)
    # 3D: both views see the same six points; the spilled pixel is named 2 in one view and 0 in the other,
    # a tie that the fused cloud resolves to the smaller label (background): every category is exact.
    rows, cols = np.meshgrid(np.arange(2.0), np.arange(3.0), indexing="ij")
    points = np.stack([np.stack([cols, rows, np.ones_like(rows)], axis=-1)] * 2)
    fused_gt, fused_named = metrics.fuse_labels(points, np.ones(GT.shape, bool), GT, named)
    assert len(fused_gt) == 6 and metrics.semantic_miou(fused_named, fused_gt) == 1.0
    # Naming every instance wrongly scores 0.
    assert metrics.semantic_miou(metrics.semantic_from_names(PRED, {0: 2, 1: 1}), GT) == 0.0


def test_evaluate_scores_open_vocabulary_miou_for_model_baseline_and_oracle():
    record = generate_scene(5, GeneratorConfig(num_views=3, image_size=(128, 128), object_count=(3, 5)))
    clustering = ClusteringConfig.from_preset("medium", min_cluster_size=100, min_samples=20)
    result, _ = evaluate.evaluate_record(record, lambda images: oracle_scene(record), clustering,
                                         with_baselines=True, embedder=SeeingEmbedder())
    for method in evaluate.OPENVOCAB_METHODS:
        figures = result.methods[method]
        assert 0.0 <= figures["ov_miou_2d"] <= figures["miou_2d"] + 1e-9  # here no better than naming by the GT
        assert 0.0 <= figures["ov_miou_3d"] <= 1.0
    assert "ov_miou_2d" not in result.methods["geometry"]
    assert result.methods["oracle"]["ov_miou_2d"] > 0.8  # five objects of distinct shape, all named right
    report = evaluate.markdown_report({"data": "d", "checkpoint": "c", "model": "m", "clustering": {},
                                       "scenes_evaluated": 1, "scenes_failed": 0, "failures": [],
                                       "aggregate": evaluate.aggregate([result])}, [])
    assert "OV mIoU 2D" in report and "OV mIoU 3D" in report
