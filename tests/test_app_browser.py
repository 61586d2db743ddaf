"""The real web app driven in Debian's Chromium through Playwright, as a person would use it.

`test_page_from_upload_to_answer` runs by default when `chromium` is installed (tiny random
model, 112 px input). `test_readme_screenshots` (``-m slow``) writes the README screenshots
into ``assets/screenshots/`` with the shipped small model when it exists.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, running_app, write_synthetic_photos
from iggt.scene import Scene

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO_ROOT / "assets" / "screenshots"
SHIPPED_MODEL = REPO_ROOT / "assets" / "iggt-small"
TIMEOUT_MS = 60_000
API_KEY = "sk-browser-Q8vR2SECRETn4"

if CHROMIUM is None:
    pytest.skip("browser tests need Debian's Chromium (`chromium` command or /usr/bin/chromium); "
                "install it with `apt-get install chromium`", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint):
    # GRADIO_IS_E2E_TEST: Gradio drops a closed tab's state after 1 s instead of an hour.
    with running_app(tmp_path_factory.mktemp("app"), tiny_checkpoint,
                     extra_env={"GRADIO_IS_E2E_TEST": "1"}) as running:
        yield running


def open_page(browser, url: str, width: int = 1400, height: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#reconstruct")
    return page


def reconstruct_in_page(page, photos: list[Path] | None = None, example: str | None = None) -> str:
    """Upload photos through the file input (or pick an example), press Reconstruct, return the status."""
    if photos:
        page.locator("#upload input[type=file]").set_input_files([str(p) for p in photos])
        for photo in photos:
            page.locator("#upload").get_by_text(photo.stem, exact=True).first.wait_for()
    if example:
        page.locator("#example input").click()
        page.get_by_role("option", name=example, exact=True).click()
    page.locator("#reconstruct").click()
    status = page.locator("#status")
    status.get_by_text("Done:").wait_for()
    return status.inner_text()


def latest_scene(server_tmp: Path) -> Scene:
    """The scene file the app offered for download last (the server's own copy)."""
    return Scene.load(max(server_tmp.rglob("downloads/scene.npz"), key=lambda p: p.stat().st_mtime))


def pixel_of_instance(scene: Scene, view: int = 0) -> tuple[int, int, int]:
    """(x, y, id) of a pixel deep inside the second-largest instance seen in ``view`` (or the largest)."""
    from scipy import ndimage

    labels = scene.instances.labels[view]
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    chosen = ids[np.argsort(counts)[::-1][min(1, len(ids) - 1)]]
    inside = ndimage.distance_transform_edt(np.pad(labels == chosen, 1))[1:-1, 1:-1]  # the border counts as outside
    y, x = np.unravel_index(np.argmax(inside), inside.shape)
    return int(x), int(y), int(chosen)


def click_pixel(page, x: int, y: int, size_hw: tuple[int, int]) -> None:
    """Click the view image at model-input pixel (x, y), whatever size the page shows it at."""
    image = page.locator("#click-view img").first
    box = image.bounding_box()
    image.click(position={"x": (x + 0.5) / size_hw[1] * box["width"], "y": (y + 0.5) / size_hw[0] * box["height"]})


def ask_in_page(page, question: str, base_url: str, mode: str = "agent", api_key: str = "") -> str:
    page.get_by_role("tab", name="Ask").click()
    page.locator("#question textarea").fill(question)
    page.locator("#backend input").click()
    page.get_by_role("option", name="OpenAI-compatible server").click()
    page.locator("#base-url textarea, #base-url input").first.fill(base_url)
    page.locator("#api-key input").fill(api_key)
    page.get_by_label(mode, exact=True).check()
    page.locator("#ask").click()
    answer = page.locator("#answer")
    answer.get_by_text("Instances:").wait_for()
    return answer.inner_text()


def test_page_from_upload_to_answer(browser, app, vlm_server, tmp_path):
    photos = write_synthetic_photos(tmp_path / "photos", seed=3, views=3)
    page = open_page(browser, app.url)
    assert "IGGT tiny" in page.locator("#model-banner").inner_text()

    status = reconstruct_in_page(page, photos=photos)
    assert "3 views" in status and "model" in status and "export" in status

    shown_model = page.locator("#viewer a[href]").first.get_attribute("href")
    page.get_by_label("RGB", exact=True).check()  # re-rendered without running the model again
    page.wait_for_function("old => document.querySelector('#viewer a[href]').href !== old", arg=shown_model)
    assert status == page.locator("#status").inner_text()

    scene = latest_scene(app.tmp)
    x, y, instance = pixel_of_instance(scene)
    before = page.locator("#click-view img").first.screenshot()
    click_pixel(page, x, y, scene.image_size)
    page.locator("#selection").get_by_text(f"Selected instance {instance}").wait_for()
    page.wait_for_function("() => !document.querySelector('#click-view .pending')")
    page.wait_for_timeout(500)
    assert page.locator("#click-view img").first.screenshot() != before, "the overlay did not change"
    assert page.locator("#instances tr[style*='bold'] td").nth(1).inner_text() == str(instance)

    answer = ask_in_page(page, "Where is the red cube?", vlm_server.url, api_key=API_KEY)
    assert answer.strip() and "Instances:" in answer
    assert "Trace" in page.locator("#trace").inner_text()
    stored = page.evaluate("() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert API_KEY not in stored and API_KEY not in page.content() and API_KEY not in app.log_text()
    page.screenshot(path=str(tmp_path / "after-question.png"), full_page=True)
    assert "Traceback" not in page.content()

    session_dirs = list(app.tmp.glob("iggt-sessions-*/session-*"))
    assert len(session_dirs) == 1
    page.close()
    for _ in range(40):  # the tab is gone: its session's files follow within seconds
        if not session_dirs[0].exists():
            break
        time.sleep(0.25)
    assert not session_dirs[0].exists(), "the closed session's files were not removed"


def screenshot_at(page, selector: str, path: Path) -> None:
    """A viewport-sized screenshot with ``selector`` scrolled to the top of the window."""
    page.locator(selector).first.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(3000)  # let the 3D viewer and images draw
    page.screenshot(path=str(path))


@pytest.mark.slow
def test_readme_screenshots(browser, tiny_checkpoint, vlm_server, tmp_path):
    """The page after a reconstruction, after a click selection and after a question, for the README
    (with the shipped small model when it exists, else the tiny random one)."""
    checkpoint = SHIPPED_MODEL if SHIPPED_MODEL.exists() else tiny_checkpoint
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_app(tmp_path, checkpoint, size=None) as app:
        page = open_page(browser, app.url, width=1400, height=1200)
        reconstruct_in_page(page, example="synthetic-5")
        screenshot_at(page, "#model-banner", SCREENSHOTS / "reconstruction.png")

        scene = latest_scene(app.tmp)
        x, y, instance = pixel_of_instance(scene)
        click_pixel(page, x, y, scene.image_size)
        page.locator("#selection").get_by_text(f"Selected instance {instance}").wait_for()
        screenshot_at(page, "#model-banner", SCREENSHOTS / "selection.png")

        ask_in_page(page, "Where is the yellow cube?", vlm_server.url)
        screenshot_at(page, "#model-banner", SCREENSHOTS / "question.png")
        page.close()
