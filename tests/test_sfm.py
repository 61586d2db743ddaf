"""Bundle adjustment, the user's own cameras and metric scale, on generated scenes with known truth."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from iggt.data.oracle import oracle_scene
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.evaluation.metrics import relative_pose_errors
from iggt.export import export_all, write_colmap
from iggt.geometry import invert_extrinsics, project_points, unproject_depth
from iggt.scene import Scene, ViewTransform
from iggt.sfm.adjust import AdjustmentConfig, TooFewTracks, bundle_adjust, triangulate
from iggt.sfm.cameras import CameraInputError, KnownIntrinsics, apply_intrinsics, fit_pose_alignment, read_poses
from iggt.sfm.colmap import CameraOptions
from iggt.sfm.refine import RefineOptions, refine
from iggt.sfm.scale import KnownLength, ScaleError, apply_metric_scale, transform_scene
from iggt.sfm.tracks import FeatureTracks, ModelTracks, Tracks

pycolmap = pytest.importorskip("pycolmap")

SCENES = GeneratorConfig(num_views=4, image_size=(160, 160), object_count=(3, 5), trajectories=("walk",))
PHOTO_SIZE = (320, 320)
"""The views stand for photos twice their size, so every conversion to photo pixels is exercised."""


def rotated(extrinsics: np.ndarray, degrees: float, move: float = 0.0, seed: int = 0) -> np.ndarray:
    """Views 1.. turned by random rotations of about ``degrees`` about their centres and moved by
    about ``move`` times the mean distance of the cameras from view 0 (view 0, the world frame, stays)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    out = extrinsics.astype(np.float64).copy()
    centres = invert_extrinsics(out)[:, :, 3]
    spread = float(np.mean(np.linalg.norm(centres[1:] - centres[0], axis=1)))
    for view in range(1, len(out)):
        turn = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.radians(degrees)).as_matrix()
        out[view, :, :3] = turn @ out[view, :, :3]
        out[view, :, 3] = turn @ out[view, :, 3] + rng.normal(size=3) / np.sqrt(3) * move * spread
    return out.astype(np.float32)


def with_cameras(scene: Scene, extrinsics: np.ndarray) -> Scene:
    """``scene`` seen from other cameras: its depth unprojected with them, as a prediction would be."""
    return replace(scene, extrinsics=extrinsics,
                   points_from_depth=unproject_depth(scene.depth, extrinsics, scene.intrinsics))


@pytest.fixture(scope="module")
def truth() -> Scene:
    scene = oracle_scene(generate_scene(10_005, SCENES))
    transform = ViewTransform(PHOTO_SIZE, scene.image_size)
    return replace(scene, view_transforms=[transform] * scene.num_views,
                   view_names=[f"shot {i}.jpg" for i in range(scene.num_views)])


@pytest.fixture(scope="module")
def perturbed(truth) -> Scene:
    return with_cameras(truth, rotated(truth.extrinsics, 4.0))


@pytest.fixture(scope="module")
def feature_tracks(perturbed) -> Tracks:
    return FeatureTracks()(perturbed)


@pytest.fixture(scope="module")
def adjusted(perturbed, feature_tracks):
    return bundle_adjust(perturbed, feature_tracks, AdjustmentConfig(fix_intrinsics=True))


def mean_rotation_error(scene: Scene, truth: Scene) -> float:
    return float(relative_pose_errors(scene.extrinsics, truth.extrinsics)[0].mean())


def mean_pose_errors(scene: Scene, truth: Scene) -> np.ndarray:
    """Mean rotation and translation-direction errors (degrees) over the view pairs."""
    return np.array([errors.mean() for errors in relative_pose_errors(scene.extrinsics, truth.extrinsics)])


