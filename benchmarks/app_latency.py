"""Seconds from "Reconstruct" to the result on screen in the web app, per stage, and what the 3D view weighs.

Runs the app's own handlers in this process: `Handlers.reconstruct` (what the button runs; its
return is what appears on the page) and then `Handlers.write_downloads` (the download files, written
after the result is shown). So the figures are the server's work without network or browser time;
``--browser`` adds the time the page itself takes, measured in Chromium from the click on
"Reconstruct" to the 3D view drawn (it starts the real app with the same model). This machine's
speed drifts between hours by a fifth or more, so compare a change with ``--against REV``: the app
of that git revision (a temporary worktree, its own model) runs beside this tree's, runs alternate,
and the ratio is printed.

Stages: loading (decode photos), model, clustering (with merging small pieces and structure
detection), display (3D view data and table); "result" is their sum, the time until the page can
show the 3D view; pictures (instances on the photos at photo resolution, depth maps) follow, then
downloads (GLB x3, PLY, masks at photo resolution, COLMAP, scene file). "3D view" is the size of
the viewer's data on the wire.

    python benchmarks/app_latency.py                                   # bundled examples, shipped model
    python benchmarks/app_latency.py --photos ../shared/examples-real/demo6 --repeats 3
    python benchmarks/app_latency.py --photos ../shared/examples-real/demo6 --size 224
    python benchmarks/app_latency.py --photos ../shared/examples-real/demo6 --browser
    python benchmarks/app_latency.py --photos ../shared/examples-real/demo6 --browser --against HEAD~1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from anywhere without installing

from demo.handlers import ALL_FRAMES, DEFAULT_MERGE_PERCENT, Display, Handlers, Limits  # noqa: E402
from demo.services import ModelService  # noqa: E402
from demo.session import Session  # noqa: E402
from demo.ui import bundled_examples  # noqa: E402
from iggt.views import IMAGE_EXTENSIONS  # noqa: E402

STAGES = ("loading", "model", "clustering", "display")


def run_once(handlers: Handlers, inputs: list[str] | str, clustering: str, merge: float,
             size: int | None) -> tuple[dict[str, float], int, int, str]:
    """Stage timings of one reconstruction, its number of views, the 3D view's size in bytes and its
    instances ("N (S)": N instances, S of them structure)."""
    session = Session()
    try:
        d = Display()
        files, example = (inputs, "") if isinstance(inputs, list) else (None, inputs)
        outputs = handlers.reconstruct(files, None, 12, example, clustering, merge, d.color_mode,
                                       d.conf_percentile, d.show_cameras, d.drop_background, d.geometry, ALL_FRAMES,
                                       d.show_structure, list(d.filters), size, session,
                                       progress=lambda *args, **kwargs: None)
        viewer_bytes = len(json.dumps(outputs[1]))
        handlers.show_pictures(session)
        handlers.write_downloads(session)
        instances = session.scene.instances
        found = "-" if instances is None else f"{instances.count} ({sum(i.structure for i in instances.info)})"
        return dict(session.timings), session.scene.num_views, viewer_bytes, found
    finally:
        session.close()


def browser_seconds(inputs: list[str], checkpoint: str | None, repeats: int,
                    roots: tuple[Path, ...] = (REPO_ROOT,)) -> list[tuple[list[float], list[float], float]]:
    """Per checkout in ``roots``: seconds from the click on Reconstruct to the 3D view drawn, in Chromium,
    on that checkout's app (on the page's own clock), seconds the viewer took to decode and draw its
    data (``data-render-ms``), and the first click's seconds (the first run after the app started, left
    out of the others). With several checkouts their runs alternate, so a busy spell of the machine
    falls on each alike."""
    from playwright.sync_api import sync_playwright

    from tools.app_page import CHROMIUM, CHROMIUM_ARGS
    from tools.app_server import running_app

    results = [([], [], 0.0) for _ in roots]
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright, contextlib.ExitStack() as apps:
        urls = [apps.enter_context(running_app(Path(tmp) / str(i), checkpoint, size=None, extra_env=threads,
                                               root=root)).url for i, root in enumerate(roots)]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for run in range(repeats + 1):  # the first run is reported apart; a fresh page each time (an identical
            for i in (range(len(roots)) if run % 2 else reversed(range(len(roots)))):  # result is not redrawn)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(urls[i])
                page.locator("#upload input[type=file]").set_input_files(inputs)
                page.locator("#inputs-preview").get_by_text(f"{len(inputs)} photos").wait_for(timeout=60_000)
                start = page.evaluate("() => performance.now()")  # the page's clock: no Playwright polling counted
                page.locator("#reconstruct").click()
                canvas = page.wait_for_selector("#viewer canvas[data-points]", state="attached", timeout=120_000)
                seconds = (float(canvas.get_attribute("data-drawn-at")) - start) / 1000
                if run:
                    results[i][0].append(seconds)
                    results[i][1].append(float(canvas.get_attribute("data-render-ms")) / 1000)
                else:
                    results[i] = (*results[i][:2], seconds)
                page.locator("#status").get_by_text("downloads ready").wait_for(timeout=120_000)
                page.close()
        browser.close()
    return results


@contextlib.contextmanager
def checkout_of(revision: str):
    """A temporary git worktree of ``revision`` (the baseline of ``--against``), removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=REPO_ROOT, check=True,
                       capture_output=True)
        try:
            yield folder
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO_ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="as for app.py (default: the app's own choice)")
    parser.add_argument("--size", type=int, default=None, help="long side of the model input (default: the model's)")
    parser.add_argument("--examples", nargs="*", default=None, help="example folder names (default: all, "
                                                                    "unless --photos is given)")
    parser.add_argument("--photos", nargs="*", default=[], help="folders of photos to reconstruct")
    parser.add_argument("--clustering", default="small", choices=("small", "medium", "large", "none"))
    parser.add_argument("--merge", type=float, default=DEFAULT_MERGE_PERCENT,
                        help="merge pieces under this share of the scene, in %% (the page's default: off)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also measure click-to-3D-view in Chromium")
    parser.add_argument("--against", default=None, metavar="REV",
                        help="with --browser: also the app of git revision REV (its own model), runs alternating")
    args = parser.parse_args()

    models = ModelService(args.checkpoint)
    models.load()
    examples = bundled_examples()
    cases: dict[str, list[str] | str] = {
        Path(folder).name: sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for folder in args.photos}
    for name in args.examples if args.examples is not None else ([] if args.photos else list(examples)):
        cases[name] = name
    handlers = Handlers(models, examples, Limits())
    size = args.size or models.load().size
    print(f"model: {models.info.title}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {models.load().device}; clustering {args.clustering}, merge {args.merge:g} %; input {size} px; "
          f"median of {args.repeats}")
    columns = (*STAGES, "result", "pictures", "downloads")
    header = (f"{'scene':<20}{'views':>6}" + "".join(f"{c:>12}" for c in columns) + f"{'3D view':>10}"
              + f"{'instances (structure)':>24}")
    print(header)
    print("-" * len(header))
    for name, inputs in cases.items():
        run_once(handlers, inputs, args.clustering, args.merge, size)  # warm-up: first-call costs (allocations, caches)
        runs, views, viewer_bytes, found = [], 0, 0, ""
        for _ in range(args.repeats):
            timings, views, viewer_bytes, found = run_once(handlers, inputs, args.clustering, args.merge, size)
            timings["result"] = sum(timings[s] for s in STAGES)
            runs.append(timings)
        median = {key: statistics.median(run[key] for run in runs) for key in columns}
        print(f"{name:<20}{views:>6}" + "".join(f"{median[c]:>11.2f}s" for c in columns)
              + f"{viewer_bytes / 1e6:>8.2f}MB{found:>24}")
        if args.browser and isinstance(inputs, list):
            with contextlib.ExitStack() as stack:
                roots = (REPO_ROOT,) + ((stack.enter_context(checkout_of(args.against)),) if args.against else ())
                measured = browser_seconds(inputs, args.checkpoint, args.repeats, roots)
            for label, (clicks, drawing, first) in zip(("this tree", f"at {args.against}"), measured):
                print(f"{'':<20}in Chromium, click to 3D view drawn ({label}): "
                      f"median {statistics.median(clicks):.2f} s ({', '.join(f'{s:.2f}' for s in clicks)}), "
                      f"of which the viewer decoding and drawing its data: "
                      f"median {statistics.median(drawing) * 1000:.0f} ms; the first click after the app "
                      f"started: {first:.2f} s")
            if args.against:
                ratio = statistics.median(measured[0][0]) / statistics.median(measured[1][0])
                print(f"{'':<20}this tree / {args.against}: {ratio:.2f}x (runs alternating, same machine)")


if __name__ == "__main__":
    main()
