"""Write the README's app screenshots: ``assets/screenshots/{reconstruction,selection,question}.png``.

The real app with the shipped small model, driven in Debian's Chromium as a person would use it
(`tools/app_page.py`, as the browser tests do): reconstruct the bundled synthetic-5 example,
click an instance, ask a question of the seeing test VLM server. Needs `chromium` and Playwright
(requirements-dev.txt). Run from the repository root:
``PYTHONPATH=. python assets/screenshots/make_screenshots.py``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grounding.vlm.seeing_server import start_test_server
from iggt.reconstruct import DEFAULT_CHECKPOINT
from tools.app_page import (CHROMIUM, CHROMIUM_ARGS, ask_in_page, click_pixel, latest_scene, open_page,
                            pixel_of_instance, reconstruct_in_page, screenshot_at)
from tools.app_server import running_app

HERE = Path(__file__).resolve().parent


def main() -> None:
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        sys.exit("needs Debian's Chromium: apt-get install chromium")
    vlm = start_test_server()
    try:
        with tempfile.TemporaryDirectory() as workdir, sync_playwright() as playwright, \
                running_app(Path(workdir), DEFAULT_CHECKPOINT, size=None) as app:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = open_page(browser, app.url, width=1400, height=1200)
            reconstruct_in_page(page, example="synthetic-5")
            screenshot_at(page, "#model-banner", HERE / "reconstruction.png")

            scene = latest_scene(app.tmp)
            x, y, instance = pixel_of_instance(scene)
            click_pixel(page, x, y, scene.view_transforms[0])
            page.locator("#selection").get_by_text(f"Selected instance {instance}").wait_for()
            screenshot_at(page, "#model-banner", HERE / "selection.png")

            ask_in_page(page, "Where is the yellow cube?", vlm.url)
            screenshot_at(page, "#model-banner", HERE / "question.png")
            browser.close()
    finally:
        vlm.stop()
    print(f"wrote {', '.join(name + '.png' for name in ('reconstruction', 'selection', 'question'))} to {HERE}")


if __name__ == "__main__":
    main()
