"""Training losses of IGGT: VGGT's geometry losses plus the multi-view contrastive instance loss.

The total is ``w_cam * L_camera + w_depth * L_depth + w_points * L_points + w_inst * L_instance``.

Scale. A scene's ground truth is normalised as VGGT does: every length (depth, world points,
camera translations) is divided by the mean distance of the valid ground-truth world points
to the first camera (the world origin). The network's predictions are *not* rescaled: the
model learns to predict directly in that normalised frame, and evaluation removes the
remaining scale ambiguity with a median scale.

A batch is a mapping with (B = scenes, S = views):

* ``images`` ``[B, S, 3, H, W]`` float in [0, 1] (the model input, unused here);
* ``depth`` ``[B, S, H, W]`` float, metric; ``valid`` ``[B, S, H, W]`` bool (pixels with a surface);
* ``extrinsics`` ``[B, S, 3, 4]`` OpenCV world-to-camera with world = first view;
* ``intrinsics`` ``[B, S, 3, 3]``;
* ``world_points`` ``[B, S, H, W, 3]`` in the first camera's frame;
* ``instance_ids`` ``[B, S, H, W]`` int, 0 = background, 1..K objects, consistent over views;
* ``structure_ids`` ``[B, S, H, W]`` int, optional: room surfaces of the background (floor 1,
  walls, ceiling; see `iggt.data.scene_format.STRUCTURE_IDS`), 0 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from iggt.errors import IGGTError
from iggt.geometry import extrinsics_intrinsics_to_pose_encoding

if TYPE_CHECKING:
    from iggt.model.iggt import Predictions


@dataclass
class LossConfig:
    """Weights and constants of the losses (defaults: VGGT and the IGGT paper)."""

    camera_weight: float = 1.0
    depth_weight: float = 1.0
    points_weight: float = 1.0
    instance_weight: float = 1.0

    camera_gamma: float = 0.6
    """Iteration i of n gets weight gamma^(n-1-i): the last refinement counts most."""
    camera_huber_delta: float = 1.0
    translation_weight: float = 1.0
    rotation_weight: float = 1.0
    fov_weight: float = 0.5

    confidence_alpha: float = 0.2
    """Weight of the ``-alpha * log(conf)`` term that keeps confidences from collapsing to 1."""
    gradient_weight: float = 1.0
    """Weight of the finite-difference (gradient) term of the depth and point losses."""

    pull_weight: float = 2.0
    push_weight: float = 1.0
    push_margin: float = 1.0
    pixels_per_view: int = 512
    """Pixels sampled per view for the contrastive loss."""
    sampling: Literal["uniform", "balanced"] = "uniform"
    """``uniform``: every eligible pixel equally likely, so the background and large objects
    take most samples; ``balanced``: every instance of a view gets about the same number of
    samples, so small objects, the ones that are hardest to separate, are not starved."""
    background: Literal["instance", "structure", "ignore"] = "instance"
    """``instance``: background pixels (id 0) form one more instance that is pulled together and
    pushed away from the objects, so clustering finds it as one cluster; ``structure``: each room
    surface of the batch's ``structure_ids`` (floor, each wall, ceiling) is an instance of its own
    and background pixels without one are not sampled, so objects are not pulled towards one
    huge, varied "room" instance; ``ignore``: background pixels are not sampled at all."""

    def __post_init__(self) -> None:
        if self.background not in ("instance", "structure", "ignore"):
            raise IGGTError(f"loss background must be 'instance', 'structure' or 'ignore', got {self.background!r}")
        if self.sampling not in ("uniform", "balanced"):
            raise IGGTError(f"loss sampling must be 'uniform' or 'balanced', got {self.sampling!r}")
        if self.pixels_per_view < 2:
            raise IGGTError(f"loss pixels_per_view must be at least 2, got {self.pixels_per_view}")
        if self.push_margin <= 0:
            raise IGGTError(f"loss push_margin must be positive, got {self.push_margin}")


# --------------------------------------------------------------------------- normalisation


def scene_scale(world_points: Tensor, valid: Tensor) -> Tensor:
    """``[B]`` mean distance of the valid ground-truth points to the first camera."""
    distance = world_points.norm(dim=-1) * valid
    count = valid.flatten(1).sum(dim=1).clamp(min=1)
    return (distance.flatten(1).sum(dim=1) / count).clamp(min=1e-6)


def normalise_ground_truth(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Ground-truth depth, points and translations divided by `scene_scale` (see module doc)."""
    valid = batch["valid"].bool()
    scale = scene_scale(batch["world_points"].float(), valid)
    extrinsics = batch["extrinsics"].float().clone()
    extrinsics[..., 3] = extrinsics[..., 3] / scale[:, None, None]
    return {
        "valid": valid,
        "depth": batch["depth"].float() / scale[:, None, None, None],
        "world_points": batch["world_points"].float() / scale[:, None, None, None, None],
        "extrinsics": extrinsics,
        "intrinsics": batch["intrinsics"].float(),
        "scale": scale,
    }


