"""The evaluation runner, its report and the baselines, on tiny generated scenes."""
import json
import math

import numpy as np
import pytest

from iggt.data.oracle import oracle_scene
from iggt.data.scene_format import save_scene_record
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.evaluation import baselines, evaluate
from iggt.instances import ClusteringConfig
from iggt.loading import load_model
from iggt.reconstruct import Reconstructor
from iggt.scene import Scene, ViewTransform

TINY_SCENES = GeneratorConfig(num_views=3, image_size=(112, 112), object_count=(2, 4))
TINY_CLUSTERING = ClusteringConfig.from_preset("medium", min_cluster_size=100, min_samples=20)
"""The presets' sizes are meant for 8 views of 224 px and more; these scenes are 16x smaller."""
RUNNER_SCENES = GeneratorConfig(num_views=2, image_size=(56, 56), object_count=(2, 3))
RUNNER_CLUSTERING = ClusteringConfig.from_preset("medium", min_cluster_size=30, min_samples=5)


@pytest.fixture(scope="module")
def tiny_record():
    return generate_scene(10_002, TINY_SCENES)


# ---------------------------------------------------------------------------- baselines


def test_chain_views_follows_masks_by_2d_overlap():
    view0 = np.array([[0, 0, 1, 1, -1, -1]])
    view1 = np.array([[5, 5, -1, 7, -1, 9]])   # 5 ~ 0 (IoU 1), 7 ~ 1 (IoU 1/2), 9 is new
    view2 = np.array([[-1, -1, 3, 3, -1, -1]])  # 3 overlaps id 1 of view 1 (IoU 1/2); id 0 disappears
    view3 = np.array([[4, 4, -1, -1, -1, -1]])  # where id 0 was two views ago: no memory, a new id
    chained = baselines.chain_views([view0, view1, view2, view3])
    np.testing.assert_array_equal(chained, [[[0, 0, 1, 1, -1, -1]], [[0, 0, -1, 1, -1, 2]],
                                            [[-1, -1, 1, 1, -1, -1]], [[3, 3, -1, -1, -1, -1]]])


def test_chain_views_ignores_small_overlaps():
    view0 = np.array([[0] * 10])
    view1 = np.array([[1] + [-1] * 9])  # IoU 1/10 with id 0 of view 0
    assert baselines.chain_views([view0, view1], min_iou=0.2)[1, 0, 0] == 1
    assert baselines.chain_views([view0, view1], min_iou=0.1)[1, 0, 0] == 0


def test_select_views_keeps_the_chosen_views_only(tiny_record):
    scene = oracle_scene(tiny_record)
    picked = scene.select_views([2, 0])
    np.testing.assert_array_equal(picked.depth, scene.depth[[2, 0]])
    np.testing.assert_array_equal(picked.extrinsics, scene.extrinsics[[2, 0]])
    assert picked.view_names == [scene.view_names[2], scene.view_names[0]]
    assert picked.instances is None and scene.instances is not None


