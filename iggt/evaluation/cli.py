"""``python -m iggt evaluate``: score a model and the baselines on scene records.

    python -m iggt generate --out data/benchmark --count 20 --seed 10000   # the fixed benchmark
    python -m iggt evaluate --data data/benchmark --checkpoint iggt/weights/iggt-small --out runs/eval
    accelerate launch --num_processes 2 -m iggt evaluate --data data/benchmark --out runs/eval   # sharded

Scenes already evaluated with the same settings in ``--out`` are skipped (see `iggt.evaluation.sharded`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iggt.cli_reconstruct import parse_merge_ratio
from iggt.instances import OFFICIAL_VIEW_PIXELS, RELEASE_PRESET, SHIPPED_MODEL_PRESET, ClusteringConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    evaluate = subparsers.add_parser(
        "evaluate", help="score reconstruction and instances on scene records, with baselines",
        description="Run the model and the baselines (per-view clustering, geometry only, oracle features) on "
                    "every scene record of a folder and write metrics.json, report.md and plots.")
    evaluate.add_argument("--data", required=True, type=Path, help="folder of scene records (searched recursively)")
    evaluate.add_argument("--checkpoint", default=None,
                          help="model folder, checkpoint file, preset name or Hub id "
                               "(owner/name or owner/name:file; default: the shipped small model)")
    evaluate.add_argument("--out", required=True, type=Path, help="report folder (created)")
    evaluate.add_argument("--clustering", default=None, choices=list(ClusteringConfig.PRESETS),
                          help="clustering preset (the official demo's) for the model, the per-view baseline and "
                               f"the oracle; default: the app's for the model ({SHIPPED_MODEL_PRESET} for the shipped "
                               f"small model, else {RELEASE_PRESET}, the released demo's), as `reconstruct`")
    evaluate.add_argument("--smoothing", default=ClusteringConfig.smoothing, choices=("image", "knn3d", "none"),
                          help="feature smoothing before the clustering (default: %(default)s; see ClusteringConfig)")
    evaluate.add_argument("--split-gap", type=float, default=None,
                          help="split instances into their parts apart in 3D by this share of the scene size "
                               "(e.g. 0.02; default: off; see ClusteringConfig.split_gap)")
    evaluate.add_argument("--scale-sizes", action="store_true",
                          help="scale the preset's cluster sizes down to views smaller than the released demo's "
                               "518 x 392 (default: as given at any view size, as the release)")
    evaluate.add_argument("--max-scenes", type=int, default=None, help="evaluate only the first N scenes")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    evaluate.add_argument("--no-baselines", action="store_true", help="score the model only (faster)")
    evaluate.add_argument("--merge-ratio", type=parse_merge_ratio, default=0.0,
                          help="token merging in global attention (share of tokens merged; default 0: none)")
    evaluate.add_argument("--openvocab-model", default=None,
                          help="also score the open-vocabulary mIoU, naming the masks with this image-text model "
                               "(Hub id of a cached CLIP-family model, or 'seeing', the test embedder)")
    evaluate.add_argument("--allow-failures", action="store_true",
                          help="exit 0 even when some scenes failed (they are listed in the report)")
    evaluate.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the command; exit 1 when a scene failed (a report built on part of the data) unless allowed."""
    from iggt.errors import IGGTError
    from iggt.evaluation.evaluate import EvaluationConfig
    from iggt.evaluation.sharded import run_sharded_evaluation
    from iggt.instances import default_preset
    from iggt.reconstruct import DEFAULT_CHECKPOINT

    if args.max_scenes is not None and args.max_scenes < 1:
        raise IGGTError(f"--max-scenes must be at least 1, got {args.max_scenes}")
    checkpoint = str(args.checkpoint or DEFAULT_CHECKPOINT)
    try:
        clustering = ClusteringConfig.from_preset(
            args.clustering or default_preset(checkpoint), smoothing=args.smoothing, split_gap=args.split_gap,
            reference_view_pixels=OFFICIAL_VIEW_PIXELS if args.scale_sizes else None)
    except ValueError as error:  # e.g. a --split-gap out of range
        raise IGGTError(str(error)) from None
    config = EvaluationConfig(data=args.data, checkpoint=checkpoint, out=args.out,
                              clustering=clustering, max_scenes=args.max_scenes,
                              baselines=not args.no_baselines, device=args.device,
                              openvocab_model=args.openvocab_model)
    summary = run_sharded_evaluation(config, args.merge_ratio)
    if summary is None:  # not the main process: it reports
        return 0
    failed = summary["scenes_failed"]
    print(f"{summary['scenes_evaluated']} scenes evaluated, {failed} failed; report: {args.out / 'report.md'}")
    if failed and not args.allow_failures:
        print(f"error: {failed} scene(s) failed (see 'failures' in {args.out / 'metrics.json'}); "
              "--allow-failures accepts a partial evaluation", file=sys.stderr)
        return 1
    return 0 if summary["scenes_evaluated"] else 1
