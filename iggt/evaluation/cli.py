"""``python -m iggt evaluate``: score a model and the baselines on scene records.

    python -m iggt generate --out data/benchmark --count 20 --seed 10000   # the fixed benchmark
    python -m iggt evaluate --data data/benchmark --checkpoint assets/iggt-small --out runs/eval
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CLUSTERING_PRESETS = ("small", "medium", "large")


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
    evaluate.add_argument("--clustering", default="large", choices=CLUSTERING_PRESETS,
                          help="clustering preset (the official demo's) for the model, the per-view baseline and "
                               "the oracle; default large, as `reconstruct` and the app")
    evaluate.add_argument("--max-scenes", type=int, default=None, help="evaluate only the first N scenes")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    evaluate.add_argument("--no-baselines", action="store_true", help="score the model only (faster)")
    evaluate.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Run the command; a missing folder or model gives one line on stderr and exit code 2."""
    from iggt.evaluation.evaluate import EvaluationConfig, run_evaluation
    from iggt.instances import ClusteringConfig
    from iggt.model.checkpoint import CheckpointError
    from iggt.reconstruct import DEFAULT_CHECKPOINT

    if args.max_scenes is not None and args.max_scenes < 1:
        print(f"error: --max-scenes must be at least 1, got {args.max_scenes}", file=sys.stderr)
        return 2
    config = EvaluationConfig(data=args.data, checkpoint=str(args.checkpoint or DEFAULT_CHECKPOINT), out=args.out,
                              clustering=ClusteringConfig.from_preset(args.clustering), max_scenes=args.max_scenes,
                              baselines=not args.no_baselines, device=args.device)
    try:
        summary = run_evaluation(config)
    except (FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{summary['scenes_evaluated']} scenes evaluated, {summary['scenes_failed']} failed; "
          f"report: {args.out / 'report.md'}")
    return 0 if summary["scenes_evaluated"] else 1
