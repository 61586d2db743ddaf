"""Open-vocabulary search and labels: speed of a base-size CLIP/SigLIP, and quality end to end.

``speed``: a randomly initialised model of the real base shape (the cost of a model does not depend
on its weights) embeds every instance of a generated 10-view scene, then answers text queries
(each a new text, so the text encoder runs every time; the instance embeddings come from the cache).

``quality``: on the benchmark scenes (data/benchmark), the shipped model's reconstruction
(clustered with the app's preset, structure marked as the app does) and the oracle's masks (the
ground-truth instances) are searched and labelled by an embedder, by default the seeing test
embedder (`grounding.embedders.seeing`). Find top-1: for every object whose colour and category is
unique in its scene and that some view shows whole, the query "<colour> <category>" is right when
the top-ranked instance stands for that object (`grounding.evaluation.match_to_objects`). OV mIoU
2D / 3D: `iggt.evaluation.evaluate.openvocab_figures`, the scene's categories as the vocabulary.
With ``--model laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` (weights in the local cache) it measures a real CLIP.

``app``: the Find tab of the web app (the README command's app, the shipped model, the seeing embedder)
in Chromium: seconds from the click on Find to the matches on the page (the 3D view redrawn and every
view picture loaded), each query after the first (which embeds every instance) on the page's own clock.

    python benchmarks/openvocab.py speed --kind clip siglip
    python benchmarks/openvocab.py speed --kind clip --threads 1      # a machine that others share
    python benchmarks/openvocab.py speed --kind siglip --device cuda
    python benchmarks/openvocab.py quality --scenes 20
    python benchmarks/openvocab.py quality --scenes 20 --model laion/CLIP-ViT-B-32-laion2B-s34B-b79K
    python benchmarks/openvocab.py app --photos ../shared/examples-real/demo6
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from grounding import openvocab as ov  # noqa: E402
from grounding.embedders import SEEING, make_embedder  # noqa: E402
from iggt.data.oracle import oracle_scene  # noqa: E402
from iggt.data.scene_format import SceneRecord, list_scene_records, load_scene_record  # noqa: E402
from iggt.data.synthetic import GeneratorConfig, generate_scene  # noqa: E402
from iggt.scene import BACKGROUND, Scene, labels_from_one_based  # noqa: E402

QUERIES = ("chair", "a red mug", "something to sit on", "the blue sphere", "a wooden table", "yellow cube",
           "floor lamp", "green bottle", "a small box", "the tallest object")


def speed(args: argparse.Namespace) -> None:
    import torch

    from grounding.embedders.random_init import random_embedder

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    record = generate_scene(args.seed, GeneratorConfig(num_views=10, image_size=(args.size, args.size),
                                                       object_count=(args.objects, args.objects)))
    scene = oracle_scene(record)
    regions, _, _ = ov.instance_regions(scene)
    print(f"torch threads {_threads()}; CPU = processor time of all threads (a busy machine inflates the wall "
          "time, much less this)")
    print("| model | device | views | instances | regions | embed all (s) | embed CPU (s) | query median (ms) | "
          "query max (ms) | query CPU (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kind:
        embedder = random_embedder(kind, "base", device=args.device, batch_size=args.batch_size)
        parameters = sum(p.numel() for p in embedder.model.parameters()) / 1e6
        embedder.embed_regions(regions[:2])  # first-call costs (allocations, kernels) are not the scene's
        embedder.embed_texts(["warm up"])
        cache = ov.EmbeddingCache()
        start, cpu_start = time.perf_counter(), time.process_time()
        ov.embed_instances(scene, embedder, cache=cache)
        _synchronize(embedder)
        embed_seconds, embed_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        ov.find(scene, "lamp", embedder, cache=cache)  # the negatives' texts, once per session
        times, cpu_times = [], []
        for query in QUERIES:
            start, cpu_start = time.perf_counter(), time.process_time()
            ov.find(scene, query, embedder, cache=cache)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        row = {"model": f"random {kind} base ({parameters:.0f} M)", "device": str(embedder.device),
               "views": scene.num_views, "size": args.size, "instances": scene.instances.count,
               "regions": len(regions), "embed_s": embed_seconds, "embed_cpu_s": embed_cpu, "query_ms": 1000 * statistics.median(times),
               "query_max_ms": 1000 * max(times), "query_cpu_ms": 1000 * statistics.median(cpu_times)}
        print(f"| {row['model']} | {row['device']} | {row['views']} x {args.size} px | {row['instances']} | "
              f"{row['regions']} | {embed_seconds:.2f} | {embed_cpu:.2f} | {row['query_ms']:.1f} | "
              f"{row['query_max_ms']:.1f} | {row['query_cpu_ms']:.1f} |")
        print(json.dumps(row), flush=True)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _synchronize(embedder) -> None:
    import torch

    if embedder.device.type == "cuda":
        torch.cuda.synchronize()


def find_top1(record: SceneRecord, scene: Scene, gt_ids: np.ndarray, embedder) -> tuple[int, int]:
    """(right, asked) of the "<colour> <category>" queries of one scene (see the module docstring)."""
    from grounding.evaluation import match_to_objects, well_seen

    names = [o.name for o in record.objects]
    matches = match_to_objects(gt_ids, scene.instances.labels)
    oracle = oracle_scene(record)
    oracle_of = {int(record.instance_ids[oracle.instances.labels == i.id][0]): i.id for i in oracle.instances.info}
    right = asked = 0
    for obj in record.objects:
        if names.count(obj.name) > 1 or obj.id not in oracle_of or not well_seen(oracle, oracle_of[obj.id]):
            continue
        asked += 1
        result = ov.find(scene, obj.name, embedder)
        right += bool(result.ranked) and matches.get(result.ranked[0][0]) == obj.id
    return right, asked


def quality(args: argparse.Namespace) -> None:
    from demo.services import describe
    from grounding.evaluation import resample_record
    from iggt.evaluation.evaluate import GroundTruth, RecordGrid, make_reconstructor, openvocab_figures
    from iggt.instances import ClusteringConfig, segment_instances
    from iggt.structure import mark_structure

    embedder = make_embedder(args.model, args.device)
    reconstructor = make_reconstructor(args.checkpoint, args.device)
    clustering = ClusteringConfig.from_preset(describe(args.checkpoint, reconstructor.model).clustering)
    totals = {source: {"right": 0, "asked": 0, "ov_miou_2d": [], "ov_miou_3d": []} for source in ("model", "oracle")}
    directories = list_scene_records(args.data)[:args.scenes]
    start = time.perf_counter()
    for directory in directories:
        record = load_scene_record(directory)
        truth = GroundTruth.of(record)
        scene = reconstructor([Image.fromarray(image) for image in record.images])
        scene = scene.with_instances(segment_instances(scene, clustering))
        scene = scene.with_instances(mark_structure(scene))
        model_labels = RecordGrid.of(scene, record.image_size).resample(scene.instances.labels, BACKGROUND)
        sources = {"model": (scene, resample_record(record, scene).instance_ids, model_labels),
                   "oracle": (oracle_scene(record), record.instance_ids, labels_from_one_based(record.instance_ids))}
        for source, (searched, gt_ids, labels) in sources.items():
            right, asked = find_top1(record, searched, gt_ids, embedder)
            figures = openvocab_figures(record, truth, labels, embedder)
            totals[source]["right"] += right
            totals[source]["asked"] += asked
            for key in ("ov_miou_2d", "ov_miou_3d"):
                totals[source][key].append(figures[key])
        print(f"{record.name}: " + ", ".join(f"{s} Find {t['right']}/{t['asked']} so far, OV mIoU 2D "
                                             f"{100 * t['ov_miou_2d'][-1]:.1f} %" for s, t in totals.items()), flush=True)
    print(f"\n{len(directories)} scenes of {args.data}, embedder {embedder.name}, model {args.checkpoint} "
          f"({clustering.min_cluster_size} min cluster size), {time.perf_counter() - start:.0f} s\n")
    print("| masks | Find top-1 | queries | OV mIoU 2D | OV mIoU 3D |")
    print("|---|---|---|---|---|")
    for source, t in totals.items():
        print(f"| {source} | {100 * t['right'] / max(t['asked'], 1):.1f} % | {t['asked']} | "
              f"{100 * np.nanmean(t['ov_miou_2d']):.1f} % | {100 * np.nanmean(t['ov_miou_3d']):.1f} % |")


FIND_QUERIES = ("red sphere", "yellow object", "blue cube", "something to sit on")


def app(args) -> None:
    """Find in the web app, in Chromium: click to the 3D view redrawn, and to everything on the page."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from iggt.views import IMAGE_EXTENSIONS
    from tools.app_page import CHROMIUM, CHROMIUM_ARGS
    from tools.app_server import running_app

    photos = sorted(path for path in args.photos.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS)
    drawn, loaded = [], []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright, \
            running_app(Path(tmp), None, size=None, extra_env={"IGGT_EMBEDDER": SEEING}) as running:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})  # not `open_page`: its status watch
        page.goto(running.url)                                              # slows every change of the page
        page.locator("#upload input[type=file]").set_input_files([str(path) for path in photos])
        page.locator("#inputs-preview").get_by_text(f"{len(photos)} photos").wait_for(timeout=60_000)
        page.locator("#reconstruct").click()
        page.locator("#status").get_by_text("downloads ready").wait_for(timeout=300_000)
        page.get_by_role("tab", name="Find").click()
        canvas = page.locator("#viewer canvas")
        for run in range(args.repeats + 1):
            query = FIND_QUERIES[run % len(FIND_QUERIES)]
            scenes = int(canvas.get_attribute("data-scenes"))
            page.locator("#find-query textarea").fill(query)
            start = page.evaluate("() => performance.now()")
            page.locator("#find").click()
            page.wait_for_function(f"() => Number(document.querySelector('#viewer canvas').dataset.scenes) > {scenes}",
                                   timeout=300_000)
            page.wait_for_function("() => [...document.querySelectorAll('#overlays img')].every(i => i.complete)"
                                   " && document.querySelector('#find-result').innerText.includes(" + repr(query) + ")")
            end = page.evaluate("() => performance.now()")
            figures = ((float(canvas.get_attribute("data-drawn-at")) - start) / 1000, (end - start) / 1000)
            print(f"{query!r}: 3D view redrawn {figures[0]:.2f} s, everything on the page {figures[1]:.2f} s"
                  + (" (the first query: embeds every instance)" if run == 0 else ""), flush=True)
            if run:
                drawn.append(figures[0])
                loaded.append(figures[1])
        browser.close()
    print(f"\n{len(photos)} photos of {args.photos.name}; {args.repeats} queries after the first, median: 3D view "
          f"redrawn {statistics.median(drawn):.2f} s, everything on the page {statistics.median(loaded):.2f} s "
          f"(range {min(loaded):.2f}-{max(loaded):.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fast = commands.add_parser("speed", help="embedding and query time of a base-size model with random weights")
    fast.add_argument("--kind", nargs="+", choices=("clip", "siglip"), default=["clip"])
    fast.add_argument("--device", default="cpu")
    fast.add_argument("--size", type=int, default=518, help="view size in pixels (the released model's 518)")
    fast.add_argument("--objects", type=int, default=10, help="objects in the scene")
    fast.add_argument("--batch-size", type=int, default=32)
    fast.add_argument("--seed", type=int, default=7)
    fast.add_argument("--threads", type=int, default=None,
                      help="torch intra-op threads (default: torch's); 1 is faster on a crowded machine")
    fast.set_defaults(func=speed)
    good = commands.add_parser("quality", help="Find top-1 and open-vocabulary mIoU on the benchmark scenes")
    good.add_argument("--data", type=Path, default=REPOSITORY / "data" / "benchmark")
    good.add_argument("--scenes", type=int, default=20)
    good.add_argument("--model", default=SEEING, help="embedder: 'seeing' or a cached Hub id")
    good.add_argument("--checkpoint", default=str(REPOSITORY / "iggt" / "weights" / "iggt-small"))
    good.add_argument("--device", default="auto")
    good.set_defaults(func=quality)
    page = commands.add_parser("app", help="seconds from a click on Find to the matches on the page, in Chromium")
    page.add_argument("--photos", type=Path, required=True, help="a folder of photos of one scene")
    page.add_argument("--repeats", type=int, default=6, help="queries after the first")
    page.set_defaults(func=app)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
