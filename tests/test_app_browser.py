"""The real web app driven in Debian's Chromium through Playwright, as a person would use it.

`test_page_from_upload_to_answer` runs by default when `chromium` is installed (tiny random
model, 112 px input). The page helpers are in `tools/app_page.py`; the README screenshots are made by
``assets/screenshots/make_screenshots.py`` with the same helpers.
"""
from __future__ import annotations

import time

import pytest

from helpers import write_synthetic_photos
from tools.app_page import (CHROMIUM, ask_in_page, click_pixel, latest_scene, open_page, pixel_of_instance,
                            reconstruct_in_page)
from tools.app_server import running_app

pytestmark = pytest.mark.browser

API_KEY = "sk-browser-Q8vR2SECRETn4"

if CHROMIUM is None:
    pytest.skip("browser tests need Debian's Chromium (`chromium` command or /usr/bin/chromium); "
                "install it with `apt-get install chromium`", allow_module_level=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint):
    # GRADIO_IS_E2E_TEST: Gradio drops a closed tab's state after 1 s instead of an hour.
    with running_app(tmp_path_factory.mktemp("app"), tiny_checkpoint,
                     extra_env={"GRADIO_IS_E2E_TEST": "1"}) as running:
        yield running


def test_page_from_upload_to_answer(browser, app, vlm_server, tmp_path):
    photos = write_synthetic_photos(tmp_path / "photos", seed=3, views=3)
    page = open_page(browser, app.url)
    assert "IGGT tiny" in page.locator("#model-banner").inner_text()

    status = reconstruct_in_page(page, photos=photos)
    assert "3 views" in status and "model" in status and "display" in status

    # re-rendered without running the model again (the random model's points may lie outside the view,
    # so the new scene is told by the viewer's count of scenes drawn, not by its pixels)
    drawn = page.locator("#viewer canvas").get_attribute("data-scenes")
    page.get_by_label("RGB", exact=True).check()
    page.wait_for_function(f"() => document.querySelector('#viewer canvas').dataset.scenes !== '{drawn}'")
    assert status == page.locator("#status").inner_text()

    scene = latest_scene(app.tmp)
    x, y, instance = pixel_of_instance(scene)
    before = page.locator("#click-view img").first.screenshot()
    click_pixel(page, x, y, scene.view_transforms[0])
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
