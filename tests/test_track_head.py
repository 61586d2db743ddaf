"""The point tracker on a tiny model: API, the release's conventions, small views, loading, the scene helper, the CLI.

Agreement with the release itself (the 1B shapes, seeded weights) is `test_release_parity.py`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iggt.__main__ import main
from iggt.checkpoints import read_config
from iggt.config import IGGTConfig
from iggt.errors import IGGTError
from iggt.loading import NO_TRACKER_NOTE, load_checkpoint_file, load_model, save_model
from iggt.model.iggt import IGGT
from iggt.model.track_modules.correlation import CorrelationPyramid, pool_by_two
from iggt.tracks import SceneTracker, grid_query_points, track_points

pytestmark = pytest.mark.usefixtures("single_thread")

TRACKING_TINY = IGGTConfig.from_preset("tiny").replace(
    track_head=True, track_features=16, track_hidden_size=32, track_depth=1, track_iterations=3)
"""The tiny preset with a small tracker of the release's structure (7 correlation levels, radius 4)."""
IMAGE_HW = (28, 42)
"""Far below the 128 px at which the release's 7-level pyramid fails."""


@pytest.fixture(scope="module")
def model() -> IGGT:
    torch.manual_seed(0)
    return IGGT(TRACKING_TINY).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, *IMAGE_HW, generator=torch.Generator().manual_seed(1))


QUERIES = torch.tensor([[3.0, 4.0], [20.5, 10.0], [40.0, 26.0], [0.0, 0.0]])


def test_forward_with_query_points_returns_tracks_visibility_and_confidence(model, images):
    with torch.no_grad():
        predictions = model(images, query_points=QUERIES)
    tracks = predictions.tracks
    assert len(tracks.iterations) == TRACKING_TINY.track_iterations
    assert tracks.points.shape == (1, 3, 4, 2) and tracks.visibility.shape == tracks.confidence.shape == (1, 3, 4)
    for step in tracks.iterations:  # view 0 holds the queries themselves after every refinement
        torch.testing.assert_close(step[0, 0], QUERIES, atol=1e-5, rtol=0)
    assert torch.isfinite(tracks.points).all()
    assert ((tracks.visibility > 0) & (tracks.visibility < 1)).all() and ((tracks.confidence > 0) & (tracks.confidence < 1)).all()
    assert predictions.depth.shape == (1, 3, *IMAGE_HW, 1)  # the rest of the forward is unchanged


def test_forward_without_queries_has_no_tracks(model, images):
    with torch.no_grad():
        assert model(images).tracks is None


