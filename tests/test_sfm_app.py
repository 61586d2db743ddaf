"""The app's Scale tab in Chromium: two clicks and a typed length put every size in metres."""
from __future__ import annotations

import time

import numpy as np
import pytest

from helpers import write_synthetic_photos
from tools.app_page import CHROMIUM, latest_scene, open_page, reconstruct_in_page
from tools.app_server import running_app

pytestmark = pytest.mark.browser

if CHROMIUM is None:
    pytest.skip("browser tests need Debian's Chromium (`chromium` command or /usr/bin/chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint):
    with running_app(tmp_path_factory.mktemp("app"), tiny_checkpoint, startup_timeout_s=300) as running:
        yield running


def rescaled_download(app, timeout_s: float = 120.0):
    """The scene file offered for download once it is the rescaled one (the files are written anew)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            scene = latest_scene(app.tmp)
            if scene.units == "m" or time.monotonic() > deadline:
                return scene
        except (ValueError, OSError):  # between removing the old files and writing the new ones
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def click_share(page, x: float, y: float) -> None:
    """Click the Scale tab's picture at (x, y) shares of its width and height."""
    image = page.locator("#scale-view img").first
    box = image.bounding_box()
    image.click(position={"x": x * box["width"], "y": y * box["height"]})


def test_two_clicks_and_a_length_give_metres(browser, app, tmp_path):
    photos = write_synthetic_photos(tmp_path / "photos", seed=3, views=3)
    page = open_page(browser, app.url)
    reconstruct_in_page(page, photos=photos)
    before = latest_scene(app.tmp)
    try:
        scale_in_page(page, app, before, tmp_path)
    finally:
        page.close()


def scale_in_page(page, app, before, tmp_path) -> None:
    page.get_by_role("tab", name="Depth").click()
    page.locator("#depth-scale").get_by_text("depth in model units").wait_for()

    page.get_by_role("tab", name="Scale").click()
    page.locator("#scale-view img").first.wait_for()
    page.locator("#scale-status").get_by_text("model units").wait_for()
    page.locator("#scale-apply").click()
    page.locator("#scale-status").get_by_text("Click two points").wait_for()  # nothing clicked yet
    click_share(page, 0.3, 0.6)
    page.locator("#scale-status").get_by_text("second point").wait_for()
    click_share(page, 0.7, 0.6)
    page.locator("#scale-status").get_by_text("Type their distance").wait_for()
    page.screenshot(path=str(tmp_path / "scale-two-points.png"), full_page=True)

    page.locator("#scale-length input").fill("0")
    page.locator("#scale-apply").click()
    page.locator("#scale-status").get_by_text("must be positive").wait_for()

    page.locator("#scale-length input").fill("2.5")
    page.locator("#scale-apply").click()
    page.locator("#scale-status").get_by_text("Scale set").wait_for()
    page.screenshot(path=str(tmp_path / "scale-set.png"), full_page=True)
    page.get_by_role("tab", name="Depth").click()
    page.locator("#depth-scale").get_by_text("depth in m,").wait_for()

    after = rescaled_download(app)
    assert after.units == "m" and before.units == "model units"
    if after.instances is not None and after.instances.count:  # the tiny random model may find none
        page.get_by_role("tab", name="Views and instances").click()
        page.locator("#instances").get_by_text("size (m)").wait_for()
    factor = after.depth[after.depth > 0].mean() / before.depth[before.depth > 0].mean()
    assert np.allclose(after.depth, before.depth * factor, rtol=1e-4)
    # the two clicked points are 2.5 m apart now (the clicks' pixels, as the photo has them)
    height, width = after.view_transforms[0].original_size
    ends = []
    for share in (0.3, 0.7):
        y, x = after.view_transforms[0].from_original(np.array(0.6 * height), np.array(share * width))
        ends.append(after.points_from_depth[0, int(y), int(x)])
    assert np.linalg.norm(ends[0] - ends[1]) == pytest.approx(2.5, rel=0.1)
    assert "Traceback" not in page.content()