# --------------------------------------------------------------------------- camera


def camera_loss(pose_enc_list: list[Tensor], gt_pose_enc: Tensor, config: LossConfig) -> Tensor:
    """Huber loss on the pose encodings of every refinement iteration, later ones weighted more.

    Per iteration: ``w_t * huber(t) + w_r * huber(q) + w_f * huber(fov)``, each averaged over
    cameras and components; iteration i of n is weighted ``gamma^(n-1-i)`` and the weighted
    sum is divided by n.
    """
    groups = ((slice(0, 3), config.translation_weight), (slice(3, 7), config.rotation_weight),
              (slice(7, 9), config.fov_weight))
    count = len(pose_enc_list)
    total = gt_pose_enc.new_zeros(())
    for i, pose_enc in enumerate(pose_enc_list):
        iteration = sum(
            weight * F.huber_loss(pose_enc[..., part].float(), gt_pose_enc[..., part], delta=config.camera_huber_delta)
            for part, weight in groups
        )
        total = total + config.camera_gamma ** (count - 1 - i) * iteration
    return total / count


# --------------------------------------------------------------------------- depth and points


def confidence_regression_loss(
    pred: Tensor, gt: Tensor, confidence: Tensor, valid: Tensor, config: LossConfig
) -> Tensor:
    """VGGT's confidence-aware regression of a dense map ``[B, S, H, W, C]``.

    With ``e = pred - gt`` and ``c`` the confidence (>= 1) over the V valid pixels:
    ``1/V * sum_valid (c * |e| - alpha * log c)`` plus ``gradient_weight`` times the same
    confidence-weighted L2 norm of the finite differences of ``e`` along x and y, averaged
    over the neighbour pairs whose two pixels are valid (``c`` of the first pixel of a pair).
    ``|e|`` is the Euclidean norm over the C channels.
    """
    valid = valid.bool()
    count = valid.sum().clamp(min=1)
    error = pred.float() - gt
    confidence = confidence.float()
    regression = (confidence * error.norm(dim=-1) - config.confidence_alpha * torch.log(confidence))
    loss = (regression * valid).sum() / count
    if config.gradient_weight:
        for axis in (2, 3):
            length = error.shape[axis] - 1
            step = error.narrow(axis, 1, length) - error.narrow(axis, 0, length)
            pairs = valid.narrow(axis, 1, length) & valid.narrow(axis, 0, length)
            weighted = confidence.narrow(axis, 0, length) * step.norm(dim=-1) * pairs
            loss = loss + config.gradient_weight * weighted.sum() / pairs.sum().clamp(min=1)
    return loss


# --------------------------------------------------------------------------- instances


def sample_instance_pixels(
    instance_ids: Tensor, valid: Tensor, pixels_per_view: int, background: str, generator: torch.Generator | None = None,
    sampling: str = "uniform",
) -> tuple[Tensor, Tensor]:
    """Up to ``pixels_per_view`` random distinct eligible pixels of each view.

    Eligible: valid, and (unless ``background == "instance"``) not background. With
    ``sampling == "balanced"`` a pixel's chance is inversely proportional to its instance's area in the view
    (weighted sampling without replacement: the top keys ``u ** area`` for uniform ``u``), so
    each instance gets about the same number of samples. Returns flat pixel indices
    ``[B, S, n]`` into ``H*W`` and a mask ``[B, S, n]`` of the samples that exist (a view
    with fewer eligible pixels gets fewer).
    """
    eligible = valid.bool()
    if background == "ignore":
        eligible = eligible & (instance_ids > 0)
    eligible = eligible.flatten(2)
    count = min(pixels_per_view, eligible.shape[-1])
    device = generator.device if generator is not None else eligible.device
    uniform = torch.rand(eligible.shape, generator=generator, device=device).to(eligible.device)
    if sampling == "balanced":
        ids = instance_ids.flatten(2).long().clamp(min=0)
        areas = torch.zeros(*ids.shape[:2], int(ids.max()) + 1, device=ids.device)
        areas.scatter_add_(2, ids, eligible.float())
        scores = torch.log(uniform.clamp(min=1e-12)) * torch.gather(areas, 2, ids)  # log of u ** area, <= 0
    else:
        scores = uniform
    scores = torch.where(eligible, scores, torch.full_like(scores, -torch.inf))
    top_scores, indices = scores.topk(count, dim=-1)
    return indices, top_scores > -torch.inf


