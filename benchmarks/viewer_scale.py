"""Seconds the viser viewer (`python -m iggt view`) spends on big scenes: starting, and each control.

A hand-made scene of --views views at --width x --height (a bumpy wall seen by cameras along a
line, a grid of instances), so it has views x width x height points. Each figure is the median of
--repeats calls of the viewer's own handlers (what a change on the page runs), so it is the
server's work without browser or network time; the browser then draws one point cloud per view
(a few draw calls, however many points). The megabytes are what one full update sends: float16
positions and uint8 colours.

    python benchmarks/viewer_scale.py                     # 16 views of 518x392: 3.2 M points
    python benchmarks/viewer_scale.py --views 32          # 6.5 M points
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from iggt.geometry import unproject_depth  # noqa: E402
from iggt.instances import describe_instances  # noqa: E402
from iggt.scene import BACKGROUND, Scene  # noqa: E402
from iggt.viewer import SceneViewer, ViewerConfig  # noqa: E402

INSTANCE_TILE = 64
"""Instances are tiles of this many pixels, separated by unassigned stripes."""


def big_scene(views: int, width: int, height: int) -> Scene:
    """A bumpy wall at depth 4 seen by cameras stepping sideways; tiles of pixels are instances."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    depth = np.broadcast_to(4 + 0.3 * np.sin(cols / 40) * np.cos(rows / 30), (views, height, width)).astype(np.float32)
    extrinsics = np.zeros((views, 3, 4), np.float32)
    extrinsics[:, :, :3] = np.eye(3)
    extrinsics[:, 0, 3] = -0.1 * np.arange(views)
    focal = 0.9 * width
    intrinsics = np.tile(np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float32), (views, 1, 1))
    points = unproject_depth(depth, extrinsics, intrinsics).astype(np.float32)
    tiles = (rows // INSTANCE_TILE) * 100 + cols // INSTANCE_TILE
    gaps = (rows % INSTANCE_TILE < 8) | (cols % INSTANCE_TILE < 8)
    labels = np.broadcast_to(np.where(gaps, BACKGROUND, tiles), (views, height, width))
    images = rng.random((views, height, width, 3), dtype=np.float32)
    features = rng.normal(size=(views, height, width, 8)).astype(np.float32)
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    confidence = 1 + rng.random((views, height, width), dtype=np.float32)
    return Scene(images=images, extrinsics=extrinsics, intrinsics=intrinsics, depth=depth, depth_conf=confidence,
                 world_points=points, world_points_conf=confidence, points_from_depth=points, features=features,
                 model_name="benchmark wall", instances=describe_instances(labels, points, images))


def median_seconds(action: Callable[[int], None], repeats: int) -> float:
    """Median wall time of ``action(i)`` over ``repeats`` calls (i counts the calls)."""
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        action(index)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    scene = big_scene(args.views, args.width, args.height)
    start = time.perf_counter()
    viewer = SceneViewer(scene, ViewerConfig(port=0, max_points=None))
    started = time.perf_counter() - start
    try:
        sent = sum(node.points.nbytes + node.colors.nbytes for node in viewer.point_nodes)
        modes = ("RGB", "Feature PCA", "Instances")
        ids = [info.id for info in scene.instances.info]
        rows = [
            ("start (select points, send them in RGB)", started),
            ("first switch to feature PCA (made once)",
             median_seconds(lambda i: setattr(viewer.color_control, "value", "Feature PCA"), 1)),
            ("first switch to instance colours (made once)",
             median_seconds(lambda i: setattr(viewer.color_control, "value", "Instances"), 1)),
            ("colour mode", median_seconds(lambda i: setattr(viewer.color_control, "value", modes[i % 3]), args.repeats)),
            ("unassigned points hidden / shown",
             median_seconds(lambda i: setattr(viewer.background_control, "value", bool(i % 2)), args.repeats)),
            ("pick an instance", median_seconds(lambda i: viewer.pick(ids[i % len(ids)]), args.repeats)),
            ("frame hidden / shown",
             median_seconds(lambda i: setattr(viewer.frame_controls[0], "value", bool(i % 2)), args.repeats)),
            ("point size", median_seconds(lambda i: setattr(viewer.point_size_control, "value", 1.0 + i % 2),
                                          args.repeats)),
        ]
    finally:
        viewer.stop()
    print(f"{args.views} views of {args.width}x{args.height}: {len(viewer.cloud.points):,} points, "
          f"{scene.instances.count} instances, {sent / 1e6:.0f} MB per full update")
    print(f"{'server work':45s} {'seconds':>8s}")
    for name, seconds in rows:
        print(f"{name:45s} {seconds:8.3f}")


if __name__ == "__main__":
    main()