# -- tracks and bundle adjustment ---------------------------------------------------------
def test_feature_tracks_follow_the_true_geometry(truth, feature_tracks):
    """Guided SIFT matches chain into tracks whose points project where the true cameras say."""
    assert feature_tracks.count > 100 and (feature_tracks.visible.sum(axis=0) >= 2).all()
    first = np.argmax(feature_tracks.visible, axis=0)
    xy = feature_tracks.xy[first, np.arange(feature_tracks.count)]
    cols, rows = np.clip(np.round(xy).astype(int), 0, truth.image_size[1] - 1).T
    points = truth.points_from_depth[first, rows, cols].astype(np.float64)
    agree = []
    for view in range(truth.num_views):
        seen = feature_tracks.visible[view] & (first != view)
        camera = points[seen] @ truth.extrinsics[view, :, :3].T + truth.extrinsics[view, :, 3]
        projected = camera @ truth.intrinsics[view].T
        agree.append(np.linalg.norm(projected[:, :2] / projected[:, 2:] - feature_tracks.xy[view, seen], axis=1) < 3)
    assert np.concatenate(agree).mean() > 0.45


def test_triangulation_keeps_only_observations_that_fit_the_final_points():
    """Dropping a bad observation moves a track's point; every observation kept must fit the point
    where it ends up: in front of its camera and within the bound. (The last triangulation was once
    left unchecked: points behind a camera reached pycolmap, whose mean reprojection error of a
    feed-forward start then read about 1e151 px.) Noisy tracks through cameras of short baselines."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    extrinsics = np.stack([np.concatenate([np.eye(3), [[-x], [0], [0]]], axis=1) for x in (0, 0.02, 0.04, 0.5, 1)])
    intrinsics = np.array([[100.0, 0, 50], [0, 100, 50], [0, 0, 1]])[None].repeat(5, 0)
    cameras = SimpleNamespace(extrinsics=extrinsics, intrinsics=intrinsics, depth=np.ones((5, 1, 1)))
    points = np.stack([rng.uniform(-1, 1, 20_000), rng.uniform(-1, 1, 20_000), rng.uniform(1, 5, 20_000)], axis=1)
    xy = project_points(points, extrinsics, intrinsics)[0]
    xy += rng.normal(size=xy.shape) * rng.choice([1, 20, 60], size=xy.shape[:2])[..., None]
    found, kept = triangulate(cameras, Tracks(xy, np.ones(xy.shape[:2], bool)), 32.0, 0.0)
    pixels, depth = project_points(found, extrinsics, intrinsics)
    fits = (np.linalg.norm(pixels - kept.xy, axis=-1) <= 32.0) & (depth > 0)
    assert len(found) > 5000 and fits[kept.visible].all()


def test_bundle_adjustment_recovers_turned_cameras(truth, perturbed, adjusted):
    report = adjusted.report
    assert report.points >= 50 and report.views_adjusted == truth.num_views
    assert report.reprojection_error_after < report.reprojection_error_before
    assert mean_rotation_error(adjusted.scene, truth) < 0.6 * mean_rotation_error(perturbed, truth)
    assert np.allclose(adjusted.scene.extrinsics[0], truth.extrinsics[0], atol=1e-5)  # the world frame stays
    assert np.allclose(adjusted.scene.intrinsics, truth.intrinsics)  # held fixed
    assert "reprojection error" in report.summary()


@pytest.mark.parametrize("shared", [False, True])
def test_adjusted_model_is_read_back_with_observations(tmp_path, perturbed, feature_tracks, adjusted, truth,
                                                       shared):
    """Text and binary models: cameras, 2D-3D observations both ways, small reprojection error."""
    result = adjusted
    if shared:
        result = bundle_adjust(perturbed, feature_tracks, AdjustmentConfig(cameras=CameraOptions("SIMPLE_PINHOLE", True)))
    directory = write_colmap(result.scene, tmp_path / "colmap", model=result.reconstruction)
    for folder in (directory, directory / "sparse" / "0"):
        model = pycolmap.Reconstruction(str(folder))
        assert model.num_images() == truth.num_views
        assert model.num_cameras() == (1 if shared else truth.num_views)
        assert model.num_points3D() == result.report.points > 0
        assert model.compute_mean_reprojection_error() < 1.5  # photo pixels (twice the model's)
        for point_id, point in model.points3D.items():
            assert point.track.length() >= 2
            for element in point.track.elements:
                assert model.image(element.image_id).points2D[element.point2D_idx].point3D_id == point_id
        camera = model.camera(model.image(1).camera_id)
        assert (camera.width, camera.height) == PHOTO_SIZE
        assert model.image(2).name == "shot_1.jpg"


def test_too_few_tracks_is_one_line_and_refine_keeps_the_scene(perturbed, feature_tracks):
    few = feature_tracks.keep(np.arange(feature_tracks.count) < 5)
    with pytest.raises(TooFewTracks, match="kept unadjusted"):
        bundle_adjust(perturbed, few)

    class FewTracks:
        name = "five tracks"

        def __call__(self, scene):
            return few

    from iggt.sfm import refine as refine_module

    original = refine_module.track_source
    refine_module.track_source = lambda *args, **kwargs: FewTracks()
    try:
        refined = refine(perturbed, RefineOptions(bundle_adjust=True))
    finally:
        refine_module.track_source = original
    assert refined.scene is perturbed and refined.colmap_model is None
    assert "kept unadjusted" in refined.notes[0]


def projecting_tracker(truth: Scene):
    """A point tracker that knows the true geometry: what a perfect tracker returns, in its format."""
    def for_scene(scene: Scene):
        def track(view: int, query: np.ndarray):
            cols, rows = np.round(query).astype(int).T
            xy, depth = project_points(truth.points_from_depth[view, rows, cols], truth.extrinsics, truth.intrinsics)
            height, width = truth.image_size
            inside = (xy[..., 0] >= 0) & (xy[..., 0] < width - 1) & (xy[..., 1] >= 0) & (xy[..., 1] < height - 1)
            c, r = np.round(np.where(inside[..., None], xy, 0)).astype(int).transpose(2, 0, 1)
            surface = truth.depth[np.arange(truth.num_views)[:, None], r, c]
            visible = inside & (np.abs(surface - depth) < 0.02 * depth)
            return xy, visible.astype(np.float32), np.full(visible.shape, 0.9, np.float32)
        return track
    return for_scene


@pytest.mark.parametrize("seed", [0, 1])
def test_perfect_tracks_bring_turned_and_moved_cameras_back(truth, seed):
    """Tracks that follow the true geometry (what a perfect tracker returns) from true cameras turned
    by 5 degrees and moved by 5 % of their spread: both errors must fall, in every view. (With a
    first reprojection bound of 8 px, measured with the wrong cameras, most right observations of
    the most turned views were dropped and those views kept their wrong poses: seed 0 went from
    6.5 / 4.3 degrees of rotation / translation error to 5.9 / 3.7.)"""
    start = with_cameras(truth, rotated(truth.extrinsics, 5.0, move=0.05, seed=seed))
    tracks = ModelTracks(projecting_tracker(truth), query_views=2, max_query_points=400)(start)
    assert tracks.count > 300 and tracks.visible.sum(axis=0).min() >= 1
    result = bundle_adjust(start, tracks, AdjustmentConfig(fix_intrinsics=True))
    assert result.report.views_adjusted == truth.num_views
    assert (mean_pose_errors(result.scene, truth) < 0.05 * mean_pose_errors(start, truth)).all()


# -- known intrinsics ---------------------------------------------------------------------
def test_given_intrinsics_are_used_and_reported(truth):
    true_photo = truth.intrinsics[0] * np.array([[2, 0, 2], [0, 2, 2], [0, 0, 1]])  # model -> photo pixels
    fx, fy, cx, cy = true_photo[0, 0], true_photo[1, 1], true_photo[0, 2] + 0.5, true_photo[1, 2] + 0.5
    wrong = replace(truth, intrinsics=truth.intrinsics * np.array([[1.2, 1, 1], [1, 1.2, 1], [1, 1, 1]], np.float32))
    known = KnownIntrinsics.parse(f"{fx},{fy},{cx},{cy}", [PHOTO_SIZE] * truth.num_views)
    fixed, report = apply_intrinsics(wrong, known)
    assert np.allclose(fixed.intrinsics, truth.intrinsics, atol=1e-3)
    assert np.allclose(fixed.points_from_depth, truth.points_from_depth, atol=1e-4)
    assert "+20.0 %" in report.summary()


def test_intrinsics_from_a_colmap_cameras_file(tmp_path, truth):
    write_colmap(truth, tmp_path / "colmap", max_points=50, conf_percentile=0)
    known = KnownIntrinsics.parse(str(tmp_path / "colmap" / "cameras.txt"), [PHOTO_SIZE] * truth.num_views)
    assert np.allclose(apply_intrinsics(truth, known)[0].intrinsics, truth.intrinsics, atol=1e-3)
    half = KnownIntrinsics.parse(str(tmp_path / "colmap" / "cameras.txt"), [(160, 160)] * truth.num_views)
    assert np.allclose(half.values, known.values / 2)  # a camera of twice the photo's size is rescaled


@pytest.mark.parametrize("text, message", [
    ("500,500,320", "4 numbers"),
    ("500,500,320,240;500,500,320,240", "2 sets of intrinsics for 4 photos"),
    ("-5,500,320,240", "must be positive"),
    ("a,b,c,d", "cannot read intrinsics"),
])
def test_bad_intrinsics_are_one_line(text, message):
    with pytest.raises(CameraInputError, match=message):
        KnownIntrinsics.parse(text, [PHOTO_SIZE] * 4)


def test_unparsable_cameras_file_is_one_line(tmp_path):
    (tmp_path / "cameras.txt").write_text("1 PINHOLE wide 480 500 500 320 240\n")
    with pytest.raises(CameraInputError, match="not a COLMAP cameras.txt"):
        KnownIntrinsics.parse(str(tmp_path / "cameras.txt"), [PHOTO_SIZE])
    with pytest.raises(CameraInputError, match="not found"):
        KnownIntrinsics.parse(str(tmp_path / "missing.txt"), [PHOTO_SIZE])


# -- known poses --------------------------------------------------------------------------
def user_frame(truth: Scene) -> tuple[float, np.ndarray, np.ndarray]:
    from scipy.spatial.transform import Rotation

    return 2.5, Rotation.from_euler("xyz", [30, -20, 75], degrees=True).as_matrix(), np.array([1.0, -2.0, 0.5])


def test_known_poses_from_json_align_the_scene(tmp_path, truth):
    """A reconstruction whose cameras are a little off (moved by 2 % of their spread) aligns to the given
    poses with a residual of that size; the truth aligns exactly."""
    scale, rotation, translation = user_frame(truth)
    given = transform_scene(truth, scale, rotation, translation).extrinsics
    (tmp_path / "poses.json").write_text(json.dumps({"extrinsics": given.tolist()}))
    near = with_cameras(truth, rotated(truth.extrinsics, 2.0, move=0.02))
    poses = read_poses(tmp_path / "poses.json", near)
    alignment = fit_pose_alignment(near, poses)
    assert alignment.scale == pytest.approx(scale, rel=0.05)
    assert alignment.centre_residual < 0.05 * alignment.spread and "RMS" in alignment.summary()
    exact = fit_pose_alignment(truth, poses)
    assert exact.centre_residual < 1e-4 and exact.rotation_residual < 0.05  # float32 cameras
    moved = transform_scene(truth, exact.scale, exact.rotation, exact.translation)
    assert np.allclose(moved.extrinsics, given, atol=1e-4)


def test_known_poses_from_a_colmap_model_and_bad_poses(tmp_path, truth):
    write_colmap(truth, tmp_path / "colmap", max_points=50, conf_percentile=0)
    shuffled = replace(truth, view_names=list(reversed(truth.view_names)))
    by_name = read_poses(tmp_path / "colmap" / "images.txt", shuffled)
    assert np.allclose(by_name, truth.extrinsics[::-1], atol=1e-5)  # matched by name, not order
    assert np.allclose(read_poses(tmp_path / "colmap" / "sparse" / "0", truth), truth.extrinsics, atol=1e-5)
    (tmp_path / "three.json").write_text(json.dumps(truth.extrinsics[:3].tolist()))
    with pytest.raises(CameraInputError, match="3 poses for 4 photos"):
        read_poses(tmp_path / "three.json", truth)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CameraInputError, match="not a JSON list"):
        read_poses(tmp_path / "broken.json", truth)
    (tmp_path / "images.txt").write_text("1 one two\n\n")
    with pytest.raises(CameraInputError, match="not a COLMAP images.txt"):
        read_poses(tmp_path / "images.txt", truth)


# -- metric scale -------------------------------------------------------------------------
def test_metric_scale_from_each_kind_of_length(truth):
    assert truth.units == "model units"
    centres = invert_extrinsics(truth.extrinsics.astype(np.float64))[:, :, 3]
    baseline = float(np.linalg.norm(centres[0] - centres[2]))
    metres = apply_metric_scale(truth, KnownLength.parse(f"cameras:0,2={2 * baseline}"))
    assert metres.units == "m"
    assert np.allclose(metres.depth, 2 * truth.depth, rtol=1e-5)
    assert np.allclose(metres.instances.info[0].size, 2 * np.array(truth.instances.info[0].size), rtol=1e-4)

    a, b = truth.points_from_depth[1, 40, 30], truth.points_from_depth[1, 120, 130]
    pixels = KnownLength.parse(f"pixels:1:{2 * 30 + 0.5},{2 * 40 + 0.5}:{2 * 130 + 0.5},{2 * 120 + 0.5}=3.0")
    by_pixels = apply_metric_scale(truth, pixels)
    assert np.linalg.norm(by_pixels.points_from_depth[1, 40, 30] - by_pixels.points_from_depth[1, 120, 130]) \
        == pytest.approx(3.0, rel=1e-4)
    assert np.linalg.norm(a - b) > 0

    height = apply_metric_scale(truth, KnownLength.parse("instance:0=1.5"))
    up = -height.extrinsics[:, 1, :3].mean(axis=0)
    points = height.points_from_depth[height.instances.mask(0) & (height.depth > 0)] @ (up / np.linalg.norm(up))
    assert np.subtract(*np.percentile(points, [98, 2])) == pytest.approx(1.5, rel=1e-3)


@pytest.mark.parametrize("text, message", [
    ("cameras:0,1=0", "must be positive"),
    ("pixels:0:10,10:10,10=1", "same pixel"),
    ("pixels:0:10,10:900,10=1", "outside view 0"),
    ("instance:99=1", "unknown instance 99"),
    ("cameras:1,1=2", "two different views"),
    ("metres=2", "cannot read the known length"),
])
def test_bad_known_lengths_are_one_line(truth, text, message):
    with pytest.raises(ScaleError, match=message):
        apply_metric_scale(truth, KnownLength.parse(text))


def test_units_reach_every_export(tmp_path, truth):
    metres = apply_metric_scale(truth, KnownLength.parse("cameras:0,1=1.0"))
    written = export_all(metres, tmp_path, formats=["json", "ply", "scene"])
    assert json.loads(written["json"].read_text())["units"] == "m"
    assert b"comment units: m" in written["ply"].read_bytes()[:300]
    assert Scene.load(written["scene"]).units == "m"
    assert Scene.load(export_all(truth, tmp_path / "plain", formats=["scene"])["scene"]).units == "model units"


def test_model_tracks_run_the_real_tracker():
    """`model_tracker` against the model's own ``query_points`` API (tiny random tracker): each query
    view's tracks start at its query pixels, whatever order the views are run in."""
    import torch

    from iggt.config import IGGTConfig
    from iggt.model.iggt import IGGT
    from iggt.sfm.tracks import model_tracker

    config = replace(IGGTConfig.from_preset("tiny"), track_head=True, track_features=16, track_hidden_size=32,
                     track_depth=1)
    torch.manual_seed(0)
    scene = oracle_scene(generate_scene(3, GeneratorConfig(num_views=2, image_size=(112, 112), object_count=(2, 3))))
    model = IGGT(config).eval()
    tracker = model_tracker(model)(scene)
    query = np.array([[20.0, 30.0], [80.0, 64.0], [50.0, 90.0]])
    xy, visibility, confidence = tracker(1, query)
    assert xy.shape == (2, 3, 2) and visibility.shape == confidence.shape == (2, 3)
    assert np.allclose(xy[1], query, atol=1.0)  # the query view: the tracker starts at the query pixels
    tracks = ModelTracks(model_tracker(model), query_views=2, max_query_points=16)(scene)
    assert tracks.count == 16 and tracks.visible[0, :8].all() and tracks.visible[1, 8:].all()
