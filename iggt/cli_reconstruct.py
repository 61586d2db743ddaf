"""``python -m iggt reconstruct PHOTOS_OR_VIDEO... --out DIR``: photos to 3D scene, instances and files.

    python -m iggt reconstruct shared/examples-real/kitchen --out outputs/kitchen
    python -m iggt reconstruct clip.mp4 --frames 12 --out outputs/clip --formats glb,json

Heavy modules (torch, the model) are imported only when the command runs, so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from iggt.instances import RELEASE_PRESET, SHIPPED_MODEL_PRESET, ClusteringConfig
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
    parser.add_argument("--each-scene", action="store_true",
                        help="the inputs are folders of scenes: reconstruct each sub-folder (or video) into "
                             "OUT/<scene>/, skipping scenes already done; accelerate launch shares them over "
                             "processes (see docs/evaluation.md)")
    parser.add_argument("--checkpoint", default=None,
                        help="model: a saved folder, a checkpoint file, a preset (random weights) or a Hub id "
                             "(owner/name, or owner/name:file for one file of it; docs/cli.md) "
                             "(default: the shipped small model in iggt/weights/iggt-small)")
    parser.add_argument("--device", default="auto",
                        help="auto (GPU when present; the default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--merge-ratio", type=parse_merge_ratio, default=0.0,
                        help="merge this share of the tokens of views 2.. in global attention (faster for many "
                             "views, training-free; default 0: every token, as released)")
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
    parser.add_argument("--select", default="uniform", choices=("uniform", "change"),
                        help="video with more frames than --frames: take them evenly spaced in time (uniform), or "
                             "evenly spaced in image change, the sharpest of each stretch (change); the chosen "
                             "frame numbers are printed (default: %(default)s)")
    parser.add_argument("--background", default="white", choices=("white", "black"),
                        help="colour that transparent pixels are composited over (default: %(default)s)")
    parser.add_argument("--clustering", default=None, choices=CLUSTERING_CHOICES,
                        help="instance clustering preset (the official demo's); none skips instances "
                             f"(default: {SHIPPED_MODEL_PRESET} for the shipped small model, else {RELEASE_PRESET}, "
                             "the released demo's)")
    parser.add_argument("--formats", default=None,
                        help="comma-separated outputs: glb, ply, masks, json, colmap, scene "
                             "(default: all; masks only with instances)")
    parser.add_argument("--conf-percentile", type=float, default=5.0,
                        help="GLB/PLY: drop points below this percentile of confidence "
                             "(50 drops half; default: %(default)s)")
    parser.add_argument("--geometry", default="depth", choices=("depth", "points"),
                        help="GLB/PLY points: depth unprojected with the cameras, or the point head "
                             "(default: %(default)s)")
    _add_sfm_options(parser)
    parser.set_defaults(func=run)


def _add_sfm_options(parser: argparse.ArgumentParser) -> None:
    """Bundle adjustment, the user's own cameras and metric scale (`iggt.sfm`, docs/colmap.md)."""
    from iggt.sfm.colmap import CAMERA_MODELS

    group = parser.add_argument_group("bundle adjustment, known cameras and metric scale (docs/colmap.md)")
    group.add_argument("--ba", action="store_true",
                       help="refine the cameras by bundle adjustment over point tracks; the COLMAP export then "
                            "holds the adjusted model with its tracks")
    group.add_argument("--tracks", default="auto", choices=("auto", "model", "features"),
                       help="--ba tracks: the model's point tracker, or pycolmap SIFT features matched under the "
                            "predicted cameras; auto = the tracker when the checkpoint has one (default)")
    group.add_argument("--camera-model", default="PINHOLE", choices=CAMERA_MODELS,
                       help="COLMAP camera model of the export and of bundle adjustment (default: %(default)s)")
    group.add_argument("--shared-camera", action="store_true",
                       help="one camera for all photos (same size), as one phone at one zoom")
    group.add_argument("--max-reproj-error", type=float, default=32.0,
                       help="--ba: observations of the first triangulation kept up to this many model-input "
                            "pixels; loose, as the predicted cameras may be degrees off (default: %(default)s)")
    group.add_argument("--intrinsics", default=None,
                       help="known intrinsics in the photos' own pixels: fx,fy,cx,cy for all photos, one group "
                            "per photo separated by ';', or a COLMAP cameras.txt; used for the points, held "
                            "fixed by --ba, written to every export")
    group.add_argument("--poses", default=None, type=Path,
                       help="known camera poses (a COLMAP model folder or images.txt, or a JSON list of "
                            "world-to-camera matrices): the reconstruction is aligned to them")
    group.add_argument("--known-length", default=None, metavar="SPEC",
                       help="metric scale from one length in metres: pixels:VIEW:X1,Y1:X2,Y2=M (two photo "
                            "pixels), instance:ID=M (its height) or cameras:I,J=M (two camera centres); "
                            "without it sizes are in model units")


def parse_merge_ratio(text: str) -> float:
    """``--merge-ratio``: a share in [0, 1), else argparse's one-line usage error."""
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0 <= ratio < 1:
        raise argparse.ArgumentTypeError(f"a merge ratio is a share in [0, 1) such as 0.5, not {text!r}")
    return ratio


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
    from iggt.batch import reconstruct_each_scene
    from iggt.instances import default_preset
    from iggt.reconstruct import resolve_checkpoint

    args.clustering = args.clustering or default_preset(resolve_checkpoint(args.checkpoint))
    formats = _parse_formats(args.formats, with_instances=args.clustering != "none")
    reconstructor = _reconstructor(args)
    if args.each_scene:
        return reconstruct_each_scene(args, lambda inputs, out: reconstruct_and_export(args, reconstructor, formats,
                                                                                        inputs, out))
    reconstruct_and_export(args, reconstructor, formats, args.inputs, args.out)
    return 0


