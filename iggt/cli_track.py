"""``python -m iggt track PHOTOS... --checkpoint CKPT --out tracks.json``: where points of one photo lie in the others.

    python -m iggt track photos/ --checkpoint IGGT_official.pth --points 256 --out tracks.json
    python -m iggt track a.jpg b.jpg c.jpg --checkpoint IGGT_official.pth --query 120,80 --query 300,210 \\
        --query-view 1 --out tracks.npz

Needs a checkpoint with the point tracker (the released IGGT, or VGGT-1B); the shipped small
model has none and says so. Query points and results are pixels (x, y) of the original photos;
``.npz`` output also keeps the model-input pixels. Heavy modules are imported only when it runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from iggt.views import DEFAULT_MAX_VIEWS

OUTPUT_SUFFIXES = (".json", ".npz")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``track`` command."""
    parser = subparsers.add_parser(
        "track", help="follow points of one photo through the others (the released model's point tracker)",
        description="Track points across photos with the checkpoint's point tracker: a grid of --points "
                    "points or the given --query pixels of the --query-view photo, with each point's "
                    "position, visibility and confidence in every photo.")
    parser.add_argument("inputs", nargs="+", metavar="PHOTOS", help="photo files or folders of photos")
    parser.add_argument("--out", required=True, type=Path, help="tracks.json or tracks.npz")
    parser.add_argument("--checkpoint", default=None,
                        help="a model with a point tracker: the released checkpoint file, a saved folder or a Hub id "
                             "(default: the shipped small model, which has none)")
    queries = parser.add_mutually_exclusive_group()
    queries.add_argument("--points", type=int, default=256,
                         help="track about this many points on a regular grid of the query photo (default: %(default)s)")
    queries.add_argument("--query", action="append", default=None, metavar="X,Y",
                         help="a pixel of the query photo to track (repeatable)")
    parser.add_argument("--query-view", type=int, default=0, help="index of the query photo (default: 0)")
    parser.add_argument("--size", type=int, default=None,
                        help="model input width (default: the model's training size)")
    parser.add_argument("--max-views", type=int, default=DEFAULT_MAX_VIEWS,
                        help="refuse more photos than this (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present; the default), cpu, cuda, ...")
    parser.add_argument("--memory-mb", type=float, default=None,
                        help="working memory of one tracker pass; more points are tracked in chunks (default 512)")
    parser.set_defaults(func=run)


def _parse_queries(texts: list[str]):
    import numpy as np

    from iggt.views import InputError

    points = []
    for text in texts:
        try:
            x, y = (float(value) for value in text.split(","))
        except ValueError:
            raise InputError(f"--query takes a pixel as X,Y (e.g. 120,80), not {text!r}") from None
        points.append((x, y))
    return np.array(points, np.float32)


def run(args: argparse.Namespace) -> int:
    """Run the command (errors are reported by `iggt.__main__`)."""
    import numpy as np

    from iggt.loading import load_model
    from iggt.reconstruct import describe_model, resolve_checkpoint
    from iggt.tracks import DEFAULT_MEMORY_MB, SceneTracker, grid_query_points
    from iggt.views import InputError, load_views, preprocess

    if args.out.suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"--out must end in {' or '.join(OUTPUT_SUFFIXES)}, not {args.out.name!r}")
    model = load_model(resolve_checkpoint(args.checkpoint))
    model.require_tracker()
    views = load_views(args.inputs, max_views=args.max_views)
    images, transforms, names = preprocess(views, "crop", args.size or model.config.img_size,
                                           patch_size=model.config.patch_size, grid_multiple=2)
    if not 0 <= args.query_view < len(names):
        raise InputError(f"--query-view {args.query_view} does not exist: there are photos 0..{len(names) - 1}")
    query_transform = transforms[args.query_view]
    if args.query:
        photo_xy = _parse_queries(args.query)
        y, x = query_transform.from_original(photo_xy[:, 1], photo_xy[:, 0])
        model_xy = np.stack([x, y], axis=1).astype(np.float32)
    else:
        model_xy = grid_query_points(tuple(images.shape[-2:]), args.points)
    tracker = SceneTracker(model, images, device=args.device, memory_mb=args.memory_mb or DEFAULT_MEMORY_MB)
    tracks = tracker.track(model_xy, args.query_view)
    photo_points = np.empty_like(tracks.points)
    for view, transform in enumerate(transforms):
        y, x = transform.to_original(tracks.points[view, :, 1], tracks.points[view, :, 0])
        photo_points[view] = np.stack([x, y], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".npz":
        np.savez_compressed(args.out, points=photo_points, points_model_input=tracks.points,
                            visibility=tracks.visibility, confidence=tracks.confidence,
                            query_view=args.query_view, views=np.array(names))
    else:
        record = {
            "model": describe_model(model), "views": names, "query_view": args.query_view,
            "coordinates": "pixels (x, y) of the original photos",
            "tracks": [
                [{"xy": [round(float(v), 2) for v in photo_points[view, point]],
                  "visibility": round(float(tracks.visibility[view, point]), 4),
                  "confidence": round(float(tracks.confidence[view, point]), 4)} for view in range(len(names))]
                for point in range(photo_points.shape[1])
            ],
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{photo_points.shape[1]} points tracked through {len(names)} photos -> {args.out}")
    return 0
