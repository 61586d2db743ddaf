"""Pose encodings, unprojection and alignment (iggt.geometry)."""
import math

import numpy as np
import pytest
import torch

from iggt.geometry import (
    extrinsics_intrinsics_to_pose_encoding,
    invert_extrinsics,
    median_scale,
    pose_encoding_to_extrinsics_intrinsics,
    project_points,
    quaternion_to_rotation,
    rotation_to_quaternion,
    umeyama_alignment,
    unproject_depth,
)


def random_rotations(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(count, 3, 3)))
    return q * np.sign(np.linalg.det(q))[:, None, None]


def test_quaternion_formula_matches_known_rotation():
    # 90 degrees about z: x axis -> y axis. Scalar-last (x, y, z, w).
    half = math.sqrt(0.5)
    rotation = quaternion_to_rotation(torch.tensor([0.0, 0.0, half, half]))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(rotation, expected, atol=1e-6, rtol=0)


def test_non_unit_quaternion_still_gives_a_rotation():
    quaternion = torch.randn(64, 4, generator=torch.Generator().manual_seed(1)) * 3
    rotation = quaternion_to_rotation(quaternion)
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), torch.eye(3).expand(64, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(64), atol=1e-5, rtol=0)
    # Scaling the quaternion does not change the rotation (the 2/|q|^2 factor).
    torch.testing.assert_close(quaternion_to_rotation(quaternion * 5), rotation, atol=1e-5, rtol=0)


def test_rotation_quaternion_round_trip_with_positive_w():
    rotations = torch.from_numpy(random_rotations(200)).float()
    # Include the hard cases: identity and 180-degree turns (w = 0).
    rotations = torch.cat((rotations, torch.eye(3)[None], torch.diag(torch.tensor([1.0, -1, -1]))[None]))
    quaternion = rotation_to_quaternion(rotations)
    assert (quaternion[:, 3] >= 0).all()
    torch.testing.assert_close(quaternion.norm(dim=-1), torch.ones(len(rotations)), atol=1e-5, rtol=0)
    torch.testing.assert_close(quaternion_to_rotation(quaternion), rotations, atol=1e-5, rtol=0)


def test_pose_encoding_round_trip_and_intrinsics():
    image_hw = (336, 504)
    rotations = torch.from_numpy(random_rotations(5, seed=3)).float()
    translations = torch.randn(5, 3, 1)
    extrinsics = torch.cat((rotations, translations), dim=-1)
    intrinsics = torch.tensor([[400.0, 0, 252], [0, 380.0, 168], [0, 0, 1]]).expand(5, 3, 3)
    encoding = extrinsics_intrinsics_to_pose_encoding(extrinsics, intrinsics, image_hw)
    assert encoding.shape == (5, 9)
    torch.testing.assert_close(encoding[:, 7], torch.full((5,), 2 * math.atan(168 / 380.0)))
    torch.testing.assert_close(encoding[:, 8], torch.full((5,), 2 * math.atan(252 / 400.0)))
    back_extrinsics, back_intrinsics = pose_encoding_to_extrinsics_intrinsics(encoding, image_hw)
    torch.testing.assert_close(back_extrinsics, extrinsics, atol=1e-5, rtol=0)
    torch.testing.assert_close(back_intrinsics, intrinsics, atol=1e-3, rtol=1e-5)


def test_pose_encoding_keeps_leading_dimensions():
    encoding = torch.cat((torch.randn(2, 3, 7), torch.full((2, 3, 2), 1.0)), dim=-1)
    extrinsics, intrinsics = pose_encoding_to_extrinsics_intrinsics(encoding, (28, 42))
    assert extrinsics.shape == (2, 3, 3, 4) and intrinsics.shape == (2, 3, 3, 3)
    with pytest.raises(ValueError, match="9 values"):
        pose_encoding_to_extrinsics_intrinsics(torch.zeros(2, 8), (28, 42))


