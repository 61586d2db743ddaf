"""Token merging in global attention against dense attention: time, peak memory and accuracy.

    python benchmarks/token_merge.py                                   # 32 and 128 views, ratios 0 / 0.5 / 0.75
    python benchmarks/token_merge.py --views 32 128 512 --size 112     # more views at a smaller size
    python benchmarks/token_merge.py --cameras-only --checkpoint iggt-1b --views 100 300 1000 \
        --ratios 0 0.8 --height 392 --width 518 --device cuda --dense-max-views 300   # the GPU rows

``--cameras-only`` (the GPU rows of benchmarks/gpu_check.py, and the moonshot: 1000 views of
518 x 392 through the 1B model) times what grows with the square of the views, the aggregator
and the camera head, in one process on random images, and compares every camera's rotation with
the dense run's at the same views; where the dense run was skipped (more than
``--dense-max-views``), with the dense run at the largest view count that ran, on those first views.
The model's weights are the checkpoint's (a preset name: random weights, so only time, memory
and the deviation caused by merging mean anything).

One generated scene per view count (``iggt.data.synthetic``, seed 7000 + views, no shadows so
generation stays quick) goes through `iggt.evaluation.evaluate.evaluate_record` (the model
only, no baselines) once per merge ratio, each case in its own subprocess so that the peak
memory (max RSS on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU) is that case's
alone. Printed per case: the model's wall and CPU seconds (reconstruction, i.e. preprocessing +
forward + conversion; the speed-up is from the CPU seconds, steadier on a shared machine), the peak memory, depth AbsRel (per view, median-scaled), the pose accuracy against
the ground truth (RRA@5 and AUC@30 over all view pairs), the mean rotation error of every camera
against the dense run's (degrees), and the instance T-SR. Ratio 0 is the dense model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from model_forward import peak_rss_gb, run_worker  # noqa: E402  (this script's folder is on sys.path)


def peak_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1024**3
    return peak_rss_gb()


def worker(args: argparse.Namespace) -> None:
    """One case: print one JSON line."""
    import numpy as np
    import torch

    from iggt.data.synthetic import GeneratorConfig, generate_scene
    from iggt.evaluation.evaluate import evaluate_record
    from iggt.instances import ClusteringConfig
    from iggt.loading import load_model
    from iggt.model.token_merge import set_merge_ratio
    from iggt.reconstruct import Reconstructor

    record = generate_scene(7000 + args.views, GeneratorConfig(num_views=args.views, image_size=(args.size, args.size),
                                                               shadows=False))
    model = load_model(args.checkpoint)
    set_merge_ratio(model, args.ratio)
    reconstructor = Reconstructor(model, device=args.device, dtype=args.dtype, max_views=None, size=args.size)
    rotations, cpu_seconds = [], []

    def keep_rotations(views):  # the cameras, to compare with the dense run's; the CPU time (steadier than wall)
        start = time.process_time()
        scene = reconstructor(views)
        cpu_seconds.append(time.process_time() - start)
        rotations.append(scene.extrinsics[:, :3, :3].astype(np.float64))
        return scene

    before = peak_memory_gb(args.device)
    start = time.perf_counter()
    result, _ = evaluate_record(record, keep_rotations, ClusteringConfig.from_preset("medium"), with_baselines=False)
    np.save(args.rotations_out, rotations[0])
    print(json.dumps({"views": args.views, "ratio": args.ratio, "seconds": result.seconds["reconstruct"],
                      "cpu_seconds": cpu_seconds[0],
                      "evaluate_s": time.perf_counter() - start, "peak_gb": peak_memory_gb(args.device),
                      "before_gb": before, "abs_rel": result.geometry.get("abs_rel_view"),
                      "rra5": result.geometry.get("rra@5"), "auc30": result.geometry.get("auc@30"),
                      "t_sr": result.methods["iggt"]["t_sr"], "threads": torch.get_num_threads()}))


def cameras_only(args: argparse.Namespace) -> None:
    """The GPU rows: aggregator + camera head per views and ratio, one JSON line each."""
    import contextlib

    import torch

    from iggt.geometry import quaternion_to_rotation
    from iggt.loading import load_model
    from iggt.model.token_merge import set_merge_ratio
    from iggt.reconstruct import resolve_dtype

    device = torch.device(args.device)
    model = load_model(args.checkpoint).to(device).eval()
    dtype = resolve_dtype(args.dtype, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    dense: dict[int, torch.Tensor] = {}
    for views in args.views:
        images = torch.rand(views, 3, args.height, args.width, generator=torch.Generator().manual_seed(0)).to(device)
        for ratio in args.ratios:
            if ratio == 0 and views > args.dense_max_views:
                continue
            set_merge_ratio(model, ratio)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with torch.inference_mode(), autocast:
                tokens = model.aggregator(images[None], layers=(model.config.depth - 1,))
                pose_enc = model.camera_head({k: v.float() for k, v in tokens.items()}[model.config.depth - 1])[-1]
                rotations = quaternion_to_rotation(pose_enc[0, :, 3:7].double().cpu())
            seconds = time.perf_counter() - start
            if ratio == 0:
                dense[views] = rotations
            reference_views = views if views in dense else max((v for v in dense if v <= views), default=None)
            versus = None
            if reference_views is not None:
                versus = rotation_error_deg(rotations[:reference_views].numpy(), dense[reference_views].numpy())
            print(json.dumps({"views": views, "ratio": ratio, "height": args.height, "width": args.width,
                              "seconds": seconds, "peak_gb": peak_memory_gb(args.device), "dtype": str(dtype),
                              "rotation_vs_dense_deg": versus, "dense_views": reference_views}), flush=True)
            del tokens


def rotation_error_deg(a, b) -> float:
    """Mean angle between the rotations of two runs' cameras (degrees)."""
    import numpy as np

    from iggt.evaluation.metrics import _rotation_angle_deg

    return float(_rotation_angle_deg(np.einsum("sij,skj->sik", a, b)).mean())