def box_surface(center, half, step=0.04):
    """Points on the visible surface of an axis-aligned box standing on the floor (no bottom face)."""
    axes = [np.arange(c - h, c + h + 1e-9, step) for c, h in zip(center, half)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    on_face = np.isclose(np.abs(grid - center), half, atol=step / 2).any(axis=1)
    bottom = np.isclose(grid[:, 2], center[2] - half[2], atol=step / 2)
    return grid[on_face & ~bottom]


def points_scene(points: np.ndarray) -> Scene:
    """A one-view scene whose pixels are the given points (only the geometry matters)."""
    count = len(points)
    zeros = np.zeros((1, 1, count), np.float32)
    return Scene(images=np.zeros((1, 1, count, 3), np.float32), extrinsics=np.eye(3, 4, dtype=np.float32)[None],
                 intrinsics=np.eye(3, dtype=np.float32)[None], depth=zeros + 1, depth_conf=zeros + 1,
                 world_points=points[None, None].astype(np.float32), world_points_conf=zeros + 1,
                 points_from_depth=points[None, None].astype(np.float32),
                 features=np.zeros((1, 1, count, 8), np.float32))


def test_geometry_baseline_removes_floor_and_wall_and_splits_objects():
    u, v = np.meshgrid(np.linspace(0, 4, 70), np.linspace(0, 4, 70))
    floor = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=1)
    wall = np.stack([np.zeros(u.size), u.ravel(), v.ravel() / 2], axis=1)
    box_a = box_surface(np.array([1.0, 1.0, 0.3]), np.array([0.3, 0.3, 0.3]))
    box_b = box_surface(np.array([3.0, 2.8, 0.2]), np.array([0.2, 0.4, 0.2]))
    points = np.concatenate([floor, wall, box_a, box_b])
    labels = baselines.geometry_instances(points_scene(points))[0, 0]
    planes = labels[:len(floor) + len(wall)]
    a = labels[len(floor) + len(wall):-len(box_b)]
    b = labels[-len(box_b):]
    assert (planes < 0).mean() > 0.99
    # Each box is one instance (except its bottom rim, within the floor's tolerance), and they differ.
    label_a, label_b = np.bincount(a[a >= 0]).argmax(), np.bincount(b[b >= 0]).argmax()
    assert label_a != label_b
    assert (a == label_a).mean() > 0.85 and (b == label_b).mean() > 0.85
    assert set(np.unique(labels)) == {-1, label_a, label_b}


# ---------------------------------------------------------------------------- one scene


def test_perfect_reconstruction_scores_perfect_geometry(tiny_record):
    result, panel = evaluate.evaluate_record(tiny_record, lambda images: oracle_scene(tiny_record),
                                             TINY_CLUSTERING, with_baselines=False)
    geometry = result.geometry
    assert geometry["abs_rel_view"] == pytest.approx(0, abs=1e-6) and geometry["delta1_scene"] == 1.0
    assert geometry["points_chamfer"] == pytest.approx(0, abs=1e-4)
    assert geometry["auc@30"] == 1.0 and geometry["rra@5"] == 1.0
    assert list(result.methods) == ["iggt"]
    assert result.methods["iggt"]["t_miou"] > 0.9  # perfect features: only clustering can lose anything
    assert panel.images.shape[0] == 3 and set(panel.labels) == {"iggt"}


def test_ground_truth_world_is_the_first_camera(tiny_record):
    truth = evaluate.GroundTruth.of(tiny_record)
    np.testing.assert_allclose(truth.extrinsics[0], np.eye(3, 4), atol=1e-6)
    # A surface point of view 0 lies at depth z along the first camera's axis.
    y, x = np.argwhere(truth.valid[0])[0]
    assert truth.points[0, y, x, 2] == pytest.approx(tiny_record.depth[0, y, x], rel=1e-5)


def scene_of_size(views: int, height: int, width: int, transforms: list[ViewTransform]) -> Scene:
    zeros = np.zeros((views, height, width), np.float32)
    return Scene(images=np.zeros((views, height, width, 3), np.float32), extrinsics=np.zeros((views, 3, 4), np.float32),
                 intrinsics=np.zeros((views, 3, 3), np.float32), depth=zeros, depth_conf=zeros,
                 world_points=np.zeros((views, height, width, 3), np.float32), world_points_conf=zeros,
                 points_from_depth=np.zeros((views, height, width, 3), np.float32),
                 features=np.zeros((views, height, width, 8), np.float32), view_transforms=transforms)


def test_predictions_are_mapped_back_to_the_record_pixels():
    halved = evaluate.RecordGrid.of(scene_of_size(1, 2, 3, [ViewTransform((4, 6), (2, 3))]), (4, 6))
    small = np.arange(6).reshape(1, 2, 3)
    np.testing.assert_array_equal(halved.resample(small, -1)[0],
                                  np.repeat(np.repeat([[0, 1, 2], [3, 4, 5]], 2, axis=0), 2, axis=1))
    # Cropped: the model saw rows 1..2 of a 4-row view; rows 0 and 3 have no prediction.
    cropped = evaluate.RecordGrid.of(scene_of_size(1, 2, 2, [ViewTransform((4, 2), (4, 2), (-1, 0))]), (4, 2))
    depth = cropped.resample(np.array([[[1.0, 2.0], [3.0, 4.0]]]), np.nan)[0]
    np.testing.assert_array_equal(depth[1:3], [[1, 2], [3, 4]])
    assert np.isnan(depth[[0, 3]]).all()


