"""``python -m iggt reconstruct PHOTOS_OR_VIDEO... --out DIR``: photos to 3D scene, instances and files.

    python -m iggt reconstruct shared/examples-real/kitchen --out outputs/kitchen
    python -m iggt reconstruct clip.mp4 --frames 12 --out outputs/clip --formats glb,json

Heavy modules (torch, the model) are imported only when the command runs, so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from iggt.instances import ClusteringConfig
from iggt.progress import Progress
from iggt.views import DEFAULT_MAX_VIEWS, DEFAULT_VIDEO_FRAMES

CLUSTERING_CHOICES = (*ClusteringConfig.PRESETS, "none")
# Shares of the progress bar taken by each stage.
RECONSTRUCTION_SHARE, CLUSTERING_SHARE = 0.6, 0.25


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` command."""
    parser = subparsers.add_parser(
        "reconstruct", help="photos or a video -> cameras, depth, point cloud, instances and export files",
        description="Reconstruct a scene from photos (files or folders) or a video: cameras, depth, "
                    "points and multi-view consistent instances, written as GLB, PLY, mask PNGs, JSON, "
                    "a COLMAP model and a reloadable scene.npz.")
    parser.add_argument("inputs", nargs="+", metavar="PHOTOS_OR_VIDEO",
                        help="photo files (jpg, png, webp, bmp, tiff, heic), folders of photos, or videos "
                             "(mp4, mov, webm, avi)")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the results into")
    parser.add_argument("--checkpoint", default=None,
                        help="model: a saved folder, a checkpoint file, a preset (random weights) or a Hub id "
                             "(default: the shipped small model in iggt/weights/iggt-small)")
    parser.add_argument("--device", default="auto",
                        help="auto (GPU when present; the default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="precision of the transformer; auto (default) = bf16 on recent GPUs, "
                             "fp16 on older ones, fp32 on CPU")
    parser.add_argument("--size", default=None,
                        help="model input size: a number (crop/pad: width or long side) or WIDTHxHEIGHT "
                             "(implies --mode resize); default: the model's training size")
    parser.add_argument("--mode", default="crop", choices=("crop", "pad", "resize"),
                        help="crop: fixed width, centre-crop tall photos; pad: fixed long side, white square; "
                             "resize: exactly --size (default: %(default)s)")
    parser.add_argument("--max-views", type=int, default=DEFAULT_MAX_VIEWS,
                        help="refuse more views than this (default: %(default)s)")
    video = parser.add_mutually_exclusive_group()
    video.add_argument("--every", type=int, default=None, help="video: take every k-th frame")
    video.add_argument("--frames", type=int, default=None,
                       help=f"video: take N evenly spaced frames (default {DEFAULT_VIDEO_FRAMES})")
    parser.add_argument("--background", default="white", choices=("white", "black"),
                        help="colour that transparent pixels are composited over (default: %(default)s)")
    parser.add_argument("--clustering", default="medium", choices=CLUSTERING_CHOICES,
                        help="instance clustering preset (the official demo's); none skips instances "
                             "(default: %(default)s)")
    parser.add_argument("--formats", default=None,
                        help="comma-separated outputs: glb, ply, masks, json, colmap, scene "
                             "(default: all; masks only with instances)")
    parser.add_argument("--conf-percentile", type=float, default=5.0,
                        help="GLB/PLY: drop points below this percentile of confidence "
                             "(50 drops half; default: %(default)s)")
    parser.add_argument("--geometry", default="depth", choices=("depth", "points"),
                        help="GLB/PLY points: depth unprojected with the cameras, or the point head "
                             "(default: %(default)s)")
    parser.set_defaults(func=run)


def _parse_formats(text: str | None, with_instances: bool) -> list[str]:
    from iggt.export import FORMATS
    from iggt.views import InputError

    if text is None:
        return [name for name in FORMATS if with_instances or name != "masks"]
    formats = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise InputError(f"unknown format(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(FORMATS)}")
    if "masks" in formats and not with_instances:
        raise InputError("masks need instances: drop masks from --formats or choose a --clustering preset")
    return formats


def _preprocess_options(args: argparse.Namespace) -> dict:
    """--size and --mode as keyword arguments of `Reconstructor`."""
    from iggt.views import InputError

    if args.size is None:
        if args.mode == "resize":
            raise InputError("--mode resize needs --size WIDTHxHEIGHT")
        return {"mode": args.mode}
    width, cross, height = args.size.lower().partition("x")
    try:
        width, height = int(width), int(height or width)
    except ValueError:
        raise InputError(f"--size must be a number or WIDTHxHEIGHT, not {args.size!r}") from None
    if cross or args.mode == "resize":
        return {"mode": "resize", "target_size": (width, height)}
    return {"mode": args.mode, "size": width}


def run(args: argparse.Namespace) -> int:
    """Run the command (errors are reported by `iggt.__main__`)."""
    from tqdm import tqdm

    from iggt.export import PointCloudOptions, export_all
    from iggt.instances import segment_instances
    from iggt.loading import load_model
    from iggt.reconstruct import Reconstructor, describe_model, resolve_checkpoint, resolve_device
    from iggt.structure import mark_structure
    from iggt.views import load_views

    formats = _parse_formats(args.formats, with_instances=args.clustering != "none")
    preprocess_options = _preprocess_options(args)
    device = resolve_device(args.device)
    views = load_views(args.inputs, max_views=args.max_views, every=args.every, frames=args.frames,
                       background=args.background)
    checkpoint = resolve_checkpoint(args.checkpoint)
    model = load_model(checkpoint)
    source = _display_path(Path(checkpoint)) if Path(checkpoint).exists() else str(checkpoint)
    reconstructor = Reconstructor(model, device, args.dtype, model_name=f"{describe_model(model)} from {source}",
                                  **preprocess_options)

    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}") as bar:
        def stage(start: float, share: float) -> Progress:
            """A progress callback that fills the bar from ``start`` over ``share`` of it."""
            def report(fraction: float, message: str) -> None:
                bar.set_description(message)
                bar.n = round(100 * (start + share * fraction))
                bar.refresh()
            return report

        scene = reconstructor(views, progress=stage(0.0, RECONSTRUCTION_SHARE))
        if args.clustering != "none":
            instances = segment_instances(scene, ClusteringConfig.from_preset(args.clustering),
                                          progress=stage(RECONSTRUCTION_SHARE, CLUSTERING_SHARE))
            scene = scene.with_instances(instances)
            scene = scene.with_instances(mark_structure(scene))  # floor, walls, large planes
        options = PointCloudOptions(conf_percentile=args.conf_percentile, geometry=args.geometry)
        written = export_all(scene, args.out, formats, options,
                             progress=stage(RECONSTRUCTION_SHARE + CLUSTERING_SHARE,
                                            1 - RECONSTRUCTION_SHARE - CLUSTERING_SHARE),
                             photos=[view.image for view in views])

    found = "instances not computed" if scene.instances is None else f"{scene.instances.count} instances"
    print(f"{scene.num_views} views at {scene.image_size[1]}x{scene.image_size[0]}, {found}, "
          f"model {scene.model_name}")
    for name, path in written.items():
        print(f"  {name:14s} {_display_path(path)}")
    return 0


def _display_path(path: Path) -> str:
    """Relative to the working folder when inside it (shorter, no machine-specific prefix)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.path.relpath(path)
