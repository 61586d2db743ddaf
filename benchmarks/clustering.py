"""Speed and agreement of our instance clustering against the official full HDBSCAN.

Builds a deterministic multi-view room scene by ray casting: a floor, walls, a ceiling and
24 boxes of very different sizes (a few hundred to 100k+ pixels), among them pairs of
"twins" (nearly the same feature, separate boxes in 3D) and a stack of boxes that touch but
have distinct features. Each instance has a unit 8-dim feature; pixels get Gaussian
feature noise and a share of them a random (outlier) feature.

Then, on the same ~200k-pixel scene (4 views of 224 x 224), it runs the released demo's method
at its HEAD, commit bec6604 (`OFFICIAL_METHOD`: the normalised features averaged over their 20
nearest 3D neighbours, HDBSCAN of every pixel with the "large" preset), its previous version
(`OFFICIAL_METHOD_52B129A`: unsmoothed, "medium") and ours with the "large" preset, and prints
times, speed-up and the adjusted Rand index (ARI) between the labels; finally it times our
whole instance step on 10 views of 518 x 392 (2 M pixels).

    python benchmarks/clustering.py            # several minutes on 2 cores (two full HDBSCANs)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iggt.instances import (OFFICIAL_METHOD, OFFICIAL_METHOD_52B129A, RELEASE_PRESET, ClusteringConfig,  # noqa: E402
                            segment_instances)
from iggt.scene import BACKGROUND, Scene  # noqa: E402

ROOM_HALF = 4.0
ROOM_HEIGHT = 3.0
FEATURE_DIM = 8


@dataclass
class Box:
    low: np.ndarray
    high: np.ndarray


@dataclass
class RoomSpec:
    """Instances of the room: index 0-4 floor, ceiling, walls (x, z); then the boxes."""

    boxes: list[Box]
    features: np.ndarray
    """``[instances, 8]`` unit features, indexed like the ids of the rendered label map."""
    twins: list[tuple[int, int]]


def make_room(seed: int = 0, box_count: int = 24) -> RoomSpec:
    """Boxes on the floor of a room (y up), sizes log-uniform, with twins and a touching stack."""
    rng = np.random.default_rng(seed)
    boxes: list[Box] = []
    while len(boxes) < box_count - 2:
        size = np.exp(rng.uniform(np.log(0.08), np.log(1.6), 3)) * [1, 0.8, 1]
        center = rng.uniform(-ROOM_HALF + 1, ROOM_HALF - 1, 2)
        low = np.array([center[0] - size[0] / 2, 0.0, center[1] - size[2] / 2])
        high = np.array([center[0] + size[0] / 2, size[1], center[1] + size[2] / 2])
        if all(np.any(low > b.high + 0.1) or np.any(high < b.low - 0.1) for b in boxes):
            boxes.append(Box(low, high))
    # Two boxes stacked on the first one: touching surfaces, distinct features.
    base = boxes[0]
    top1 = Box(np.array([base.low[0], base.high[1], base.low[2]]),
               np.array([(base.low[0] + base.high[0]) / 2, base.high[1] + 0.4, base.high[2]]))
    top2 = Box(np.array([top1.high[0], base.high[1], base.low[2]]),
               np.array([base.high[0], base.high[1] + 0.3, base.high[2]]))
    boxes += [top1, top2]
    count = 5 + len(boxes)
    features = rng.normal(size=(count, FEATURE_DIM))
    twins = [(5 + 1, 5 + 2), (5 + 3, 5 + 4), (5 + 5, 5 + 6)]
    for a, b in twins:  # nearly the same feature (distance 0.25 before normalising), apart in 3D
        direction = rng.normal(size=FEATURE_DIM)
        features[b] = features[a] / np.linalg.norm(features[a]) + 0.25 * direction / np.linalg.norm(direction)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return RoomSpec(boxes, features, twins)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera ``[3, 4]`` for a camera at ``eye`` looking at ``target`` (y up)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, -rotation @ eye[:, None]], axis=1)


def _ray_box(origin: np.ndarray, directions: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of an axis-aligned box (entry > exit: missed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = (box.low - origin) / directions
        t_high = (box.high - origin) / directions
    return np.minimum(t_low, t_high).max(axis=1), np.maximum(t_low, t_high).min(axis=1)


def render_scene(room: RoomSpec, views: int, height: int, width: int, seed: int = 0,
                 noise: float = 0.08, outlier_share: float = 0.03) -> tuple[Scene, np.ndarray]:
    """A `Scene` of the room seen by ``views`` cameras on a circle, and its ground-truth ids."""
    rng = np.random.default_rng(seed + 1)
    focal = 0.8 * width
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:height, 0:width]
    camera_rays = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u, float)], -1)
    camera_rays = camera_rays.reshape(-1, 3)
    room_box = Box(np.array([-ROOM_HALF, 0.0, -ROOM_HALF]), np.array([ROOM_HALF, ROOM_HEIGHT, ROOM_HALF]))
    extrinsics, depths, ids = [], [], []
    for s in range(views):
        angle = 2 * np.pi * s / views + 0.3
        eye = np.array([2.8 * np.cos(angle), 1.7, 2.8 * np.sin(angle)])
        target = np.array([-0.8 * np.cos(angle), 0.4, -0.8 * np.sin(angle)])
        extrinsic = look_at(eye, target)
        directions = camera_rays @ extrinsic[:, :3]  # rows: R^T ray, so depth = ray parameter
        _, depth = _ray_box(eye, directions, room_box)
        hit = eye + depth[:, None] * directions
        label = np.where(hit[:, 1] <= 1e-6, 0, np.where(hit[:, 1] >= ROOM_HEIGHT - 1e-6, 1,
                                                          np.where(np.abs(np.abs(hit[:, 0]) - ROOM_HALF) < 1e-6, 2, 3)))
        for index, box in enumerate(room.boxes):
            entry, leave = _ray_box(eye, directions, box)
            closer = (entry <= leave) & (entry > 0) & (entry < depth)
            depth = np.where(closer, entry, depth)
            label = np.where(closer, 5 + index, label)
        # Walls at +x and -x share a feature only if they are one instance: split them.
        label = np.where((label == 2) & (hit[:, 0] < 0), 4, label)
        extrinsics.append(extrinsic)
        depths.append(depth.reshape(height, width))
        ids.append(label.reshape(height, width))
    depth = np.stack(depths).astype(np.float32)
    ids = np.stack(ids)
    extrinsics = np.stack(extrinsics).astype(np.float32)
    intrinsics_all = np.repeat(intrinsics[None], views, axis=0)
    points = np.einsum("sij,shwj->shwi", extrinsics[:, :, :3].transpose(0, 2, 1),
                       (camera_rays.reshape(height, width, 3)[None] * depth[..., None])
                       - extrinsics[:, None, None, :, 3]).astype(np.float32)
    features = room.features[ids] + rng.normal(scale=noise, size=(*ids.shape, FEATURE_DIM))
    outliers = rng.random(ids.shape) < outlier_share
    features[outliers] = rng.normal(size=(int(outliers.sum()), FEATURE_DIM))
    features = (features / np.linalg.norm(features, axis=-1, keepdims=True)).astype(np.float32)
    palette = rng.uniform(0.2, 0.9, size=(len(room.features), 3))
    scene = Scene(images=palette[ids].astype(np.float32), extrinsics=extrinsics, intrinsics=intrinsics_all,
                  depth=depth, depth_conf=(1 + 5 / depth).astype(np.float32), world_points=points,
                  world_points_conf=np.ones_like(depth), points_from_depth=points, features=features)
    return scene, ids


@dataclass
class Timing:
    wall: float
    cpu: float
    """Process CPU time, all threads: robust to other jobs sharing the machine."""


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def ari(a: np.ndarray, b: np.ndarray) -> float:
    return float(adjusted_rand_score(a.reshape(-1), b.reshape(-1)))


def twins_split(labels: np.ndarray, truth: np.ndarray, twins: list[tuple[int, int]]) -> int:
    """How many twin pairs get different (majority) labels."""
    def majority(instance: int) -> int:
        return int(np.bincount(labels[(truth == instance) & (labels >= 0)]).argmax())
    return sum(majority(a) != majority(b) for a, b in twins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-full", action="store_true", help="skip the release's slow full HDBSCANs")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (cores: {os.cpu_count()})")

    room = make_room(args.seed)
    scene, truth = render_scene(room, views=4, height=224, width=224, seed=args.seed)
    sizes = np.bincount(truth.reshape(-1))
    print(f"scene: 4 views x 224 x 224 = {truth.size} pixels, {len(sizes)} instances, "
          f"sizes {sizes.min()} .. {sizes.max()} pixels, twins {room.twins}")

    def ours(**overrides) -> ClusteringConfig:
        """Our method with the release's preset; nothing dropped as background, like the release."""
        return ClusteringConfig.from_preset(RELEASE_PRESET, confidence_percentile=0.0, **overrides)

    methods = [(f"ours ({RELEASE_PRESET}: image smoothing, 10k sample)", ours()),
               ("ours with exact 3D k-NN smoothing", ours(smoothing="knn3d")),
               ("ours without smoothing", ours(smoothing="none")),
               ("ours, parts apart in 3D split (split_gap 0.02)", ours(split_gap=0.02))]
    if not args.skip_full:
        methods = [("release HEAD bec6604 (OFFICIAL_METHOD)", OFFICIAL_METHOD),
                   ("release 52b129a (OFFICIAL_METHOD_52B129A)", OFFICIAL_METHOD_52B129A)] + methods
    print(f"\n{'method (200k pixels)':<50}{'wall s':>8}{'cpu s':>8}{'speed-up wall/cpu':>19}"
          f"{'instances':>10}{'ARI vs HEAD':>12}{'ARI vs truth':>13}{'twins split':>12}")
    full = full_time = None
    for index, (name, config) in enumerate(methods):  # each row as soon as it is measured
        result, seconds = timed(segment_instances, scene, config)
        if index == 0 and not args.skip_full:
            full, full_time = result, seconds
        speedup = f"{full_time.wall / seconds.wall:.1f}x / {full_time.cpu / seconds.cpu:.1f}x" if full else "-"
        versus_full = f"{ari(result.labels, full.labels):.4f}" if full is not None else "-"
        print(f"{name:<50}{seconds.wall:>8.2f}{seconds.cpu:>8.2f}{speedup:>19}{result.count:>10}{versus_full:>12}"
              f"{ari(result.labels, truth):>13.4f}"
              f"{twins_split(result.labels, truth, room.twins):>10}/{len(room.twins)}", flush=True)

    big_scene, big_truth = render_scene(room, views=10, height=392, width=518, seed=args.seed)
    for smoothing in ("image", "knn3d"):
        stages: list[tuple[float, float, str]] = []
        wall, cpu = time.perf_counter(), time.process_time()
        config = ClusteringConfig.from_preset(RELEASE_PRESET, smoothing=smoothing)
        big, big_time = timed(segment_instances, big_scene, config,
                              progress=lambda fraction, message: stages.append(
                                  (time.perf_counter() - wall, time.process_time() - cpu, message)))
        foreground = big.labels != BACKGROUND
        print(f"\nwhole instance step, 10 views x 518 x 392 = {big_truth.size} pixels, preset {RELEASE_PRESET}, "
              f"smoothing {smoothing}: {big_time.wall:.2f} s wall, {big_time.cpu:.2f} s cpu, {big.count} instances, "
              f"ARI vs truth on confident pixels {ari(big.labels[foreground], big_truth[foreground]):.4f}")
        print("  stage starts (wall / cpu s):")
        for seconds, cpu_seconds, message in stages:
            print(f"    {seconds:6.2f} / {cpu_seconds:6.2f}  {message}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
