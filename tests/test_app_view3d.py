"""The page's 3D view, its VGGT view options, structure and masks at photo resolution, in Chromium.

The real app with the shipped small model on the bundled real photos (`real-room-6-views`) and a
synthetic room, driven in Debian's Chromium through Playwright (issue 12, points 1, 3, 6, 7).
What the 3D view shows is read from its canvas pixels, as a person would see it.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO_ROOT
from iggt.reconstruct import DEFAULT_CHECKPOINT
from tools.app_page import CHROMIUM, ask_in_page, open_page, reconstruct_in_page, wait_for_result
from tools.app_server import running_app

pytestmark = pytest.mark.browser

if CHROMIUM is None:
    pytest.skip("browser tests need Debian's Chromium (`chromium` command or /usr/bin/chromium); "
                "install it with `apt-get install chromium`", allow_module_level=True)

REAL_PHOTOS = sorted((REPO_ROOT / "assets" / "examples" / "real-room-6-views").glob("*.jpg"))
CHECK = "Is the object outlined in magenta"
"""How a yes/no check about one instance starts (naming requests outline in magenta too)."""
BACKGROUND_RGB = np.array([30, 32, 38])
"""The viewer's clear colour (#1e2026)."""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # At 112 px, 6 views give fewer points than the viewer's cap (`demo.viewer3d.MAX_POINTS`), so a
    # filter that removes points shows in their count; at the shipped model's 224 px the cloud is capped.
    with running_app(tmp_path_factory.mktemp("app"), DEFAULT_CHECKPOINT, size=112) as running:
        yield running


