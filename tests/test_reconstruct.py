"""Reconstructor: photos -> Scene with the tiny model (random weights, so only shapes and invariants)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iggt.config import IGGTConfig
from iggt.geometry import unproject_depth
from iggt.loading import save_model
from iggt.model.iggt import IGGT
from iggt.reconstruct import DEFAULT_CHECKPOINT, Reconstructor, reconstruct, resolve_device, resolve_dtype
from iggt.scene import Scene


@pytest.fixture(scope="module")
def tiny_model() -> IGGT:
    torch.manual_seed(0)
    return IGGT(IGGTConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height) in enumerate([(80, 60), (80, 60), (60, 80)]):
        paths.append(folder / f"view{index}.png")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def scene_and_progress(tiny_model, photos) -> tuple[Scene, list]:
    steps = []
    scene = Reconstructor(tiny_model, size=56, grid_multiple=1)(photos, progress=lambda f, m: steps.append((f, m)))
    return scene, steps


def test_scene_has_the_contract_shapes_and_dtypes(scene_and_progress):
    scene, _ = scene_and_progress
    views, height, width = 3, 56, 56  # 4:3 photos -> 56 x 42, a portrait one -> 56 x 56 (cropped), padded to 56
    assert scene.images.shape == (views, height, width, 3)
    assert scene.extrinsics.shape == (views, 3, 4) and scene.intrinsics.shape == (views, 3, 3)
    assert scene.depth.shape == scene.depth_conf.shape == scene.world_points_conf.shape == (views, height, width)
    assert scene.world_points.shape == scene.points_from_depth.shape == (views, height, width, 3)
    assert scene.features.shape == (views, height, width, 8)
    for name in Scene._ARRAYS:
        assert getattr(scene, name).dtype == np.float32, name
    assert np.allclose(np.linalg.norm(scene.features, axis=-1), 1, atol=1e-4)
    assert (scene.depth > 0).all() and (scene.depth_conf >= 1).all()
    assert scene.view_names == ["view0.png", "view1.png", "view2.png"]
    assert scene.view_transforms[0].original_size == (60, 80) and scene.view_transforms[0].offset == (7, 0)
    assert scene.model_name.startswith("IGGT tiny")
    assert scene.instances is None


def test_the_default_input_of_the_released_size_is_the_demos_even_grid(tiny_model, tmp_path):
    """518 (the 1B model's size) gives 504 x 336 for a 3:2 photo, as the released demo's input."""
    photo = tmp_path / "wide.png"
    Image.fromarray(np.full((400, 600, 3), 128, np.uint8)).save(photo)
    scene = Reconstructor(tiny_model, size=518)([photo])
    assert scene.images.shape[1:3] == (336, 504)


def test_points_from_depth_use_the_predicted_cameras(scene_and_progress):
    scene, _ = scene_and_progress
    expected = unproject_depth(scene.depth, scene.extrinsics, scene.intrinsics)
    assert np.allclose(scene.points_from_depth, expected, atol=1e-5)


def test_progress_reports_every_stage_in_order(scene_and_progress):
    _, steps = scene_and_progress
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("running the model on 3 views" in message for _, message in steps)


def test_scene_survives_save_and_load(scene_and_progress, tmp_path):
    scene, _ = scene_and_progress
    loaded = Scene.load(scene.save(tmp_path / "scene.npz"))
    # scene.npz holds the compact scene (float16 features, uint8 images): exactly `Scene.compact`'s arrays
    assert np.array_equal(loaded.features, scene.compact().features) and np.array_equal(loaded.extrinsics, scene.extrinsics)
    assert loaded.view_transforms == scene.view_transforms and loaded.view_names == scene.view_names


def test_tensor_input_and_even_grids(tiny_model):
    scene = Reconstructor(tiny_model)(torch.rand(2, 3, 28, 42))
    assert scene.images.shape == (2, 28, 42, 3) and scene.view_names == ["view_000", "view_001"]
    with pytest.raises(ValueError, match=r"\[S, 3, H, W\]"):
        Reconstructor(tiny_model)(torch.rand(3, 28, 42))


def test_dtype_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_device("cpu") == cpu and resolve_dtype("auto", cpu) == torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", cpu)


def test_reduced_precision_keeps_fp32_outputs(tiny_model):
    """bf16 autocast covers the aggregator only: the heads (and so the Scene) stay fp32."""
    scene = Reconstructor(tiny_model, dtype="bf16")(torch.rand(2, 3, 28, 28))
    assert scene.depth.dtype == np.float32 and np.isfinite(scene.depth).all()


def test_reconstruct_loads_a_saved_checkpoint(tiny_model, photos, tmp_path):
    save_model(tiny_model, tmp_path / "tiny")
    scene = reconstruct(photos[:2], tmp_path / "tiny", size=28)
    assert scene.num_views == 2 and "tiny" in scene.model_name
    if not DEFAULT_CHECKPOINT.exists():  # until the small model is trained and shipped
        with pytest.raises(FileNotFoundError, match=r"shipped small model \(iggt/weights/iggt-small\) is missing"):
            reconstruct(photos[:2])


def test_the_model_name_says_when_the_tracker_differs_from_the_preset():
    """A 1B model loaded without its tracker is still the iggt-1b preset (not "custom"), and says so."""
    from dataclasses import replace
    from types import SimpleNamespace

    from iggt.config import PRESETS
    from iggt.reconstruct import describe_model

    def named(config: IGGTConfig) -> str:
        return describe_model(SimpleNamespace(config=config, parameters=lambda: iter([torch.zeros(10**6)])))

    assert named(PRESETS["iggt-1b"]) == "IGGT iggt-1b (1.0 M parameters)"
    assert named(replace(PRESETS["iggt-1b"], track_head=False)) == "IGGT iggt-1b (1.0 M parameters, without point tracker)"
    assert named(replace(PRESETS["tiny"], track_head=not PRESETS["tiny"].track_head)).startswith("IGGT tiny (")
    assert named(replace(PRESETS["tiny"], embed_dim=PRESETS["tiny"].embed_dim * 2)).startswith("IGGT custom")
