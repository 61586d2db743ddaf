"""Seconds per view and peak memory of one fp32 forward pass of IGGT, per model preset.

Wall-clock seconds depend on how busy the machine is; the CPU seconds (all threads of the
process) are the steadier figure on a shared machine. Each case runs in its own subprocess, so the peak resident memory (``getrusage`` max RSS)
belongs to that case alone: weights, activations and the Python/torch runtime together. The
weights are random (shapes are what matter for speed and memory).

    python benchmarks/model_forward.py                          # tiny and small, 2 views of 336 x 504
    python benchmarks/model_forward.py --presets iggt-1b         # the released size (needs ~8 GB RAM)
    python benchmarks/model_forward.py --views 4 --height 280 --width 420 --repeats 3

Reference from the project issue: the official IGGT takes about 43 s and 7.5 GB for 2 views
of 336 x 504 on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_REFERENCE = {"iggt-1b": (43.0, 7.5)}
"""Preset -> (seconds for the whole forward of 2 views at 336 x 504, peak GB) of the released code."""
NEEDED_GB = {"iggt-1b": 8.0}
"""Free memory a case needs before it is attempted."""


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def available_gb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return float("inf")


def count_flops(preset: str, views: int, height: int, width: int) -> float:
    """Floating-point operations of one forward, counted on the meta device (no memory, no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from iggt.config import IGGTConfig
    from iggt.model.iggt import IGGT

    with torch.device("meta"):
        model = IGGT(IGGTConfig.from_preset(preset)).eval()
        model.aggregator.restore_constants("meta")
        images = torch.rand(views, 3, height, width)
    counter = FlopCounterMode(display=False)
    with counter:  # not under no_grad: the counter's module tracker needs autograd
        model(images)
    return float(counter.get_total_flops())


def worker(args: argparse.Namespace) -> None:
    """Build one model, time its forward passes, print one JSON line."""
    sys.path.insert(0, str(REPO))
    import torch

    from iggt.config import IGGTConfig
    from iggt.model.iggt import IGGT

    if args.threads:
        torch.set_num_threads(args.threads)
    flops = count_flops(args.worker, args.views, args.height, args.width)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = IGGT(IGGTConfig.from_preset(args.worker)).eval()
    build_s = time.perf_counter() - start
    images = torch.rand(args.views, 3, args.height, args.width)
    rss_before = peak_rss_gb()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            model(images)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    print(json.dumps({
        "preset": args.worker,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops": flops / 1e9,
        "build_s": build_s,
        "forward_s": min(times),
        "forward_cpu_s": min(cpu_times),
        "peak_gb": peak_rss_gb(),
        "peak_before_forward_gb": rss_before,
        "threads": torch.get_num_threads(),
    }))


def run_case(preset: str, args: argparse.Namespace) -> dict | None:
    needed = NEEDED_GB.get(preset, 0.0)
    if available_gb() < needed:
        print(f"skipping {preset}: needs about {needed:.0f} GB free, {available_gb():.1f} GB available", file=sys.stderr)
        return None
    command = [sys.executable, __file__, "--worker", preset, "--views", str(args.views), "--height", str(args.height),
               "--width", str(args.width), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    return run_worker(command, preset)


def run_worker(command: list[str], label: str) -> dict | None:
    """Run one case in a fresh process (so its peak memory is its own); its last stdout line is its JSON row."""
    print(f"running {label} ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{label} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nfp32 forward, {args.views} views of {args.height} x {args.width}, best of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = (f"{'preset':<9} {'params':>13} {'GFLOP':>8} {'threads':>7} {'s/view':>8} {'forward s':>9} {'CPU s':>8} "
              f"{'GFLOP/CPU s':>11} {'peak GB':>8} {'before fwd GB':>13}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['preset']:<9} {row['parameters']:>13,} {row['gflops']:>8.0f} {row['threads']:>7} "
              f"{row['forward_s'] / args.views:>8.3f} {row['forward_s']:>9.2f} {row['forward_cpu_s']:>8.2f} "
              f"{row['gflops'] / row['forward_cpu_s']:>11.1f} {row['peak_gb']:>8.2f} {row['peak_before_forward_gb']:>13.2f}")
        if row["preset"] in OFFICIAL_REFERENCE and (args.views, args.height, args.width) == (2, 336, 504):
            seconds, gigabytes = OFFICIAL_REFERENCE[row["preset"]]
            print(f"{'  official':<9} {'':>13} {'':>8} {'':>7} {seconds / 2:>8.3f} {seconds:>9.2f} {'':>8} {'':>11} "
                  f"{gigabytes:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], help="model presets to measure")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--height", type=int, default=336)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--repeats", type=int, default=1, help="forward passes per case; the fastest counts")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [row for preset in args.presets if (row := run_case(preset, args)) is not None]
    print_table(rows, args)


if __name__ == "__main__":
    main()
