"""``python -m iggt view SCENE.npz``: look at a reconstructed scene in viser, in the browser.

    python -m iggt reconstruct shared/examples-real/kitchen --out outputs/kitchen
    python -m iggt view outputs/kitchen            # the folder's scene.npz, or name the file
    python -m iggt view outputs/kitchen --host 0.0.0.0 --port 8081

viser and the scene are imported only when the command runs, so ``--help`` stays quick.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from iggt.errors import IGGTError

DEFAULT_PORT = 8080


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``view`` command."""
    parser = subparsers.add_parser(
        "view", help="look at a reconstructed scene (scene.npz) in viser: big scenes, frames, instances",
        description="Serve a scene written by `reconstruct` (its scene.npz, or the folder holding it) "
                    "to the browser with viser: colours by RGB, instance or feature PCA, point size, "
                    "camera frustums with their photos, frames toggled one by one, unassigned points "
                    "and structure hidden or shown, and an instance picker. Runs until Ctrl-C.")
    parser.add_argument("scene", type=Path, metavar="SCENE", help="a scene.npz, or a folder that holds one")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 serves other machines too (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="port; a busy one moves on to the next free one (default: %(default)s)")
    parser.add_argument("--max-points", type=int, default=None,
                        help="send at most this many points, a fixed random subset beyond "
                             "(default: the viewer's cap, iggt.viewer.MAX_POINTS = 4 million)")
    parser.add_argument("--conf-percentile", type=float, default=5.0,
                        help="drop points below this percentile of confidence (default: %(default)s)")
    parser.add_argument("--geometry", default="depth", choices=("depth", "points"),
                        help="depth unprojected with the cameras, or the point head (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the scene, serve it, wait for Ctrl-C."""
    from iggt.scene import Scene
    from iggt.viewer import MAX_POINTS, SceneViewer, ViewerConfig

    if importlib.util.find_spec("viser") is None:
        raise IGGTError("the viewer needs viser: pip install viser")

    path = args.scene / "scene.npz" if args.scene.is_dir() else args.scene
    max_points = MAX_POINTS if args.max_points is None else args.max_points
    if max_points < 1:
        raise IGGTError("--max-points must be at least 1")
    scene = Scene.load(path)
    config = ViewerConfig(host=args.host, port=args.port, geometry=args.geometry,
                          conf_percentile=args.conf_percentile, max_points=max_points)
    try:
        with SceneViewer(scene, config) as viewer:
            print(f"{path}: {scene.num_views} views, {len(viewer.cloud.points):,} points, "
                  f"{'no' if scene.instances is None else scene.instances.count} instances")
            if viewer.kept_count > len(viewer.cloud.points):
                print(f"thinned from {viewer.kept_count:,} points to at most {max_points:,} (--max-points)")
            print(f"viewer at {viewer.url}  (Ctrl-C to stop)", flush=True)
            viewer.server.sleep_forever()
    except KeyboardInterrupt:  # Ctrl-C is how the viewer ends
        pass
    return 0
