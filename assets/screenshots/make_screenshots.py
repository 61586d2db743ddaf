"""Write the README's screenshots of the app and the viewer into ``assets/screenshots/``.

* ``reconstruction.png``, ``view-options.png``, ``selection.png``, ``question.png``: the real app
  with the shipped small model, driven in Debian's Chromium as a person would use it
  (`tools/app_page.py`, as the browser tests do): reconstruct the real photos of
  ``shared/examples-real/demo6`` (else the bundled real-room-6-views), show them in photo colours
  without structure, click an instance, then ask about the bundled synthetic-5 example with the
  seeing test VLM server.
* ``viser.png``: ``iggt view`` of the shipped model's reconstruction of ``shared/examples-real/demo6``
  (a real kitchen), coloured by instance; skipped when those photos are not there.

Needs `chromium` and Playwright (requirements-dev.txt). Run from the repository root:
``PYTHONPATH=. python assets/screenshots/make_screenshots.py``.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from grounding.vlm.seeing_server import start_test_server
from iggt.reconstruct import DEFAULT_CHECKPOINT
from iggt.scene import Scene
from iggt.viewer import SceneViewer, ViewerConfig
from tools.app_page import (CHROMIUM, CHROMIUM_ARGS, WEBGL_CHROMIUM_ARGS, ask_in_page, click_pixel, latest_scene,
                            open_page, open_viewer, pixel_of_instance, reconstruct_in_page, screenshot_at)
from tools.app_server import REPO_ROOT, running_app

HERE = Path(__file__).resolve().parent
VIEWER_PHOTOS = [root / "shared" / "examples-real" / "demo6" for root in (REPO_ROOT, REPO_ROOT.parent)]
"""The viewer screenshot reconstructs the first of these folders that exists."""


def app_screenshots(playwright) -> None:
    vlm = start_test_server()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        with tempfile.TemporaryDirectory() as workdir, running_app(Path(workdir), DEFAULT_CHECKPOINT, size=None) as app:
            page = open_page(browser, app.url, width=1400, height=1200)
            photos = next((folder for folder in VIEWER_PHOTOS if folder.exists()), None)
            if photos is not None:  # real photos (a kitchen table, 10 frames), else the bundled real room
                reconstruct_in_page(page, photos=sorted(photos.glob("*.jpg")))
            else:
                reconstruct_in_page(page, example="real-room-6-views")
            screenshot_at(page, "#model-banner", HERE / "reconstruction.png")
            page.get_by_label("RGB", exact=True).check()  # the objects alone, in their photo colours
            page.get_by_label("Structure (floor, walls, planes)", exact=True).uncheck()
            screenshot_at(page, "#model-banner", HERE / "view-options.png")
            page.get_by_label("Instances", exact=True).check()
            page.get_by_label("Structure (floor, walls, planes)", exact=True).check()

            scene = latest_scene(app.tmp)
            x, y, instance = pixel_of_instance(scene)
            click_pixel(page, x, y, scene.view_transforms[0])
            page.locator("#selection").get_by_text(f"Selected instance {instance}").wait_for()
            screenshot_at(page, "#model-banner", HERE / "selection.png")

            reconstruct_in_page(page, example="synthetic-5")  # the seeing test VLM knows the shapes drawn there
            ask_in_page(page, "Where is the yellow cube?", vlm.url)
            screenshot_at(page, "#question", HERE / "question.png")  # the answer, its highlights and trace
    finally:
        browser.close()
        vlm.stop()
    print(f"wrote reconstruction.png, view-options.png, selection.png, question.png to {HERE}")


def viewer_screenshot(playwright) -> None:
    photos = next((folder for folder in VIEWER_PHOTOS if folder.exists()), None)
    if photos is None:
        print("viser.png skipped: the photos shared/examples-real/demo6 are not here")
        return
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=WEBGL_CHROMIUM_ARGS)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            subprocess.run([sys.executable, "-m", "iggt", "reconstruct", str(photos), "--clustering", "small",
                            "--formats", "scene", "--out", workdir], cwd=REPO_ROOT, check=True, timeout=600)
            with SceneViewer(Scene.load(Path(workdir) / "scene.npz"), ViewerConfig(port=0)) as viewer:
                viewer.color_control.value = "Instances"
                open_viewer(browser, viewer, width=1400, height=900).screenshot(path=HERE / "viser.png")
    finally:
        browser.close()
    print(f"wrote viser.png to {HERE}")


def main() -> None:
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        sys.exit("needs Debian's Chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        app_screenshots(playwright)
        viewer_screenshot(playwright)


if __name__ == "__main__":
    main()
