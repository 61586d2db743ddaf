"""Peak memory and time of every stage from generated views to export files, at growing view counts.

    python benchmarks/scale_pipeline.py                      # 100 views of 224 x 224
    python benchmarks/scale_pipeline.py --views 100 300 1000 --formats glb,ply,json,scene
    python benchmarks/scale_pipeline.py --views 100 300 1000 --source truth   # no model: ground truth
    python benchmarks/scale_pipeline.py --views 300 --merge-ratio 0.5         # the model with token merging

Issue 22's second item (everything after the model at 1000 views): one generated scene per view
count (``iggt.data.synthetic``, no shadows, seed 5000 + views) goes through the shipped model
(``--source model``) or becomes the `Scene` a perfect model would predict (``--source truth``,
`iggt.data.oracle`: no model stage, for view counts the CPU cannot run the model at), is made
compact (`Scene.compact`), then instance clustering, structure labels, each export format and a
reload of ``scene.npz`` with a pass over its views, each view count in its own subprocess. A
sampling thread reads the process's resident memory every 10 ms, so each stage gets its own
peak (the resident memory before the stage is printed beside it). Printed per stage: seconds,
peak GB, that peak over the model stage's peak ("-" without a model stage), and the growth of
the peak from the previous view count (linear growth is the view-count ratio).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


class MemorySampler:
    """The resident memory of this process, sampled in a thread; `stage` measures one block."""

    def __init__(self, interval_s: float = 0.01):
        import psutil

        self.process, self.interval_s = psutil.Process(), interval_s
        self.peak = 0
        self.stages: list[dict] = []
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    @contextmanager
    def stage(self, name: str):
        before = self.process.memory_info().rss
        self.peak = before
        start = time.perf_counter()
        yield
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.stages.append({"stage": name, "seconds": time.perf_counter() - start, "peak_gb": self.peak / 1024**3,
                            "before_gb": before / 1024**3})


def worker(views: int, size: int, formats: list[str], checkpoint: str, source: str, merge_ratio: float) -> None:
    """All stages for one view count; prints one JSON line."""
    import numpy as np
    from PIL import Image

    from iggt.data.oracle import oracle_scene
    from iggt.data.synthetic import GeneratorConfig, generate_scene
    from iggt.export import export_all
    from iggt.instances import ClusteringConfig, segment_instances
    from iggt.scene import Scene, view_chunks
    from iggt.structure import mark_structure

    memory = MemorySampler()
    with memory.stage("generate views"):
        record = generate_scene(5000 + views, GeneratorConfig(num_views=views, image_size=(size, size), shadows=False))
        photos = [Image.fromarray(image) for image in record.images]
    if source == "truth":
        with memory.stage("ground truth scene"):
            scene = oracle_scene(record).with_instances(None)
            del record
    else:
        del record
        with memory.stage("model"):
            scene = reconstruct_on_cpu(photos, checkpoint, size, merge_ratio)
    with memory.stage("compact scene"):
        scene = scene.compact()
    with memory.stage("clustering"):
        scene = scene.with_instances(segment_instances(scene, ClusteringConfig.from_preset("medium")))
    with memory.stage("structure labels"):
        scene = scene.with_instances(mark_structure(scene))
    with tempfile.TemporaryDirectory() as out:
        for name in formats:
            with memory.stage(f"export {name}"):
                written = export_all(scene, Path(out), [name], photos=photos)
        if "scene" in formats:
            del scene
            with memory.stage("load scene.npz"):
                loaded = Scene.load(written["scene"])
                for chunk in view_chunks(loaded.num_views):  # touch every array, as a consumer would
                    [float(np.asarray(getattr(loaded, name)[chunk], np.float32).mean()) for name in Scene._ARRAYS]
    print(json.dumps({"views": views, "size": size, "stages": memory.stages}))


def reconstruct_on_cpu(photos: list, checkpoint: str, size: int, merge_ratio: float):
    """The model stage: the shipped model on the CPU, with token merging when ``merge_ratio`` > 0."""
    from iggt.loading import load_model
    from iggt.model.token_merge import set_merge_ratio
    from iggt.reconstruct import Reconstructor

    model = load_model(checkpoint)
    if merge_ratio > 0:
        set_merge_ratio(model, merge_ratio)
    return Reconstructor(model, device="cpu", max_views=None, size=size)(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="+", default=[100])
    parser.add_argument("--size", type=int, default=224, help="square view side in pixels")
    parser.add_argument("--formats", default="glb,ply,masks,json,colmap,scene", help="export formats, in order")
    parser.add_argument("--checkpoint", default=str(REPO / "iggt" / "weights" / "iggt-small"))
    parser.add_argument("--source", choices=("model", "truth"), default="model",
                        help="the scene from the model, or from the generated ground truth (no model stage)")
    parser.add_argument("--merge-ratio", type=float, default=0.0, help="token merging in the model (0: dense)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    if args.worker:
        worker(args.worker, args.size, formats, args.checkpoint, args.source, args.merge_ratio)
        return

    scene_from = ("the generated ground truth (no model)" if args.source == "truth"
                  else f"{Path(args.checkpoint).name} on the CPU, merge ratio {args.merge_ratio}")
    print(f"pipeline stages, scenes from {scene_from}, views of {args.size} x {args.size}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    header = f"{'views':>5} {'stage':<18} {'seconds':>8} {'before GB':>9} {'peak GB':>8} {'/ model':>7} {'growth':>7}"
    print(header)
    print("-" * len(header), flush=True)
    previous: dict[str, float] = {}
    previous_views = None
    for views in args.views:
        command = [sys.executable, __file__, "--worker", str(views), "--size", str(args.size),
                   "--formats", args.formats, "--checkpoint", args.checkpoint, "--source", args.source,
                   "--merge-ratio", str(args.merge_ratio)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{views} views failed:\n{result.stderr[-2000:]}", file=sys.stderr)
            continue
        stages = json.loads(result.stdout.strip().splitlines()[-1])["stages"]
        model_peak = next((s["peak_gb"] for s in stages if s["stage"] == "model"), None)
        for stage in stages:
            growth = (f"{stage['peak_gb'] / previous[stage['stage']]:.2f}x" if stage["stage"] in previous else "-")
            over_model = f"{stage['peak_gb'] / model_peak:.2f}" if model_peak else "-"
            print(f"{views:>5} {stage['stage']:<18} {stage['seconds']:>8.2f} {stage['before_gb']:>9.2f} "
                  f"{stage['peak_gb']:>8.2f} {over_model:>7} {growth:>7}", flush=True)
        if previous_views:
            print(f"      (views grew {views / previous_views:.2f}x)")
        previous = {stage["stage"]: stage["peak_gb"] for stage in stages}
        previous_views = views


if __name__ == "__main__":
    main()
