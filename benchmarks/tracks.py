"""Time and peak memory of tracking many points through a scene (`iggt.tracks.SceneTracker`), per memory budget.

    python benchmarks/tracks.py                        # small preset + a scaled tracker, 16 views at 224 px,
                                                       # 4096 points, budgets 128 / 512 / 2048 MB, CPU
    python benchmarks/tracks.py --preset iggt-1b --tracker release --device cuda --height 392 --width 518

Weights are random (nothing here trains a tracker). ``--tracker release`` is the release's shape
(128-wide features, 384-wide update transformer of depth 6, 7 correlation levels of radius 4,
4 iterations); ``scaled`` (the CPU default) keeps that structure at 32 / 64 wide and depth 2, so
4096 points run in minutes on two cores. The correlation volumes, which the memory budget bounds,
do not depend on those widths (views x H/2 x W/2 per point). Each budget runs in its own
process, so one run's freed memory does not hide the next one's peak. Per budget one JSON line:
points per chunk, seconds for the feature maps (aggregator + feature extractor, once) and for
tracking all points (wall clock, and the process's CPU time, which a shared machine's load
disturbs less), and the peak memory while tracking (CPU: process RSS sampled every 5 ms, and its rise over the RSS before tracking; CUDA:
``max_memory_allocated``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
TRACKERS = {
    "release": {},  # IGGTConfig's defaults are the release's tracker
    "scaled": {"track_features": 32, "track_hidden_size": 64, "track_depth": 2},
}


class RssPeak:
    """The process's resident memory before a block and its peak during it (sampled every 5 ms; psutil)."""

    def __enter__(self) -> "RssPeak":
        import psutil

        self._process = psutil.Process()
        self.before_mb = self.peak_mb = self._rss_mb()
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._sampler.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def measure(args: argparse.Namespace, memory_mb: float) -> dict:
    """One budget, in this process."""
    import numpy as np
    import torch

    from iggt.config import IGGTConfig
    from iggt.model.iggt import IGGT
    from iggt.reconstruct import resolve_device
    from iggt.tracks import SceneTracker, grid_query_points

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = IGGTConfig.from_preset(args.preset).replace(track_head=True, **TRACKERS[args.tracker])
    device = resolve_device(args.device)
    with device:  # random initialisation where the model runs (seconds for the 1B model on a GPU)
        model = IGGT(config).eval()
    images = torch.rand(args.views, 3, args.height, args.width, generator=torch.Generator().manual_seed(1))
    queries = grid_query_points((args.height, args.width), args.points)
    tracker = SceneTracker(model, images, device=str(device), dtype="float32", memory_mb=memory_mb)
    cuda = tracker.device.type == "cuda"

    start = time.perf_counter()
    tracker.feature_maps(0)
    if cuda:
        torch.cuda.synchronize()
    features_s = time.perf_counter() - start

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with (contextlib.nullcontext() if cuda else RssPeak()) as rss:  # CUDA: max_memory_allocated instead
        start, start_cpu = time.perf_counter(), time.process_time()
        tracks = tracker.track(queries, query_view=0)
        if cuda:
            torch.cuda.synchronize()
        track_s, track_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    chunk = tracker.chunk_size()
    row = {
        "preset": args.preset, "tracker": args.tracker, "device": tracker.device.type, "views": args.views, "points": int(len(queries)),
        "image": f"{args.width}x{args.height}", "memory_mb": memory_mb, "chunk": chunk,
        "chunks": -(-len(queries) // chunk), "features_s": round(features_s, 2), "track_s": round(track_s, 2),
        "track_cpu_s": round(track_cpu_s, 2),
        "finite": bool(np.isfinite(tracks.points).all()),
    }
    if cuda:
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    else:
        row.update(rss_before_mb=round(rss.before_mb), rss_peak_mb=round(rss.peak_mb),
                   rss_rise_mb=round(rss.peak_mb - rss.before_mb))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tracker", default="scaled", choices=TRACKERS)
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--memory-mb", type=float, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: one budget
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args, args.memory_mb[0])), flush=True)
        return
    for budget in args.memory_mb:
        child = [sys.executable, __file__, "--one", "--memory-mb", str(budget), "--preset", args.preset, "--tracker", args.tracker,
                 "--views", str(args.views), "--points", str(args.points), "--height", str(args.height),
                 "--width", str(args.width), "--device", args.device, "--threads", str(args.threads)]
        subprocess.run(child, check=True, cwd=REPO)


if __name__ == "__main__":
    main()