def _reconstructor(args: argparse.Namespace):
    from iggt.batch import processes
    from iggt.loading import load_model
    from iggt.model.token_merge import set_merge_ratio
    from iggt.reconstruct import Reconstructor, describe_model, resolve_checkpoint, resolve_device

    preprocess_options = _preprocess_options(args)
    device = resolve_device(processes().device if args.device == "auto" else args.device)
    checkpoint = resolve_checkpoint(args.checkpoint)
    model = load_model(checkpoint)
    set_merge_ratio(model, args.merge_ratio)
    hub_file = getattr(model.load_report, "hub_file", None)  # owner/name:file, the file a Hub id chose
    source = _display_path(Path(checkpoint)) if Path(checkpoint).exists() else str(hub_file or checkpoint)
    return Reconstructor(model, device, args.dtype, model_name=f"{describe_model(model)} from {source}",
                         **preprocess_options)


def reconstruct_and_export(args: argparse.Namespace, reconstructor, formats: list[str], inputs: list, out: Path) -> dict:
    """One scene from ``inputs`` to the files in ``out``; returns what was made (for ``--each-scene``'s summary)."""
    from tqdm import tqdm

    from iggt.export import PointCloudOptions, export_all
    from iggt.instances import segment_instances
    from iggt.sfm.colmap import CameraOptions
    from iggt.sfm.refine import Refined
    from iggt.structure import mark_structure
    from iggt.views import chosen_frames, load_views

    views = load_views(inputs, max_views=args.max_views, every=args.every, frames=args.frames,
                       background=args.background, selection=args.select)
    for video, frames in chosen_frames(views).items():
        print(f"{video}: frames {', '.join(map(str, frames))} ({args.select})")
    intrinsics, known_length = _known_camera_and_length(args, views)  # checked before the model runs
    cameras = CameraOptions(args.camera_model, args.shared_camera)
    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}") as bar:
        def stage(start: float, share: float) -> Progress:
            """A progress callback that fills the bar from ``start`` over ``share`` of it."""
            def report(fraction: float, message: str) -> None:
                bar.set_description(message)
                bar.n = round(100 * (start + share * fraction))
                bar.refresh()
            return report

        scene = reconstructor(views, progress=stage(0.0, RECONSTRUCTION_SHARE))
        refined = _refine(args, scene, reconstructor, intrinsics, cameras)
        scene = refined.scene
        if args.clustering != "none":
            instances = segment_instances(scene, ClusteringConfig.from_preset(args.clustering),
                                          progress=stage(RECONSTRUCTION_SHARE, CLUSTERING_SHARE))
            scene = scene.with_instances(instances)
            scene = scene.with_instances(mark_structure(scene))  # floor, walls, large planes
        if known_length is not None:
            refined = Refined(scene, refined.colmap_model, refined.notes).scaled(known_length)
            scene = refined.scene
        options = PointCloudOptions(conf_percentile=args.conf_percentile, geometry=args.geometry)
        written = export_all(scene, out, formats, options,
                             progress=stage(RECONSTRUCTION_SHARE + CLUSTERING_SHARE,
                                            1 - RECONSTRUCTION_SHARE - CLUSTERING_SHARE),
                             photos=[view.image for view in views], colmap_model=refined.colmap_model,
                             cameras=cameras)

    for note in refined.notes:
        print(note)
    found = "instances not computed" if scene.instances is None else f"{scene.instances.count} instances"
    print(f"{scene.num_views} views at {scene.image_size[1]}x{scene.image_size[0]}, {found}, "
          f"model {scene.model_name}")
    for name, path in written.items():
        print(f"  {name:14s} {_display_path(path)}")
    return {"views": scene.num_views, "video_frames": chosen_frames(views),
            "instances": None if scene.instances is None else scene.instances.count,
            "files": {name: str(Path(path).relative_to(out)) for name, path in written.items()}}


def _known_camera_and_length(args: argparse.Namespace, views: list):
    """--intrinsics and --known-length as `KnownIntrinsics` and `KnownLength` (None when not given)."""
    from iggt.sfm.cameras import KnownIntrinsics
    from iggt.sfm.scale import KnownLength

    intrinsics = None if args.intrinsics is None else KnownIntrinsics.parse(args.intrinsics,
                                                                            [v.original_size for v in views])
    return intrinsics, None if args.known_length is None else KnownLength.parse(args.known_length)


def _refine(args: argparse.Namespace, scene, reconstructor, intrinsics, cameras):
    """--intrinsics, --ba and --poses on the feed-forward scene (`iggt.sfm.refine`)."""
    from iggt.sfm.adjust import AdjustmentConfig
    from iggt.sfm.cameras import read_poses
    from iggt.sfm.refine import RefineOptions, refine

    options = RefineOptions(
        bundle_adjust=args.ba, tracks=args.tracks, intrinsics=intrinsics,
        poses=None if args.poses is None else read_poses(args.poses, scene),
        adjustment=AdjustmentConfig(cameras=cameras,
                                    max_reprojection_error=args.max_reproj_error))
    return refine(scene, options, reconstructor.model, reconstructor.device)


def _display_path(path: Path) -> str:
    """Relative to the working folder when inside it (shorter, no machine-specific prefix)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.path.relpath(path)
