"""What bundle adjustment gains on the generated benchmark, whose true cameras are known.

For every scene of ``data/benchmark`` (8 views of 224 px, seed 10000) it prints and averages the
relative pose errors (rotation and translation direction, degrees, mean over view pairs) and
pose AUC@30 before and after `iggt.sfm.adjust.bundle_adjust`, with the adjusted model's
reprojection error, for

* ``model``: the checkpoint's cameras and depth, its intrinsics refined by the adjustment;
* ``model+K``: the same with the true intrinsics given (held fixed), as ``--intrinsics`` does;
* ``oracle``: true depth and intrinsics, cameras of views 1.. turned by ``--perturb-deg`` and
  moved by ``--perturb-move`` of the mean camera distance (what the adjustment has to undo).

Tracks: pycolmap SIFT matched under each variant's cameras (``--tracks features``) or the
checkpoint's point tracker (``--tracks model``, the released 1B model; see gpu_check.py). A
scene whose tracks are too few, or whose adjustment diverges, keeps its unadjusted cameras (the
``adjusted`` column counts the others).

    python benchmarks/ba.py                                # shipped small model, 20 scenes: ~17 min on 2 busy cores
    python benchmarks/ba.py --checkpoint iggt-1b-weights --tracks model --device cuda
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iggt.data.oracle import oracle_scene  # noqa: E402
from iggt.data.scene_format import load_scene_record  # noqa: E402
from iggt.evaluation.metrics import pose_auc, relative_pose_errors  # noqa: E402
from iggt.geometry import invert_extrinsics, unproject_depth  # noqa: E402
from iggt.loading import load_model  # noqa: E402
from iggt.reconstruct import Reconstructor, resolve_checkpoint  # noqa: E402
from iggt.scene import Scene  # noqa: E402
from iggt.sfm.adjust import AdjustmentConfig, AdjustmentFailed, TooFewTracks, bundle_adjust  # noqa: E402
from iggt.sfm.refine import track_source  # noqa: E402
from iggt.sfm.tracks import FeatureTracks  # noqa: E402

VARIANTS = ("model", "model+K", "oracle")


@dataclass
class Figures:
    """Sums over scenes of one variant."""

    rows: list[dict] = field(default_factory=list)

    def add(self, scene: str, before: Scene, after: Scene, truth: Scene, report) -> dict:
        row = {"scene": scene}
        for name, adjusted in (("before", before), ("after", after)):
            rotation, translation = relative_pose_errors(adjusted.extrinsics, truth.extrinsics)
            row[f"rot_{name}"], row[f"trans_{name}"] = float(rotation.mean()), float(translation.mean())
            row[f"auc30_{name}"] = pose_auc(rotation, translation)
            focal = adjusted.intrinsics[:, 0, 0] / truth.intrinsics[:, 0, 0] - 1
            row[f"focal_err_{name}"] = float(np.abs(focal).mean())
        row["adjusted"] = report is not None
        row["reproj_before"] = report.reprojection_error_before if report else float("nan")
        row["reproj_after"] = report.reprojection_error_after if report else float("nan")
        row["points"] = report.points if report else 0
        self.rows.append(row)
        return row

    def mean(self, key: str) -> float:
        values = [r[key] for r in self.rows if np.isfinite(r[key])]
        return float(np.mean(values)) if values else float("nan")


def perturbed(truth: Scene, degrees: float, move: float, rng: np.random.Generator) -> Scene:
    """Views 1.. turned by about ``degrees`` and moved by ``move`` of the mean camera distance."""
    from scipy.spatial.transform import Rotation

    extrinsics = truth.extrinsics.astype(np.float64).copy()
    centres = invert_extrinsics(extrinsics)[:, :, 3]
    spread = float(np.mean(np.linalg.norm(centres - centres[0], axis=1)[1:]))
    for view in range(1, truth.num_views):
        turn = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.radians(degrees)).as_matrix()
        extrinsics[view, :, :3] = turn @ extrinsics[view, :, :3]
        extrinsics[view, :, 3] = turn @ extrinsics[view, :, 3] + rng.normal(size=3) / np.sqrt(3) * move * spread
    extrinsics = extrinsics.astype(np.float32)
    return replace(truth, extrinsics=extrinsics,
                   points_from_depth=unproject_depth(truth.depth, extrinsics, truth.intrinsics))


def adjust(scene: Scene, tracks_for, fix_intrinsics: bool):
    """(adjusted scene, report), or the scene itself and None when the tracks are too few."""
    try:
        result = bundle_adjust(scene, tracks_for(scene), AdjustmentConfig(fix_intrinsics=fix_intrinsics))
    except (TooFewTracks, AdjustmentFailed):
        return scene, None
    return result.scene, result.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/benchmark"))
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--first", type=int, default=0,
                        help="skip the scenes before this one, to split a run (the oracle's perturbations then differ)")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped small model")
    parser.add_argument("--tracks", default="features", choices=("features", "model"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--perturb-deg", type=float, default=5.0)
    parser.add_argument("--perturb-move", type=float, default=0.05)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = parser.parse_args()

    model = load_model(resolve_checkpoint(args.checkpoint))
    reconstructor = Reconstructor(model, args.device, "auto")
    variants = [v for v in args.variants.split(",") if v]
    features, source = FeatureTracks(), track_source(args.tracks, model, args.device)
    figures = {variant: Figures() for variant in variants}
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for folder in sorted(p for p in args.data.iterdir() if p.is_dir())[args.first:args.first + args.scenes]:
        truth = oracle_scene(load_scene_record(folder))
        cached = features.extract(truth) if args.tracks == "features" else None

        def tracks_for(scene: Scene):
            return features.match(scene, cached) if cached is not None else source(scene)

        starts = {"oracle": (perturbed(truth, args.perturb_deg, args.perturb_move, rng), True)}
        if {"model", "model+K"} & set(variants):
            predicted = reconstructor(torch.from_numpy(truth.images).permute(0, 3, 1, 2))
            given_k = replace(predicted, intrinsics=truth.intrinsics,
                              points_from_depth=unproject_depth(predicted.depth, predicted.extrinsics,
                                                                truth.intrinsics))
            starts.update({"model": (predicted, False), "model+K": (given_k, True)})
        for variant in variants:
            before, fix = starts[variant]
            after, report = adjust(before, tracks_for, fix)
            row = figures[variant].add(folder.name, before, after, truth, report)
            print(f"{folder.name} {variant:8s} rot {row['rot_before']:6.2f} -> {row['rot_after']:6.2f} deg, "
                  f"trans {row['trans_before']:6.2f} -> {row['trans_after']:6.2f} deg, AUC@30 "
                  f"{row['auc30_before']:.3f} -> {row['auc30_after']:.3f}, reproj {row['reproj_before']:.2f} -> "
                  f"{row['reproj_after']:.2f} px, {row['points']} points", flush=True)

    print(f"\n{len(figures[variants[0]].rows)} scenes of {args.data}, tracks: {args.tracks}, "
          f"{time.perf_counter() - start:.0f} s")
    print("variant   rot err (deg)    trans err (deg)   AUC@30          focal err      reproj (px)   adjusted")
    for variant, sums in figures.items():
        adjusted = sum(r["adjusted"] for r in sums.rows)
        print(f"{variant:8s}  {sums.mean('rot_before'):6.2f} -> {sums.mean('rot_after'):5.2f}   "
              f"{sums.mean('trans_before'):6.2f} -> {sums.mean('trans_after'):5.2f}    "
              f"{sums.mean('auc30_before'):.3f} -> {sums.mean('auc30_after'):.3f}   "
              f"{100 * sums.mean('focal_err_before'):4.1f} -> {100 * sums.mean('focal_err_after'):4.1f} %   "
              f"{sums.mean('reproj_before'):.2f} -> {sums.mean('reproj_after'):.2f}   {adjusted}/{len(sums.rows)}")
        print(json.dumps({"variant": variant, "tracks": args.tracks, "scenes": len(sums.rows), "adjusted": adjusted,
                          **{f"{key}_{when}": sums.mean(f"{key}_{when}") for key in ("rot", "trans", "auc30",
                                                                                     "focal_err", "reproj")
                             for when in ("before", "after")}}))
    if args.json is not None:
        args.json.write_text(json.dumps({v: f.rows for v, f in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
