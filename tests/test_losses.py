"""Losses checked against values worked out by hand on tiny tensors."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from iggt.geometry import extrinsics_intrinsics_to_pose_encoding
from iggt.training.losses import (
    LossConfig,
    camera_loss,
    compute_losses,
    confidence_regression_loss,
    contrastive_instance_loss,
    instance_loss,
    normalise_ground_truth,
    sample_instance_pixels,
    with_structure_instances,
)
from iggt.errors import IGGTError


def test_camera_loss_weights_later_iterations_more():
    gt = torch.zeros(1, 2, 9)
    first = torch.full((1, 2, 9), 0.5)  # huber(0.5) = 0.5 * 0.5^2 = 0.125 per component
    last = torch.full((1, 2, 9), 2.0)  # huber(2.0) = 2.0 - 0.5 = 1.5 per component
    # per iteration: t + q + 0.5 * fov = 2.5 * per-component value; weights 0.6^1 and 0.6^0
    expected = (0.6 * 0.125 * 2.5 + 1.5 * 2.5) / 2
    assert camera_loss([first, last], gt, LossConfig()).item() == pytest.approx(expected)


def test_confidence_regression_by_hand():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2, 1)
    gt = torch.ones(1, 1, 2, 2, 1)
    confidence = torch.full((1, 1, 2, 2), math.e)  # log c = 1
    valid = torch.tensor([[True, True], [True, False]]).reshape(1, 1, 2, 2)
    # errors 0, 1, 2 on the valid pixels: (e * (0 + 1 + 2) - 3 * 0.2) / 3
    regression = (math.e * 3 - 0.6) / 3
    # one valid pair along x (error step 1) and one along y (error step 2)
    gradient = math.e * 1 + math.e * 2
    loss = confidence_regression_loss(pred, gt, confidence, valid, LossConfig())
    assert loss.item() == pytest.approx(regression + gradient, rel=1e-6)
    no_gradient = confidence_regression_loss(pred, gt, confidence, valid, LossConfig(gradient_weight=0.0))
    assert no_gradient.item() == pytest.approx(regression, rel=1e-6)


def test_contrastive_loss_two_and_three_instances_by_hand():
    # instance 1: (1, 0) and (0, 1) -> mean (0.5, 0.5), squared spread 0.5 each
    # instance 2: (-1, 0) twice (the first given unnormalised) -> spread 0
    # instance 3: (0, -1) once
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0], [-1.0, 0.0], [0.0, -1.0]]])
    labels = torch.tensor([[1, 1, 2, 2, 3]])
    config = LossConfig(push_margin=2.0)

    two = torch.tensor([[True, True, True, True, False]])
    pull, push = contrastive_instance_loss(features, labels, two, config)
    assert pull.item() == pytest.approx(0.5 / 2)
    assert push.item() == pytest.approx((2.0 - math.sqrt(2.5)) ** 2)

    pull, push = contrastive_instance_loss(features, labels, torch.ones_like(two), config)
    assert pull.item() == pytest.approx(0.5 / 3)
    # |mu1 - mu2| = |mu1 - mu3| = sqrt(2.5), |mu2 - mu3| = sqrt(2)
    expected_push = (2 * (2.0 - math.sqrt(2.5)) ** 2 + (2.0 - math.sqrt(2.0)) ** 2) / 3
    assert push.item() == pytest.approx(expected_push, rel=1e-6)

    # with the default margin 1 every pair is already far enough apart
    _, push = contrastive_instance_loss(features, labels, torch.ones_like(two), LossConfig())
    assert push.item() == 0.0


def test_contrastive_loss_single_instance_has_no_push_and_empty_scene_is_zero():
    features = torch.randn(2, 4, 8)
    labels = torch.ones(2, 4, dtype=torch.long)
    mask = torch.tensor([[True] * 4, [False] * 4])
    pull, push = contrastive_instance_loss(features, labels, mask, LossConfig())
    unit = F.normalize(features[0], dim=-1)
    assert pull.item() == pytest.approx(((unit - unit.mean(0)) ** 2).sum(-1).mean().item(), rel=1e-5)
    assert push.item() == 0.0


def test_one_gradient_step_pulls_instances_together_and_pushes_them_apart():
    torch.manual_seed(0)
    labels = torch.tensor([[1] * 6 + [2] * 6 + [3] * 6])
    base = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    features = (base + 0.3 * torch.randn(1, 18, 8)).requires_grad_(True)
    mask = torch.ones(1, 18, dtype=torch.bool)

    def distances(f: torch.Tensor) -> tuple[float, float]:
        """Mean distance within an instance, mean distance between instance centres."""
        unit = F.normalize(f[0], dim=-1)
        same = labels[0][:, None] == labels[0][None, :]
        centres = unit.reshape(3, 6, 8).mean(dim=1)
        between = torch.pdist(centres)
        return torch.cdist(unit, unit)[same].mean().item(), between.mean().item()

    config = LossConfig()
    before_same, before_other = distances(features.detach())
    pull, push = contrastive_instance_loss(features, labels, mask, config)
    (config.pull_weight * pull + config.push_weight * push).backward()
    with torch.no_grad():
        stepped = features - 0.5 * features.grad
    after_same, after_other = distances(stepped)
    assert after_same < before_same
    assert after_other > before_other


def test_pixel_sampling_respects_validity_background_and_seed():
    ids = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    ids[:, :, :2] = 1
    ids[:, 1, 3, 3] = 2
    valid = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    valid[:, 0, 0, 0] = False
    generator = torch.Generator().manual_seed(3)
    indices, mask = sample_instance_pixels(ids, valid, 16, "ignore", generator)
    assert indices.shape == (1, 2, 16)
    assert mask[0, 0].sum() == 7 and mask[0, 1].sum() == 9  # 8 - 1 invalid; 8 + the id-2 pixel
    sampled_ids = torch.gather(ids.flatten(2), 2, indices)
    assert (sampled_ids[mask] > 0).all()
    assert 0 not in indices[0, 0][mask[0, 0]].tolist()  # the invalid pixel is never drawn
    again, _ = sample_instance_pixels(ids, valid, 16, "ignore", torch.Generator().manual_seed(3))
    assert torch.equal(indices[mask], again[mask])
    _, with_background = sample_instance_pixels(ids, valid, 5, "instance")
    assert with_background.all()


def test_structure_surfaces_become_instances_of_their_own():
    ids = torch.tensor([[[[0, 0, 3], [0, 1, 0]]]])
    structure = torch.tensor([[[[0, 1, 0], [2, 0, 1]]]])  # sky, floor, object; wall, object, floor
    assert with_structure_instances(ids, structure).tolist() == [[[[0, 4, 3], [5, 1, 4]]]]


def test_structure_background_pushes_floor_from_wall_by_hand():
    """An object (one-hot feature e0) on a floor and a wall that share the feature e1: as one
    background instance nothing is left to learn; as floor and wall instances their equal
    means cost the push term 2 of the 6 ordered pairs x (margin - 0)^2 = 1/3."""
    ids = torch.zeros(1, 1, 2, 4, dtype=torch.long)
    ids[..., 0, :2] = 1
    structure = torch.tensor([[[[0, 0, 1, 1], [2, 2, 0, 0]]]])  # last two pixels: sky, no surface
    valid = torch.ones_like(ids, dtype=torch.bool)
    features = torch.zeros(1, 1, 8, 2, 4)
    features[:, :, 0][ids == 1] = 1.0
    features[:, :, 1][ids == 0] = 1.0
    config = LossConfig(pixels_per_view=8)
    assert [float(t) for t in instance_loss(features, ids, valid, config)] == [0.0, 0.0]
    structured = LossConfig(pixels_per_view=8, background="structure")
    pull, push = instance_loss(features, ids, valid, structured, structure_ids=structure)
    assert float(pull) == 0.0 and float(push) == pytest.approx(1 / 3)
    with pytest.raises(IGGTError, match="structure ids"):
        instance_loss(features, ids, valid, structured)


def test_balanced_sampling_gives_small_instances_their_share():
    """A 4-pixel object beside 1020 background pixels: uniform sampling of 64 pixels finds it
    about 0.25 times a view, balanced sampling about half of the 64 times."""
    ids = torch.zeros(1, 50, 32, 32, dtype=torch.long)
    ids[:, :, 10:12, 10:12] = 1
    valid = torch.ones_like(ids, dtype=torch.bool)

    def object_share(sampling: str) -> float:
        indices, mask = sample_instance_pixels(ids, valid, 64, "instance", torch.Generator().manual_seed(0), sampling)
        assert mask.all() and all(len(set(view.tolist())) == 64 for view in indices[0])  # distinct pixels
        return (torch.gather(ids.flatten(2), 2, indices) == 1).float().sum().item() / (50 * 64)

    assert object_share("uniform") < 0.02
    assert object_share("balanced") == pytest.approx(4 / 64, abs=1e-9)  # all 4 object pixels in every view
    invalid = valid.clone()
    invalid[:, :, 10, 10] = False
    indices, mask = sample_instance_pixels(ids, invalid, 64, "instance", torch.Generator().manual_seed(0), "balanced")
    assert 10 * 32 + 10 not in indices[mask].tolist()


def _scene_batch(scale: float = 3.0) -> dict[str, torch.Tensor]:
    """Two views of a 4x6 image; world points are a plane at depth 1..2 times ``scale``."""
    torch.manual_seed(1)
    views, height, width = 2, 4, 6
    depth = scale * (1 + torch.rand(1, views, height, width))
    intrinsics = torch.tensor([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]]).expand(1, views, 3, 3).clone()
    extrinsics = torch.zeros(1, views, 3, 4)
    extrinsics[..., :3, :3] = torch.eye(3)
    extrinsics[0, 1, :, 3] = torch.tensor([0.5, 0.0, 0.0]) * scale
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    camera = torch.stack(((u - 3) / 5 * depth, (v - 2) / 5 * depth, depth), dim=-1)
    world = camera - extrinsics[..., None, None, :, 3]
    ids = torch.zeros(1, views, height, width, dtype=torch.long)
    ids[..., :2, :3] = 1
    ids[..., 2:, 3:] = 2
    return {"images": torch.rand(1, views, 3, height, width), "depth": depth, "valid": depth > 0,
            "extrinsics": extrinsics, "intrinsics": intrinsics, "world_points": world, "instance_ids": ids}


def _perfect_predictions(batch: dict[str, torch.Tensor]) -> SimpleNamespace:
    gt = normalise_ground_truth(batch)
    pose_enc = extrinsics_intrinsics_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (4, 6))
    features = F.one_hot(batch["instance_ids"], 8).permute(0, 1, 4, 2, 3).float()
    ones = torch.ones_like(gt["depth"])
    return SimpleNamespace(pose_enc_list=[pose_enc, pose_enc], depth=gt["depth"][..., None], depth_conf=ones,
                           world_points=gt["world_points"], world_points_conf=ones, instance_features=features)


def test_normalisation_uses_mean_distance_to_first_camera():
    batch = _scene_batch(scale=3.0)
    gt = normalise_ground_truth(batch)
    assert gt["world_points"].norm(dim=-1).mean().item() == pytest.approx(1.0, rel=1e-5)
    assert gt["scale"].item() == pytest.approx(batch["world_points"].norm(dim=-1).mean().item(), rel=1e-5)
    assert torch.allclose(gt["extrinsics"][..., 3] * gt["scale"], batch["extrinsics"][..., 3])
    assert torch.allclose(gt["depth"] * gt["scale"], batch["depth"])


def test_perfect_predictions_cost_nothing_and_errors_cost_something():
    batch = _scene_batch()
    predictions = _perfect_predictions(batch)
    losses = compute_losses(predictions, batch, LossConfig(), torch.Generator().manual_seed(0))
    assert set(losses) == {"camera", "depth", "points", "pull", "push", "instance", "total"}
    for name, value in losses.items():
        assert value.item() == pytest.approx(0.0, abs=1e-5), name

    predictions.depth = predictions.depth * 1.1
    predictions.pose_enc_list = [p + 0.1 for p in predictions.pose_enc_list]
    predictions.instance_features = torch.ones_like(predictions.instance_features)
    worse = compute_losses(predictions, batch, LossConfig())
    assert worse["depth"] > 0 and worse["camera"] > 0 and worse["push"] > 0
    assert worse["points"].item() == pytest.approx(0.0, abs=1e-5)
    weights = LossConfig()
    expected = worse["camera"] + worse["depth"] + worse["points"] + worse["instance"]
    assert worse["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert worse["instance"].item() == pytest.approx(
        (weights.pull_weight * worse["pull"] + weights.push_weight * worse["push"]).item())


def test_loss_config_rejects_bad_values():
    with pytest.raises(ValueError, match="background"):
        LossConfig(background="sky")
    with pytest.raises(ValueError, match="sampling"):
        LossConfig(sampling="stratified")
    with pytest.raises(ValueError, match="pixels_per_view"):
        LossConfig(pixels_per_view=1)