def test_tracking_alone_gives_the_forwards_tracks(model, images):
    """`track_feature_maps` + `track_head.track` (what the golden test and `iggt.tracks` use) is the forward's path."""
    with torch.no_grad():
        full = model(images, query_points=QUERIES).tracks
        maps = model.track_feature_maps(images)
        alone = model.track_head.track(maps, QUERIES[None])
    assert maps.shape == (1, 3, TRACKING_TINY.track_features, IMAGE_HW[0] // 2, IMAGE_HW[1] // 2)
    for a, b in zip(full.iterations, alone.iterations):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(full.visibility, alone.visibility)


@pytest.mark.parametrize("bad", [torch.zeros(4, 3), torch.zeros(2, 4, 2), torch.zeros(0, 2), torch.zeros(4, 2, dtype=torch.long)])
def test_bad_query_points_are_one_clear_error(model, images, bad):
    with pytest.raises(IGGTError, match="query_points"):
        model(images, query_points=bad)


def test_presets_without_a_tracker_say_so():
    assert IGGTConfig.from_preset("iggt-1b").track_head
    assert not IGGTConfig.from_preset("small").track_head and not IGGTConfig.from_preset("tiny").track_head
    tiny = IGGT(IGGTConfig.from_preset("tiny")).eval()
    assert tiny.track_head is None
    with pytest.raises(IGGTError, match="no point tracker"):
        tiny(torch.rand(2, 3, 28, 28), query_points=QUERIES)


# ----------------------------------------------------------------------------- the release's conventions


def test_the_pyramid_pools_as_the_release_where_the_release_runs_and_keeps_single_cells():
    maps = torch.rand(2, 5, 8, 6)
    torch.testing.assert_close(pool_by_two(maps), F.avg_pool2d(maps, 2, 2), atol=0, rtol=0)
    thin = torch.rand(2, 5, 1, 6)  # the release's 2x2 pooling would give an empty map here
    torch.testing.assert_close(pool_by_two(thin), F.avg_pool2d(thin, (1, 2), (1, 2)), atol=0, rtol=0)
    pyramid = CorrelationPyramid(torch.rand(1, 2, 4, 14, 21), levels=7, radius=4)
    assert [level.shape[-2:] for level in pyramid.levels] == [
        (14, 21), (7, 10), (3, 5), (1, 2), (1, 1), (1, 1), (1, 1)]


def test_correlation_window_offsets_x_along_its_first_axis():
    """The release reads window cell (a, b) at (x + a - r, y + b - r): x-major, unlike a row-major image patch."""
    channels, radius = 4, 4
    maps = torch.zeros(1, 1, channels, 20, 20)
    feature = torch.tensor([1.0, 2.0, 0.0, 0.0])
    x, y, dx, dy = 9, 8, 3, -2
    maps[0, 0, :, y + dy, x + dx] = feature
    pyramid = CorrelationPyramid(maps, levels=1, radius=radius)
    read = pyramid.sample(feature.view(1, 1, 1, channels), torch.tensor([[[[float(x), float(y)]]]]))
    window = read.view(2 * radius + 1, 2 * radius + 1)
    peak = divmod(int(window.argmax()), 2 * radius + 1)
    assert peak == (dx + radius, dy + radius)
    assert float(window.max()) == pytest.approx(float(feature @ feature) / channels**0.5)


# ----------------------------------------------------------------------------- checkpoints


def test_a_saved_tracker_loads_back_with_the_same_tracks(model, images, tmp_path):
    save_model(model, tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert loaded.track_head is not None and not loaded.load_report.skipped
    with torch.no_grad():
        a = model(images, query_points=QUERIES).tracks.points
        b = loaded(images, query_points=QUERIES).tracks.points
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_model_without_tracker_skips_track_head_and_its_report_says_so(tmp_path):
    tiny = IGGT(IGGTConfig.from_preset("tiny"))
    state = dict(tiny.state_dict(), **{"track_head.tracker.query_ref_token": torch.zeros(1, 2, 388)})
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(tiny.config.to_json())
    _, report = load_checkpoint_file(tmp_path / "model.pt")
    assert report.skipped == ["track_head.tracker.query_ref_token"]
    assert NO_TRACKER_NOTE in report.summary()


def test_a_file_without_tracker_weights_gives_a_model_without_tracker(model, tmp_path):
    state = {name: value for name, value in model.state_dict().items() if not name.startswith("track_head.")}
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(model.config.to_json())
    loaded, report = load_checkpoint_file(tmp_path / "model.pt")
    assert loaded.track_head is None and report.problems() == [] and NO_TRACKER_NOTE in report.summary()


def test_a_config_saved_before_the_tracker_existed_has_none(tmp_path):
    values = IGGTConfig.from_preset("small").to_dict()
    del values["track_head"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert read_config(tmp_path / "config.json").track_head is False


# ----------------------------------------------------------------------------- the scene helper


def test_scene_tracker_from_any_view_equals_the_forward_on_reordered_views(model, images):
    """Tracking from view 2 is the forward with view 2 first, put back in scene order."""
    queries = QUERIES.numpy()
    tracks = SceneTracker(model, images, device="cpu").track(queries, query_view=2)
    order = [2, 0, 1]
    with torch.no_grad():
        reference = model(images[order], query_points=QUERIES).tracks
    back = np.argsort(order)
    np.testing.assert_allclose(tracks.points, reference.points[0].numpy()[back], atol=1e-5)
    np.testing.assert_allclose(tracks.visibility, reference.visibility[0].numpy()[back], atol=1e-6)
    np.testing.assert_allclose(tracks.points[2], queries, atol=1e-5)
    assert tracks.query_view == 2 and tracks.reliable(0.0, 0.0).all()


def test_scene_tracker_chunks_points_to_its_memory_budget(model, images):
    """With a budget of one point per pass, each point is tracked alone (the tracker's own result for it)."""
    tracker = SceneTracker(model, images, device="cpu", memory_mb=1e-3)
    assert tracker.chunk_size() == 1
    chunked = tracker.track(QUERIES.numpy())
    with torch.no_grad():
        maps = model.track_feature_maps(images)
        alone = [model.track_head.track(maps, QUERIES[i:i + 1][None]).points[0, :, 0] for i in range(len(QUERIES))]
    np.testing.assert_allclose(chunked.points, torch.stack(alone, dim=1).numpy(), atol=1e-5)
    assert SceneTracker(model, images, device="cpu").chunk_size() > len(QUERIES)


def test_scene_tracker_reads_uint8_images_as_the_same_colours(model, images):
    """A compact scene keeps its images as uint8: the tracker sees them in [0, 1] as the float ones."""
    as_uint8 = np.round(images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    as_float = as_uint8.astype(np.float32) / 255
    tracked = [SceneTracker(model, views, device="cpu").track(QUERIES.numpy()).points for views in (as_uint8, as_float)]
    np.testing.assert_allclose(*tracked, atol=1e-6)


def test_scene_helper_bad_input_is_one_clear_error(model, images):
    with pytest.raises(IGGTError, match="query view 3 does not exist"):
        track_points(model, images, QUERIES.numpy(), query_view=3, device="cpu")
    with pytest.raises(IGGTError, match=r"\[N, 2\]"):
        track_points(model, images, np.zeros((3, 3)), device="cpu")
    with pytest.raises(IGGTError, match="no point tracker"):
        SceneTracker(IGGT(IGGTConfig.from_preset("tiny")), images, device="cpu")


def test_grid_query_points_cover_the_image():
    points = grid_query_points((224, 336), 4096)
    assert abs(len(points) - 4096) < 0.05 * 4096
    assert (points[:, 0] > 0).all() and (points[:, 0] < 336).all() and (points[:, 1] < 224).all()


# ----------------------------------------------------------------------------- the command line


def test_track_command_writes_tracks_in_photo_pixels(model, tmp_path, capsys):
    from helpers import write_synthetic_photos

    photos = write_synthetic_photos(tmp_path / "photos", views=2, size=84)
    save_model(model, tmp_path / "tracker")
    out = tmp_path / "tracks.json"
    code = main(["track", *map(str, photos), "--checkpoint", str(tmp_path / "tracker"), "--size", "56",
                 "--query", "10,20", "--query", "50.5,30", "--out", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    assert len(record["tracks"]) == 2 and len(record["tracks"][0]) == 2
    assert record["tracks"][0][0]["xy"] == pytest.approx([10, 20], abs=0.05)  # the query photo holds the query
    assert record["tracks"][1][0]["xy"] == pytest.approx([50.5, 30], abs=0.05)


def test_track_command_refuses_a_model_without_tracker(tiny_checkpoint, tmp_path, capsys):
    from helpers import write_synthetic_photos

    photos = write_synthetic_photos(tmp_path / "photos", views=2, size=56)
    code = main(["track", *map(str, photos), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "t.json")])
    assert code == 2 and "no point tracker" in capsys.readouterr().err
