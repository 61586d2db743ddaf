"""Speed and peak memory of one `iggt-1b` forward (random weights) on a GPU, beside VGGT's H100 figures.

    python benchmarks/gpu_speed.py                      # iggt-1b, bf16, 518x392, 1 ... 100 views (CUDA)
    python benchmarks/gpu_speed.py --preset tiny --views 1 2 --height 56 --width 70 --device cpu

Each case prints one JSON line as soon as it is measured, so a run stopped by a time limit keeps
the cases it finished; ``benchmarks/gpu_check.py`` turns the lines into the table of the README
(`speed_table`). Times are wall-clock seconds between device synchronisations: around the whole
forward, and (through forward hooks) around the aggregator; heads = total - aggregator. Peak
memory is ``torch.cuda.max_memory_allocated`` at the aggregator's end (the figure VGGT publishes)
and after the whole forward; both include the weights (fp32, as `Reconstructor` keeps them).
The aggregator runs under autocast in ``--dtype``, the heads in fp32, as in `Reconstructor`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VGGT_H100 = {1: (0.04, 1.9), 10: (0.14, 3.6), 20: (0.31, 5.6), 50: (1.04, 11.4), 100: (3.12, 21.2)}
"""VGGT-1B's aggregator on one H100 as its README publishes it: frames -> (seconds, GB)."""
ISSUE_VIEWS = (1, 8, 32, 64, 100)
"""The view counts the project measures; VGGT's published counts are measured too, for a direct comparison."""
LONG_CASE_VIEWS = 32
"""From this many views a forward takes seconds: one timed run after the warm-up is enough."""


def measure(args: argparse.Namespace) -> None:
    """Build the model once on the device, then time every view count (one JSON line each)."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch

    from iggt.config import IGGTConfig
    from iggt.model.iggt import IGGT
    from model_forward import count_flops

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    is_cuda = device.type == "cuda"

    def now() -> float:
        if is_cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def peak_gb() -> float | None:
        return torch.cuda.max_memory_allocated(device) / 1e9 if is_cuda else None

    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(device):  # random initialisation on the GPU itself: seconds instead of a minute
        model = IGGT(IGGTConfig.from_preset(args.preset)).eval()
    weights_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    print(json.dumps({"built_s": time.perf_counter() - started, "weights_gb": weights_gb}), flush=True)

    marks: dict[str, float] = {}
    model.aggregator.register_forward_pre_hook(lambda *_: marks.__setitem__("aggregator_start", now()))
    model.aggregator.register_forward_hook(
        lambda *_: marks.update(aggregator_end=now(), aggregator_peak=peak_gb()))

    def forward(images: torch.Tensor) -> dict[str, float | None]:
        if is_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = now()
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            model(images)
        total = now() - start
        aggregator = marks["aggregator_end"] - marks["aggregator_start"]
        return {"aggregator_s": aggregator, "heads_s": total - aggregator, "total_s": total,
                "aggregator_peak_gb": marks["aggregator_peak"], "peak_gb": peak_gb()}

    for views in args.views:
        row: dict[str, object] = {"preset": args.preset, "views": views, "height": args.height, "width": args.width,
                                  "dtype": args.dtype, "device": str(device)}
        try:
            images = torch.rand(views, 3, args.height, args.width, device=device)
            forward(images)  # warm-up: kernels chosen, memory pools grown
            runs = [forward(images) for _ in range(args.repeats if views < LONG_CASE_VIEWS else 1)]
            best = min(runs, key=lambda run: run["total_s"])
            row.update(best, tflops=count_flops(args.preset, views, args.height, args.width) / 1e12)
            row["tflop_per_s"] = row["tflops"] / best["total_s"]
        except torch.OutOfMemoryError as error:
            row["error"] = f"out of memory: {str(error).splitlines()[0]}"
            torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)


def _number(value: object, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def speed_table(rows: list[dict]) -> str:
    """Markdown: our measured cases and VGGT's published aggregator figures, one row per view count."""
    ours = {row["views"]: row for row in rows if "views" in row}
    lines = ["| views | aggregator s | heads s | total s | TFLOP/s | peak GB (aggregator) | peak GB (total) "
             "| VGGT aggregator s (H100) | VGGT GB (H100) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for views in sorted(set(ours) | set(VGGT_H100)):
        row = ours.get(views, {})
        vggt_s, vggt_gb = VGGT_H100.get(views, (None, None))
        if "error" in row:
            measured = [row["error"], "", "", "", "", ""]
        else:
            measured = [_number(row.get("aggregator_s"), 3), _number(row.get("heads_s"), 3),
                        _number(row.get("total_s"), 3), _number(row.get("tflop_per_s"), 1),
                        _number(row.get("aggregator_peak_gb"), 1), _number(row.get("peak_gb"), 1)]
            if not row:
                measured[0] = "not measured"
        lines.append(f"| {views} | " + " | ".join(measured + [_number(vggt_s, 2), _number(vggt_gb, 1)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="iggt-1b")
    parser.add_argument("--views", type=int, nargs="+", default=sorted(set(ISSUE_VIEWS) | set(VGGT_H100)))
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="autocast of the aggregator")
    parser.add_argument("--repeats", type=int, default=2,
                        help=f"timed forwards per case below {LONG_CASE_VIEWS} views (one above), after a warm-up; "
                             "the fastest counts")
    parser.add_argument("--device", default="cuda")
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
