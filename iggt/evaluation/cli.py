"""``python -m iggt evaluate``: score a model and the baselines on scene records.

    python -m iggt generate --out data/benchmark --count 20 --seed 10000   # the fixed benchmark
    python -m iggt evaluate --data data/benchmark --checkpoint iggt/weights/iggt-small --out runs/eval
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iggt.instances import OFFICIAL_VIEW_PIXELS, ClusteringConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    evaluate = subparsers.add_parser(
        "evaluate", help="score reconstruction and instances on scene records, with baselines",
        description="Run the model and the baselines (per-view clustering, geometry only, oracle features) on "
                    "every scene record of a folder and write metrics.json, report.md and plots.")
    evaluate.add_argument("--data", required=True, type=Path, help="folder of scene records (searched recursively)")
    evaluate.add_argument("--checkpoint", default=None,
                          help="model folder, checkpoint file, preset name or Hub id "
                               "(default: the shipped small model)")
    evaluate.add_argument("--out", required=True, type=Path, help="report folder (created)")
    evaluate.add_argument("--clustering", default="medium", choices=list(ClusteringConfig.PRESETS),
                          help="clustering preset (the official demo's) for the model, the per-view baseline and "
                               "the oracle; default medium (the released demo's), as `reconstruct`")
    evaluate.add_argument("--scale-sizes", action="store_true",
                          help="scale the preset's cluster sizes down to views smaller than the released demo's "
                               "518 x 392 (default: as given at any view size, as the release)")
    evaluate.add_argument("--max-scenes", type=int, default=None, help="evaluate only the first N scenes")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    evaluate.add_argument("--no-baselines", action="store_true", help="score the model only (faster)")
    evaluate.add_argument("--allow-failures", action="store_true",
                          help="exit 0 even when some scenes failed (they are listed in the report)")
    evaluate.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the command; exit 1 when a scene failed (a report built on part of the data) unless allowed."""
    from iggt.errors import IGGTError
    from iggt.evaluation.evaluate import EvaluationConfig, run_evaluation
    from iggt.reconstruct import DEFAULT_CHECKPOINT

    if args.max_scenes is not None and args.max_scenes < 1:
        raise IGGTError(f"--max-scenes must be at least 1, got {args.max_scenes}")
    clustering = ClusteringConfig.from_preset(
        args.clustering, reference_view_pixels=OFFICIAL_VIEW_PIXELS if args.scale_sizes else None)
    config = EvaluationConfig(data=args.data, checkpoint=str(args.checkpoint or DEFAULT_CHECKPOINT), out=args.out,
                              clustering=clustering, max_scenes=args.max_scenes,
                              baselines=not args.no_baselines, device=args.device)
    summary = run_evaluation(config)
    failed = summary["scenes_failed"]
    print(f"{summary['scenes_evaluated']} scenes evaluated, {failed} failed; report: {args.out / 'report.md'}")
    if failed and not args.allow_failures:
        print(f"error: {failed} scene(s) failed (see 'failures' in {args.out / 'metrics.json'}); "
              "--allow-failures accepts a partial evaluation", file=sys.stderr)
        return 1
    return 0 if summary["scenes_evaluated"] else 1