def contrastive_instance_loss(
    features: Tensor, labels: Tensor, mask: Tensor, config: LossConfig
) -> tuple[Tensor, Tensor]:
    """Multi-view contrastive loss on sampled pixels; returns ``(L_pull, L_push)``.

    ``features`` ``[B, N, D]`` (L2-normalised here), ``labels`` ``[B, N]`` 3D instance ids
    (the same id in every view), ``mask`` ``[B, N]`` the samples to use. For each scene b
    with instances I_b, mu_i = mean feature of the samples of instance i (over all views):

    * ``L_pull = mean_b mean_{i in I_b} mean_{p in i} ||f_p - mu_i||^2``
    * ``L_push = mean_b mean_{i != j in I_b} max(0, M - ||mu_i - mu_j||)^2``

    Scenes without any sample are skipped; a scene with one instance has no push term.
    """
    features = F.normalize(features.float(), dim=-1)
    pulls, pushes = [], []
    for scene_features, scene_labels, scene_mask in zip(features, labels, mask):
        scene_features, scene_labels = scene_features[scene_mask], scene_labels[scene_mask]
        if scene_labels.numel() == 0:
            continue
        ids, inverse = torch.unique(scene_labels, return_inverse=True)
        one_hot = F.one_hot(inverse, len(ids)).to(scene_features.dtype)  # [N, K]
        counts = one_hot.sum(dim=0)
        means = one_hot.T @ scene_features / counts[:, None]  # [K, D]
        spread = ((scene_features - means[inverse]) ** 2).sum(dim=-1)
        pulls.append(((one_hot.T @ spread) / counts).mean())
        if len(ids) > 1:
            distance = torch.cdist(means, means)
            off_diagonal = ~torch.eye(len(ids), dtype=torch.bool, device=means.device)
            pushes.append((F.relu(config.push_margin - distance[off_diagonal]) ** 2).mean())
    zero = features.new_zeros(()) + 0.0 * features.sum()
    pull = torch.stack(pulls).mean() if pulls else zero
    push = torch.stack(pushes).mean() if pushes else zero
    return pull, push


def with_structure_instances(instance_ids: Tensor, structure_ids: Tensor) -> Tensor:
    """Instance ids where each room surface of the background is one more instance.

    Surface s becomes id ``K + s`` (K = the batch's largest object id), the same in every view
    like the object ids; background pixels without a surface (the sky) stay 0.
    """
    offset = instance_ids.max().clamp(min=0)
    return torch.where(instance_ids > 0, instance_ids, torch.where(structure_ids > 0, offset + structure_ids, 0))


def instance_loss(
    instance_features: Tensor, instance_ids: Tensor, valid: Tensor, config: LossConfig,
    generator: torch.Generator | None = None, structure_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample pixels of every view and apply `contrastive_instance_loss` over the views.

    ``instance_features`` is the model's raw ``[B, S, D, H, W]``; ``structure_ids`` are needed
    with ``config.background == "structure"``.
    """
    batch, views, dim = instance_features.shape[:3]
    background = config.background
    if background == "structure":
        if structure_ids is None:
            raise IGGTError("loss background 'structure' needs structure ids in the batch "
                            "(scene records with a structure/ map, e.g. from `python -m iggt generate`)")
        instance_ids, background = with_structure_instances(instance_ids, structure_ids), "ignore"
    indices, mask = sample_instance_pixels(instance_ids, valid, config.pixels_per_view, background, generator,
                                           config.sampling)
    flat_features = instance_features.flatten(3)  # [B, S, D, H*W]
    sampled = torch.gather(flat_features, 3, indices[:, :, None, :].expand(-1, -1, dim, -1))
    sampled = sampled.permute(0, 1, 3, 2).reshape(batch, -1, dim)
    labels = torch.gather(instance_ids.flatten(2).long(), 2, indices).reshape(batch, -1)
    return contrastive_instance_loss(sampled, labels, mask.reshape(batch, -1), config)


# --------------------------------------------------------------------------- total


def compute_losses(
    predictions: Predictions, batch: Mapping[str, Tensor], config: LossConfig | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """All loss terms of one batch and their weighted ``total``.

    ``generator`` drives the pixel sampling of the instance loss (pass one to make training
    reproducible).
    """
    config = config or LossConfig()
    gt = normalise_ground_truth(batch)
    image_size = tuple(gt["depth"].shape[-2:])
    gt_pose_enc = extrinsics_intrinsics_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], image_size)
    losses = {
        "camera": camera_loss(list(predictions.pose_enc_list), gt_pose_enc, config),
        "depth": confidence_regression_loss(
            predictions.depth, gt["depth"][..., None], predictions.depth_conf, gt["valid"], config),
        "points": confidence_regression_loss(
            predictions.world_points, gt["world_points"], predictions.world_points_conf, gt["valid"], config),
    }
    losses["pull"], losses["push"] = instance_loss(
        predictions.instance_features, batch["instance_ids"], gt["valid"], config, generator, batch.get("structure_ids"))
    losses["instance"] = config.pull_weight * losses["pull"] + config.push_weight * losses["push"]
    losses["total"] = (config.camera_weight * losses["camera"] + config.depth_weight * losses["depth"]
                       + config.points_weight * losses["points"] + config.instance_weight * losses["instance"])
    return losses
