"""How fast the synthetic generator renders and writes scenes on this machine's CPU.

    python benchmarks/generator_speed.py [--scenes 6] [--views 8] [--size 224]

Prints frames per second of rendering (with and without cast shadows), the cost of writing
a scene record, its size on disk, and what that means for a training set of a few thousand
scenes on one and on all cores. Rendering is single-threaded numpy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from iggt.data.scene_format import save_scene_record
from iggt.data.synthetic import GeneratorConfig, generate_scene


def measure(config: GeneratorConfig, scenes: int) -> tuple[float, float, list]:
    """CPU and wall seconds per frame over ``scenes`` scenes (seeds 0..scenes-1), and the records."""
    cpu, wall = time.process_time(), time.perf_counter()
    records = [generate_scene(seed, config) for seed in range(scenes)]
    frames = scenes * config.num_views
    return (time.process_time() - cpu) / frames, (time.perf_counter() - wall) / frames, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="square image side in pixels")
    parser.add_argument("--dataset-size", type=int, default=3000, help="scenes of the extrapolated training set")
    args = parser.parse_args()

    config = GeneratorConfig(num_views=args.views, image_size=(args.size, args.size))
    generate_scene(10_000, replace(config, num_views=1))  # warm-up (imports, caches)
    per_frame, wall_per_frame, records = measure(config, args.scenes)
    per_frame_flat, wall_per_frame_flat, _ = measure(replace(config, shadows=False), args.scenes)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        folders = [save_scene_record(r, Path(tmp) / r.name) for r in records]
        per_save = (time.process_time() - start) / len(records)
        size = sum(f.stat().st_size for folder in folders for f in folder.rglob("*") if f.is_file()) / len(records)

    cores = os.cpu_count() or 1
    per_scene = per_frame * args.views + per_save
    objects = sum(len(r.objects) for r in records) / len(records)
    print(f"{args.scenes} scenes x {args.views} views at {args.size}x{args.size} px, {objects:.1f} objects on average, "
          f"load average {os.getloadavg()[0]:.1f} on {cores} cores")
    print("per core, from CPU time (wall-clock time in brackets, inflated when other processes share the cores)")
    for name, cpu, wall in (("with shadows", per_frame, wall_per_frame), ("without shadows", per_frame_flat,
                                                                           wall_per_frame_flat)):
        print(f"render {name:16s} {1 / cpu:6.1f} frames/s  {cpu * 1000:4.0f} ms/frame  "
              f"({1 / wall:.1f} frames/s wall)")
    print(f"write one scene record  {per_save * 1000:.0f} ms CPU, {size / 1024:.0f} KiB on disk")
    print(f"{args.dataset_size} scenes (with shadows): {args.dataset_size * per_scene / 60:.1f} min on 1 core, "
          f"{args.dataset_size * per_scene / 60 / cores:.1f} min on {cores} cores (generate_dataset(workers={cores}))")


if __name__ == "__main__":
    main()