def test_unproject_depth_recovers_points_seen_by_the_camera():
    rng = np.random.default_rng(0)
    views, height, width = 2, 6, 8
    rotations = random_rotations(views, seed=5)
    extrinsics = np.concatenate((rotations, rng.normal(size=(views, 3, 1))), axis=-1)
    intrinsics = np.array([[5.0, 0, width / 2], [0, 6.0, height / 2], [0, 0, 1]])[None].repeat(views, 0)
    depth = rng.uniform(1, 3, size=(views, height, width))
    world = unproject_depth(depth, extrinsics, intrinsics)
    assert world.shape == (views, height, width, 3) and world.dtype == np.float32
    # Project back: the camera-frame z is the depth and the pixel is the integer grid position.
    camera = np.einsum("sij,shwj->shwi", extrinsics[:, :, :3], world) + extrinsics[:, None, None, :, 3]
    np.testing.assert_allclose(camera[..., 2], depth, rtol=1e-5)
    pixels = np.einsum("sij,shwj->shwi", intrinsics, camera)
    u = pixels[..., 0] / pixels[..., 2]
    v = pixels[..., 1] / pixels[..., 2]
    np.testing.assert_allclose(u, np.broadcast_to(np.arange(width), (views, height, width)), atol=1e-4)
    np.testing.assert_allclose(v, np.broadcast_to(np.arange(height)[:, None], (views, height, width)), atol=1e-4)


def test_project_points_inverts_unproject_depth():
    """Every camera at once or one camera: the pixel grid and the depth come back; behind the camera, NaN."""
    rng = np.random.default_rng(1)
    views, height, width = 2, 6, 8
    extrinsics = np.concatenate((random_rotations(views, seed=3), rng.normal(size=(views, 3, 1))), axis=-1)
    intrinsics = np.array([[5.0, 0, width / 2], [0, 6.0, height / 2], [0, 0, 1]])[None].repeat(views, 0)
    depth = rng.uniform(1, 3, size=(views, height, width))
    world = unproject_depth(depth, extrinsics, intrinsics).reshape(views, -1, 3)
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).reshape(-1, 2)
    pixels, z = project_points(world[1], extrinsics, intrinsics)
    assert pixels.shape == (views, height * width, 2) and z.shape == (views, height * width)
    np.testing.assert_allclose(pixels[1], grid, atol=1e-4)
    np.testing.assert_allclose(z[1], depth[1].ravel(), rtol=1e-5)
    one, one_z = project_points(world[0], extrinsics[0], intrinsics[0])
    np.testing.assert_allclose(one, grid, atol=1e-4)
    assert one_z.shape == (height * width,)
    behind = invert_extrinsics(extrinsics[0])[:, 3] - 2 * invert_extrinsics(extrinsics[0])[:, 2]  # 2 units behind
    assert np.isnan(project_points(behind[None], extrinsics[0], intrinsics[0])[0]).all()


def test_invert_extrinsics_is_an_involution():
    extrinsics = np.concatenate((random_rotations(3, seed=7), np.ones((3, 3, 1))), axis=-1)
    np.testing.assert_allclose(invert_extrinsics(invert_extrinsics(extrinsics)), extrinsics, atol=1e-12)


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_a_similarity(with_scale):
    rng = np.random.default_rng(2)
    source = rng.normal(size=(50, 3))
    rotation = random_rotations(1, seed=9)[0]
    scale = 2.5 if with_scale else 1.0
    translation = np.array([1.0, -2.0, 0.5])
    target = scale * source @ rotation.T + translation
    got_scale, got_rotation, got_translation = umeyama_alignment(source, target, with_scale=with_scale)
    assert got_scale == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(got_rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(got_translation, translation, atol=1e-9)


def test_umeyama_rejects_bad_input():
    with pytest.raises(ValueError, match="equal size"):
        umeyama_alignment(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_alignment(np.zeros((2, 3)), np.zeros((2, 3)))


def test_median_scale():
    gt = np.array([[0.0, 2.0], [4.0, 6.0]])
    pred = np.array([[5.0, 1.0], [2.0, 3.0]])
    assert median_scale(pred, gt) == pytest.approx(4.0 / 2.0)  # the gt = 0 pixel is ignored
    valid = np.array([[False, True], [True, False]])
    assert median_scale(pred, gt, valid) == pytest.approx(3.0 / 1.5)
    with pytest.raises(ValueError, match="no valid"):
        median_scale(pred, np.zeros_like(gt))
