"""Seconds from "Reconstruct" to results in the web app, per stage, for the bundled example scenes.

Runs the app's own handler (`demo.handlers.Handlers.reconstruct`, the code behind the button and
the ``/reconstruct`` endpoint) in this process, so the figures are the server's work without
network or browser time. Each example is run once to warm up, then ``--repeats`` times; the
table shows the median of every stage.

    python benchmarks/app_latency.py                          # shipped small model
    python benchmarks/app_latency.py --checkpoint tiny --size 112
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from demo.handlers import Display, Handlers, Limits  # noqa: E402
from demo.services import ModelService  # noqa: E402
from demo.session import Session  # noqa: E402
from demo.ui import bundled_examples  # noqa: E402

STAGES = ("loading", "model", "clustering", "export")


def run_once(handlers: Handlers, example: str, clustering: str) -> tuple[dict[str, float], int]:
    """Stage timings of one reconstruction of ``example`` and its number of views."""
    session = Session()
    try:
        defaults = Display()
        handlers.reconstruct(None, None, 12, example, clustering, defaults.color_mode, defaults.conf_percentile,
                             defaults.show_cameras, defaults.drop_background, session,
                             progress=lambda *args, **kwargs: None)
        return dict(session.timings), session.scene.num_views
    finally:
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="as for app.py (default: the app's own choice)")
    parser.add_argument("--size", type=int, default=None, help="long side of the model input (default: the model's)")
    parser.add_argument("--examples", nargs="*", default=None, help="example folder names (default: all)")
    parser.add_argument("--clustering", default="large", choices=("small", "medium", "large", "none"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    models = ModelService(args.checkpoint, size=args.size)
    models.load()
    examples = bundled_examples()
    names = args.examples or list(examples)
    handlers = Handlers(models, examples, Limits())
    print(f"model: {models.info.title}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {models.load().device}; clustering {args.clustering}; median of {args.repeats}")
    header = f"{'example':<22}{'views':>6}{'size':>10}" + "".join(f"{s:>12}" for s in STAGES) + f"{'total':>10}"
    print(header)
    print("-" * len(header))
    for name in names:
        run_once(handlers, name, args.clustering)  # warm-up: first-call costs (allocations, caches)
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            timings, views = run_once(handlers, name, args.clustering)
            timings["total"] = time.perf_counter() - start
            runs.append(timings)
        median = {key: statistics.median(run[key] for run in runs) for key in (*STAGES, "total")}
        size = f"{handlers.models.load().size}px"
        print(f"{name:<22}{views:>6}{size:>10}" + "".join(f"{median[s]:>11.2f}s" for s in STAGES)
              + f"{median['total']:>9.2f}s")


if __name__ == "__main__":
    main()
