"""Driving the project's pages (the Gradio app, the viser viewer) in Debian's Chromium through
Playwright, as a person would: shared by the browser tests, `benchmarks/app_latency.py --browser`
and `assets/screenshots/make_screenshots.py`."""
from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from iggt.scene import Scene, ViewTransform

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WEBGL_CHROMIUM_ARGS = [*CHROMIUM_ARGS, "--enable-unsafe-swiftshader"]
"""For the viser viewer, which needs WebGL: SwiftShader draws it without a GPU."""
TIMEOUT_MS = 60_000


def open_page(browser, url: str, width: int = 1400, height: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#reconstruct")
    page.evaluate(WATCH_STATUS)
    return page


@contextlib.contextmanager
def page_of(browser, url: str, width: int = 1400, height: int = 1000):
    """`open_page`, closed afterwards (its session's files go with it)."""
    page = open_page(browser, url, width, height)
    try:
        yield page
    finally:
        page.close()


def reconstruct_in_page(page, photos: list[Path] | None = None, example: str | None = None) -> str:
    """Upload photos through the file input and press Reconstruct, or click an example's thumbnail
    (which reconstructs it at once); return the status once the downloads are ready."""
    if photos:
        page.locator("#upload input[type=file]").set_input_files([str(p) for p in photos])
        count = f"{len(photos)} photo" + ("s" if len(photos) > 1 else "")
        page.locator("#inputs-preview").get_by_text(count).first.wait_for()  # uploaded (long names are cut short)
    if example:
        page.locator("#examples img").and_(page.get_by_alt_text(example, exact=True)).click()
    else:
        page.locator("#reconstruct").click()
    return wait_for_result(page)


WATCH_STATUS = """() => {
  window.iggtResultPending = false;
  new MutationObserver(() => {
    const status = document.querySelector('#status');
    if (status && status.innerText.includes('preparing the ')) window.iggtResultPending = true;
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
"""Installed by `open_page`: notes every result shown ("preparing the ..."), however briefly, so that
`wait_for_result` cannot miss one between two polls."""


def wait_for_result(page) -> str:
    """The status once a reconstruction (or re-clustering) shows its result and its downloads are written:
    the result first ("preparing the pictures and downloads"), the download files after ("downloads ready")."""
    page.wait_for_function("() => window.iggtResultPending && "
                           "document.querySelector('#status').innerText.includes('downloads ready')")
    page.evaluate("() => { window.iggtResultPending = false; }")
    return page.locator("#status").inner_text()


def latest_scene(server_tmp: Path) -> Scene:
    """The scene file the app offered for download last (the server's own copy)."""
    return Scene.load(max(server_tmp.rglob("downloads/scene.npz"), key=lambda p: p.stat().st_mtime))


def pixel_of_instance(scene: Scene, view: int = 0) -> tuple[int, int, int]:
    """(x, y, id) of a pixel deep inside the largest object (an instance not marked structure; any
    instance when all are) seen in ``view``: what a person clicks to pick something out."""
    from scipy import ndimage

    labels = scene.instances.labels[view]
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    objects = [k for k, i in enumerate(ids) if not scene.instances.info[i].structure] or list(range(len(ids)))
    chosen = ids[max(objects, key=lambda k: counts[k])]
    inside = ndimage.distance_transform_edt(np.pad(labels == chosen, 1))[1:-1, 1:-1]  # the border counts as outside
    y, x = np.unravel_index(np.argmax(inside), inside.shape)
    return int(x), int(y), int(chosen)


def click_pixel(page, x: int, y: int, transform: ViewTransform) -> None:
    """Click the view (drawn on its photo) at model-input pixel (x, y), whatever size the page shows it at."""
    image = page.locator("#click-view img").first
    box = image.bounding_box()
    photo_y, photo_x = transform.to_original(y + 0.5, x + 0.5)
    image.click(position={"x": float(photo_x) / transform.original_size[1] * box["width"],
                          "y": float(photo_y) / transform.original_size[0] * box["height"]})


def ask_in_page(page, question: str, base_url: str, mode: str = "agent", api_key: str = "") -> str:
    page.get_by_role("tab", name="Ask").click()
    page.locator("#question textarea").fill(question)
    page.locator("#backend input").click()
    page.get_by_role("option", name="OpenAI-compatible server").click()
    page.locator("#base-url textarea, #base-url input").first.fill(base_url)
    page.locator("#api-key input").fill(api_key)
    page.get_by_label(mode, exact=True).check()
    page.evaluate(WATCH_ANSWER)
    page.locator("#ask").click()
    page.wait_for_function("() => window.iggtAnswerChanged && !document.querySelector('#answer .progress-text') && "
                           "document.querySelector('#answer').innerText.includes('Instances:')")
    return page.locator("#answer").inner_text()


WATCH_ANSWER = """() => {
  window.iggtAnswerChanged = false;
  new MutationObserver((_, observer) => { window.iggtAnswerChanged = true; observer.disconnect(); })
    .observe(document.querySelector('#answer'), {subtree: true, childList: true, characterData: true});
}"""
"""Installed by `ask_in_page` before it asks: notes that the answer changed, so that a second question
on the page does not return the answer to the first."""


def screenshot_at(page, selector: str, path: Path) -> None:
    """A viewport-sized screenshot with ``selector`` scrolled to the top of the window."""
    page.locator(selector).first.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(3000)  # let the 3D viewer and images draw
    page.screenshot(path=str(path))


def open_viewer(browser, viewer, width: int = 1400, height: int = 900):
    """The page of a running `iggt.viewer.SceneViewer` with the scene drawn (its points arrived) and
    viser's notices closed."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(viewer.url)
    page.get_by_text(f"{len(viewer.cloud.points):,} points").wait_for()
    for close in page.locator(".mantine-Notification-closeButton").all():
        close.click()
    time.sleep(2)  # a few frames of software rendering
    return page