# ---------------------------------------------------------------------------- the run


def test_runner_writes_report_and_survives_a_broken_scene(tmp_path):
    data = tmp_path / "data"
    records = [generate_scene(seed, RUNNER_SCENES) for seed in (10_000, 10_001, 10_002)]
    for record, name in zip(records, ("a_scene", "b_scene", "c_broken")):
        save_scene_record(record, data / name)
    (data / "c_broken" / "depth" / "001.png").write_bytes(b"not a png")

    out = tmp_path / "report"
    config = evaluate.EvaluationConfig(data=data, checkpoint="tiny", out=out, device="cpu",
                                       clustering=RUNNER_CLUSTERING)
    # The tiny preset works at 224 px; at 28 px (half the records' size) the run stays fast and
    # exercises the mapping of predictions back to the records' pixels.
    summary = evaluate.run_evaluation(config, Reconstructor(load_model("tiny"), device="cpu", size=28))

    assert summary["scenes_evaluated"] == 2 and summary["scenes_failed"] == 1
    assert "c_broken" in summary["failures"][0]["scene"] and "001.png" in summary["failures"][0]["error"]
    saved = json.loads((out / "metrics.json").read_text())
    methods = saved["aggregate"]["methods"]
    assert set(methods) == {"iggt", "per_view", "geometry", "oracle"}
    for figures in methods.values():
        assert figures["t_miou"] is None or 0 <= figures["t_miou"] <= 1
    assert methods["oracle"]["t_miou"] > methods["iggt"]["t_miou"]  # perfect features beat a random model
    assert math.isfinite(saved["aggregate"]["geometry"]["abs_rel_view"])
    assert [s["name"] for s in saved["scenes"]] == [records[0].name, records[1].name]
    oracle_objects = saved["scenes"][0]["tracked_objects"]["oracle"]
    assert {o["gt_id"] for o in oracle_objects} <= set(np.unique(records[0].instance_ids).tolist()) - {0}
    report = (out / "report.md").read_text()
    assert "| Method | T-mIoU (strict) | T-SR | matched mIoU (release) | matches |" in report
    assert "Oracle" in report and "c_broken" in report
    for figures in methods.values():  # the release's matched mIoU only averages matches of IoU >= 0.5
        assert figures["matched_miou"] is None or figures["matched_miou"] >= 0.5
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "per_scene.png" in pngs and len([p for p in pngs if p.startswith("masks_")]) == 2
    for name in pngs:
        assert f"]({name})" in report


def test_runner_explains_an_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="python -m iggt generate"):
        evaluate.run_evaluation(evaluate.EvaluationConfig(data=tmp_path / "empty", checkpoint="tiny",
                                                          out=tmp_path / "out"))


def test_evaluate_command_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    from iggt.__main__ import main

    code = main(["evaluate", "--data", str(tmp_path / "missing"), "--checkpoint", "tiny", "--out", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: Scene folder not found: {tmp_path / 'missing'}"


def test_evaluate_command_fails_when_a_scene_failed_unless_failures_are_allowed(tmp_path, capsys):
    from iggt.__main__ import main

    data = tmp_path / "data"
    save_scene_record(generate_scene(10_000, RUNNER_SCENES), data / "a_scene")
    save_scene_record(generate_scene(10_001, RUNNER_SCENES), data / "b_broken")
    (data / "b_broken" / "depth" / "001.png").write_bytes(b"not a png")
    command = ["evaluate", "--data", str(data), "--checkpoint", "tiny", "--out", str(tmp_path / "out"),
               "--no-baselines", "--device", "cpu"]
    assert main(command) == 1
    assert "1 scene(s) failed" in capsys.readouterr().err
    assert main([*command, "--allow-failures"]) == 0
    assert "reference_view_pixels None" in (tmp_path / "out" / "report.md").read_text()  # sizes as released
    assert main([*command, "--allow-failures", "--scale-sizes"]) == 0
    assert "reference_view_pixels 203056" in (tmp_path / "out" / "report.md").read_text()