@pytest.fixture(scope="module")
def marked_photos(tmp_path_factory) -> list[Path]:
    """The real photos with a sky-blue band along the top, a black and a white patch: something for
    every background filter to remove."""
    folder = tmp_path_factory.mktemp("marked")
    written = []
    for path in REAL_PHOTOS:
        pixels = np.array(Image.open(path).convert("RGB"))
        height, width = pixels.shape[:2]
        pixels[: height // 5] = np.linspace([120, 170, 230], [170, 205, 245], height // 5).astype(np.uint8)[:, None]
        pixels[-height // 4:, : width // 4] = 0
        pixels[-height // 4:, -width // 4:] = 255
        written.append(folder / path.name.replace(".jpg", ".png"))
        Image.fromarray(pixels).save(written[-1])
    return written


def canvas_pixels(page) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(page.locator("#viewer canvas").screenshot())).convert("RGB"))


def lit(pixels: np.ndarray) -> np.ndarray:
    """Pixels that are not the viewer's background."""
    return np.abs(pixels.astype(int) - BACKGROUND_RGB).sum(axis=-1) > 24


def scenes_drawn(page) -> int:
    return int(page.locator("#viewer canvas").get_attribute("data-scenes") or 0)


def changed_by(page, action) -> tuple[bool, int, int]:
    """Run ``action`` on the page; whether the drawn cloud changed, and the point counts before and after."""
    before, points = canvas_pixels(page), int(page.locator("#viewer canvas").get_attribute("data-points"))
    drawn = scenes_drawn(page)
    action()
    page.wait_for_function(f"() => Number(document.querySelector('#viewer canvas').dataset.scenes) > {drawn}")
    after = canvas_pixels(page)
    return bool((before != after).any()), points, int(page.locator("#viewer canvas").get_attribute("data-points"))


def test_points_fill_the_view_from_the_first_camera(browser, app, tmp_path):
    page = open_page(browser, app.url)
    reconstruct_in_page(page, photos=REAL_PHOTOS)
    canvas = page.locator("#viewer canvas")
    assert int(canvas.get_attribute("data-points")) > 20_000
    assert page.locator(".iggt-viewer-thinned").inner_text() == ""  # below the cap: nothing to say
    pixels = canvas_pixels(page)
    page.screenshot(path=str(tmp_path / "view3d.png"))
    height, width = lit(pixels).shape
    centre = lit(pixels)[height // 4: 3 * height // 4, width // 4: 3 * width // 4]
    assert centre.mean() > 0.9, "the scene does not fill the middle of the view (start pose, point size)"
    assert lit(pixels).mean() > 0.4

    # the camera turns with a drag and comes back to camera 1 with a double click
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 150, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert (canvas_pixels(page) != pixels).any()
    canvas.dblclick()
    assert np.abs(canvas_pixels(page).astype(int) - pixels).mean() < 1


def test_each_view_option_changes_the_cloud(browser, app, marked_photos):
    page = open_page(browser, app.url)
    reconstruct_in_page(page, photos=marked_photos)
    options = {
        "colours RGB": lambda: page.get_by_label("RGB", exact=True).check(),
        "point-map branch": lambda: page.get_by_label("Point map", exact=True).check(),
        "depth + cameras": lambda: page.get_by_label("Depth + cameras", exact=True).check(),
        "black background": lambda: page.get_by_label("Black background", exact=True).check(),
        "white background": lambda: page.get_by_label("White background", exact=True).check(),
        "sky": lambda: page.get_by_label("Sky", exact=True).check(),
        "no cameras": lambda: page.get_by_label("Cameras", exact=True).uncheck(),
    }
    removes_points = {"black background", "white background", "sky"}
    for name, action in options.items():
        changed, before, after = changed_by(page, action)
        assert changed, f"'{name}' did not change the 3D view"
        if name in removes_points:
            assert after < before, f"'{name}' removed no points"

    def one_frame():
        page.locator("#frame input").click()
        page.get_by_role("option", name=f"2: {marked_photos[1].name}").click()

    changed, before, after = changed_by(page, one_frame)
    assert changed and after < before / 3, "one frame should show about a sixth of the points"

    # Structure hidden last: at 112 px this model may take every instance of a room for structure,
    # and a view with no point left says why instead of staying blank.
    changed, before, after = changed_by(
        page, lambda: page.get_by_label("Structure (floor, walls, planes)", exact=True).uncheck())
    assert changed and after < before, "hiding structure removed no points"
    note = page.locator(".iggt-viewer-empty")
    assert note.is_visible() == (after == 0)
    if after == 0:
        assert "No point passes the options" in note.inner_text()


def test_structure_is_left_out_of_a_count_question(browser, app, vlm_server):
    page = open_page(browser, app.url)
    status = reconstruct_in_page(page, example="synthetic-7")
    instances, structure = map(int, re.search(r"(\d+) instances \((\d+) of them structure", status).groups())
    assert 0 < structure < instances
    before = len(vlm_server.state.requests)
    ask_in_page(page, "How many cubes are there?", vlm_server.url, mode="verify")
    trace = page.locator("#trace").inner_text()
    assert f"left out {structure} structure instance(s)" in trace
    left_out = set(map(int, re.search(r"structure instance\(s\) \(floor, walls, large planes\): \[([\d, ]+)\]",
                                      trace).group(1).split(",")))
    rechecked = set(map(int, re.findall(r"recheck: #(\d+):", trace)))  # answers whose names contradict the target
    assert not rechecked & left_out, "a structure instance was rechecked"
    questions = [r for r in vlm_server.state.requests[before:] if CHECK in json.dumps(r["body"])]
    assert len(questions) == instances - structure + len(rechecked), "the VLM was asked about floor, walls or planes"

    before = len(vlm_server.state.requests)
    ask_in_page(page, "Is there a floor?", vlm_server.url, mode="verify")
    page.locator("#trace").get_by_text("outlined in magenta a floor").first.wait_for()  # the new answer
    assert "left out" not in page.locator("#trace").inner_text()
    questions = [r for r in vlm_server.state.requests[before:] if CHECK in json.dumps(r["body"])]
    assert len(questions) == instances, "a question about the floor is asked about every instance"


PROGRESS_SHOWN = """() => {
  window.iggtProgressShown = {};
  new MutationObserver(() => {
    for (const bar of document.querySelectorAll('.progress-text, .eta-bar')) {
      const owner = (bar.closest('[id]') || {}).id;
      if (bar.getClientRects().length && !(owner in window.iggtProgressShown))
        window.iggtProgressShown[owner] = performance.now();
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
"""Notes when each component (by its element id) first shows a progress tracker, on the page's clock."""


def test_only_the_3d_view_shows_progress_until_it_is_drawn(browser, app):
    """A tracker redraws its timer every frame: one on each of the reconstruction's twelve outputs cost
    the browser about 0.4 CPU s a run, taken from the model on a small machine (docs/app.md, "Speed")."""
    page = open_page(browser, app.url)
    page.locator("#upload input[type=file]").set_input_files([str(p) for p in REAL_PHOTOS])
    page.locator("#inputs-preview").get_by_text(f"{len(REAL_PHOTOS)} photos").wait_for()
    page.wait_for_function("() => ![...document.querySelectorAll('.progress-text, .eta-bar')]"
                           ".some(bar => bar.getClientRects().length)")  # the upload's preview is done
    page.evaluate(PROGRESS_SHOWN)
    page.locator("#reconstruct").click()
    wait_for_result(page)
    drawn_at = float(page.locator("#viewer canvas").get_attribute("data-drawn-at"))
    shown = page.evaluate("() => window.iggtProgressShown")
    assert "viewer" in shown and {owner for owner, at in shown.items() if at < drawn_at} <= {"viewer"}, shown
    page.close()


def test_masks_at_the_photos_resolution(browser, app):
    page = open_page(browser, app.url)
    reconstruct_in_page(page, photos=REAL_PHOTOS)
    natural = page.locator("#click-view img").first.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [512, 384], "the view to click is drawn on the photo (640x480) at 512 px"

    masks = zipfile.ZipFile(max(app.tmp.rglob("downloads/masks.zip"), key=lambda p: p.stat().st_mtime))
    ids = np.array(Image.open(io.BytesIO(masks.read(next(n for n in masks.namelist() if n.endswith("_ids.png"))))))
    assert ids.shape == (480, 640), "exported masks are at the photo's own resolution"
    # not blocky: label changes along rows happen at most columns, not only where a 112-px pixel ends
    changes = np.flatnonzero((ids[:, 1:] != ids[:, :-1]).any(axis=0))
    assert len(changes) > 0.5 * 640

    page.get_by_label("224 px", exact=False).check()  # a larger model input (the trained size): the scene is finer
    assert "at 224x" in reconstruct_in_page(page)