def run_case(args: argparse.Namespace, views: int, ratio: float, rotations: Path) -> dict | None:
    command = [sys.executable, __file__, "--worker", "--checkpoint", args.checkpoint, "--device", args.device,
               "--dtype", args.dtype, "--size", str(args.size), "--case-views", str(views), "--case-ratio", str(ratio),
               "--rotations-out", str(rotations)]
    return run_worker(command, f"{views} views, merge ratio {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 0.75])
    parser.add_argument("--size", type=int, default=224, help="square view side in pixels (a multiple of 14)")
    parser.add_argument("--checkpoint", default=str(REPO / "iggt" / "weights" / "iggt-small"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--cameras-only", action="store_true",
                        help="time the aggregator + camera head on random images (the GPU rows), JSON lines")
    parser.add_argument("--height", type=int, default=392, help="--cameras-only: view height")
    parser.add_argument("--width", type=int, default=518, help="--cameras-only: view width")
    parser.add_argument("--dense-max-views", type=int, default=1_000_000,
                        help="--cameras-only: skip the dense run above this many views")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case-views", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--case-ratio", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rotations-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cameras_only:
        cameras_only(args)
        return
    if args.worker:
        args.views, args.ratio = args.case_views, args.case_ratio
        worker(args)
        return

    import tempfile

    import numpy as np

    print(f"token merging vs dense, {Path(args.checkpoint).name} on {args.device}, views of {args.size} x {args.size}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = (f"{'views':>5} {'ratio':>5} {'model s':>8} {'CPU s':>8} {'speed-up':>8} {'peak GB':>8} {'AbsRel':>7} "
              f"{'RRA@5':>6} "
              f"{'AUC@30':>6} {'rot. vs dense':>13} {'T-SR':>6}")
    print(header)
    print("-" * len(header), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for views in args.views:
            dense_seconds = dense_rotations = None
            for ratio in args.ratios:
                rotations = Path(tmp) / f"{views}-{ratio}.npy"
                row = run_case(args, views, ratio, rotations)
                if row is None:
                    continue
                if ratio == 0:
                    dense_seconds, dense_rotations = row["cpu_seconds"], np.load(rotations)
                speed_up = f"{dense_seconds / row['cpu_seconds']:.2f}x" if dense_seconds else "-"
                versus = f"{rotation_error_deg(np.load(rotations), dense_rotations):.2f}" \
                    if dense_rotations is not None and ratio > 0 else "-"
                print(f"{views:>5} {ratio:>5.2f} {row['seconds']:>8.2f} {row['cpu_seconds']:>8.2f} {speed_up:>8} "
                      f"{row['peak_gb']:>8.2f} "
                      f"{row['abs_rel']:>7.3f} {100 * row['rra5']:>5.1f}% {100 * row['auc30']:>5.1f}% {versus:>13} "
                      f"{100 * row['t_sr']:>5.1f}%", flush=True)


if __name__ == "__main__":
    main()
