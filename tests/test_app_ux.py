"""What a person sees when things go wrong or right: the error boundary, lasting failure messages
that keep earlier results, the input preview, one photo, answers beside the question, and a
failing VLM that says so first.

The page tests drive the real app (the shipped small model when present) in Debian's Chromium;
the API tests use `gradio_client`; the VLM is the local seeing server. Screenshots of each step
are written to the test's temporary folder.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from demo.handlers import SOFTWARE_FAULT, user_errors
from demo.services import VLMService
from grounding.agent import answer
from grounding.evaluation import benchmark_scene
from grounding.spatial import SpatialError
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM, VLMUnavailable, served_models
from helpers import write_synthetic_photos
from iggt.errors import IGGTError
from iggt.views import InputError
from tools.app_page import ask_in_page, open_page, reconstruct_in_page
from tools.app_server import free_port, running_app

CHECK = "Is the object outlined in magenta"
"""How a yes/no check about one instance starts (naming requests outline in magenta too)."""
COMPATIBLE = "OpenAI-compatible server"
KEPT_S = 15
"""How long a failure message must stay on the page (a toast is gone after about 10 s)."""


# -- the error boundary ---------------------------------------------------------------------

@pytest.mark.parametrize("error", [InputError("holiday.jpg is not an image"), SpatialError("no instance 7")])
def test_the_projects_own_errors_are_shown_as_their_message(error, caplog):
    @user_errors
    def handler():
        raise error

    with pytest.raises(gr.Error) as raised:
        handler()
    assert raised.value.message == str(error)
    assert not [r for r in caplog.records if r.exc_info], "a user's mistake was logged as a fault"


@pytest.mark.parametrize("error", [KeyError("labels"), ValueError("operands could not be broadcast")])
def test_anything_else_is_a_software_fault_logged_with_its_traceback(error, caplog):
    @user_errors
    def handler():
        raise error

    with caplog.at_level(logging.ERROR, logger="demo.handlers"), pytest.raises(gr.Error) as raised:
        handler()
    assert raised.value.message == SOFTWARE_FAULT and "not of your input" in SOFTWARE_FAULT
    assert str(error) not in raised.value.message
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and logged[0].exc_info[1] is error


# -- the VLM failing first and fast -----------------------------------------------------------

def test_the_server_says_which_models_it_serves(vlm_server):
    assert served_models(vlm_server.url)[0] == "seeing"
    assert VLMService().backend(COMPATIBLE, base_url=vlm_server.url, model=None, api_key=None).name == "openai:seeing"
    with pytest.raises(VLMUnavailable, match="cannot reach the VLM server"):
        served_models(f"http://127.0.0.1:{free_port()}/v1")


def test_a_server_that_lists_no_models_needs_a_model_name(vlm_server):
    unlisted = vlm_server.url.removesuffix("/v1") + "/other"  # answers 404 to GET /other/models
    assert served_models(unlisted) == []
    with pytest.raises(IGGTError, match="does not say which models it serves: enter the model name"):
        VLMService().backend(COMPATIBLE, base_url=unlisted, model=None, api_key=None)
    assert VLMService().backend(COMPATIBLE, base_url=unlisted, model="seeing", api_key=None).name == "openai:seeing"


@pytest.mark.parametrize("mode", ["verify", "agent"])
@pytest.mark.parametrize("failure", ["HTTP 500", "cannot reach the server"])
def test_a_failing_vlm_leads_the_answer(vlm_server, failure, mode):
    _, scene = benchmark_scene(3)
    url = vlm_server.url if failure == "HTTP 500" else f"http://127.0.0.1:{free_port()}/v1"
    broken = OpenAIVLM(OpenAIConfig(model="fail-500-100000", base_url=url, max_retries=0))
    result = answer(scene, "Where is the red cube?", broken, mode=mode)
    assert result.text.startswith(f"The VLM failed: {failure}") and result.instance_ids == []
    assert "No instance matches" not in result.text


def test_an_answer_with_some_failed_requests_says_so_first(vlm_server):
    _, scene = benchmark_scene(3)
    flaky = OpenAIVLM(OpenAIConfig(model="fail-500-2", base_url=vlm_server.url, max_retries=0))
    result = answer(scene, "Where is the red cube?", flaky, mode="verify")
    assert result.text.startswith(f"The VLM failed in 2 of {result.vlm_calls} requests (HTTP 500")
    assert "this answer may be incomplete" in result.text


# -- the app --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app with its default model (the shipped small one), so answers about the examples make sense."""
    with running_app(tmp_path_factory.mktemp("app"), None) as running:
        yield running


@pytest.fixture
def page(browser, app):
    page = open_page(browser, app.url, width=1400, height=1100)
    yield page
    page.close()


def choose_files(page, paths: list[Path]) -> None:
    """Replace the upload list with ``paths`` (the file input adds to what is there)."""
    clear = page.locator("#upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#upload input[type=file]").set_input_files([str(p) for p in paths])


def shown_results(page) -> tuple[list[str], str]:
    """What the page shows of a reconstruction: the overlay pictures and the downloads list."""
    overlays = page.locator("#overlays img").evaluate_all("images => images.map(image => image.src)")
    return overlays, page.locator("#downloads").inner_text()


def test_api_uses_the_model_the_server_serves_and_an_unreachable_vlm_fails_first(app, vlm_server):
    client = Client(app.url, verbose=False)
    client.predict(files=None, video=None, example="synthetic-5", api_name="/reconstruct")
    before = len(vlm_server.state.requests)
    client.predict(question="Where is the red cube?", backend_choice=COMPATIBLE, base_url=vlm_server.url,
                   model_name="", api_key="", mode="verify", api_name="/ask")
    assert {r["body"]["model"] for r in vlm_server.state.requests[before:]} == {"seeing"}

    with pytest.raises(AppError, match="^The VLM failed: cannot reach the VLM server"):
        client.predict(question="Where is the red cube?", backend_choice=COMPATIBLE,
                       base_url=f"http://127.0.0.1:{free_port()}/v1", model_name="", api_key="", mode="agent",
                       api_name="/ask")


@pytest.mark.browser
def test_a_failure_stays_in_the_status_names_the_bad_file_and_keeps_the_results(page, tmp_path):
    photos = write_synthetic_photos(tmp_path / "photos", seed=3, views=3)
    choose_files(page, photos)
    preview = page.locator("#inputs-preview")
    preview.get_by_text("3 photos to reconstruct").wait_for()
    assert preview.locator("img").count() == 3
    page.screenshot(path=str(tmp_path / "1-preview.png"))
    status = reconstruct_in_page(page)
    results = shown_results(page)
    assert len(results[0]) == 3

    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is a text file, not a photo")
    choose_files(page, [photos[0], bad, photos[1]])
    page.locator("#inputs-note").get_by_text("holiday.jpg is not an image").wait_for()
    assert "holiday.jpg is not an image" in preview.locator("img").first.get_attribute("alt")  # the first tile
    page.locator("#reconstruct").click()
    shown = page.locator("#status")
    shown.get_by_text("Could not reconstruct").wait_for()
    page.wait_for_timeout(KEPT_S * 1000)
    page.screenshot(path=str(tmp_path / "2-failed.png"), full_page=True)

    assert "holiday.jpg is not an image" in shown.inner_text() and status not in shown.inner_text()
    assert shown_results(page) == results, "the earlier results were wiped"
    assert not page.get_by_text("Error", exact=True).count(), "error badges over the panels"


@pytest.mark.browser
def test_one_photo_is_one_view(page, tmp_path):
    photo = write_synthetic_photos(tmp_path / "photos", seed=5, views=1)
    choose_files(page, photo)
    page.locator("#inputs-preview").get_by_text("1 photo to reconstruct").wait_for()
    status = reconstruct_in_page(page)
    page.screenshot(path=str(tmp_path / "one-photo.png"), full_page=True)
    assert "1 view " in status and "1 views" not in status
    assert not page.locator("#view-number").is_visible(), "a view slider for a single view"


@pytest.mark.browser
def test_the_answer_and_its_highlight_are_beside_the_question(page, vlm_server, tmp_path):
    reconstruct_in_page(page, example="synthetic-5")
    assert "name" not in page.locator("#instances th").all_inner_texts(), "an empty name column"
    page.get_by_role("tab", name="Ask").click()
    assert "verify:" in page.locator("#mode").inner_text() and "agent:" in page.locator("#mode").inner_text()

    text = ask_in_page(page, "Where is the yellow cube?", vlm_server.url)  # model name left empty
    highlights = page.locator("#answer-views img")
    highlights.first.wait_for()
    page.locator("#answer-views").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "1-answer.png"))
    found = text.split("Instances:")[1].split("\n")[0].strip()
    assert found != "none" and "yellow cube" in found, text  # named in words, not only by id
    assert highlights.first.is_visible() and "yellow cube" in highlights.first.get_attribute("alt")
    assert "Answered by openai:seeing" in text
    assert "name" in page.locator("#instances th").all_inner_texts()
    shown = highlights.evaluate_all("images => images.map(image => image.src)")

    page.locator("#base-url textarea, #base-url input").first.fill(f"http://127.0.0.1:{free_port()}/v1")
    page.locator("#ask").click()
    message = page.locator("#answer").get_by_text("The VLM failed: cannot reach the VLM server")
    message.wait_for()
    page.screenshot(path=str(tmp_path / "2-unreachable.png"), full_page=True)
    assert page.locator("#answer").inner_text().startswith("⚠️ No answer: The VLM failed")
    assert highlights.evaluate_all("images => images.map(image => image.src)") == shown


@pytest.mark.browser
def test_verify_mode_checks_the_noun_phrase_of_a_count(page, vlm_server, tmp_path):
    """Issue 25, item 4: verify mode asks about "a cube", never the whole question."""
    reconstruct_in_page(page, example="synthetic-5")
    before = len(vlm_server.state.requests)
    ask_in_page(page, "How many cubes are there?", vlm_server.url, mode="verify")
    checks = [json.dumps(r["body"]) for r in vlm_server.state.requests[before:] if CHECK in json.dumps(r["body"])]
    assert checks and not [c for c in checks if "How many" in c], "the whole question went into the check"
    assert any("outlined in magenta a cube" in c for c in checks)


@pytest.fixture(scope="module")
def newcomer_app(tmp_path_factory):
    """The app as the README's command starts it: the shipped model at its own input size (224 px; the
    other tests here run it at 112 px, which is faster)."""
    with running_app(tmp_path_factory.mktemp("newcomer-app"), None, size=None) as running:
        yield running


@pytest.mark.browser
@pytest.mark.parametrize("mode", ["verify", "agent"])
@pytest.mark.parametrize("which_app", ["newcomer_app", pytest.param("app", marks=pytest.mark.xfail(
    strict=True, reason="known miss at --size 112: the model splits the pyramid into faces at that input and the "
                        "seeing test VLM, which knows cubes, spheres and cones only, takes a face for an orange "
                        "cube: the count is 2"))])
def test_a_count_on_synthetic_5_finds_its_one_cube(browser, vlm_server, mode, which_app, request, tmp_path):
    """Issue 25, item 4, asked as a newcomer on synthetic-5, whose views show one cube."""
    page = open_page(browser, request.getfixturevalue(which_app).url, width=1400, height=1100)
    reconstruct_in_page(page, example="synthetic-5")
    text = ask_in_page(page, "How many cubes are there?", vlm_server.url, mode=mode)
    page.screenshot(path=str(tmp_path / "count.png"), full_page=True)
    page.close()
    count = re.sub(r"#\d+", "", text.strip().splitlines()[0])  # "There is 1 cube: #3 yellow cube."
    assert re.search(r"\b(1|one)\b", count, re.IGNORECASE) and not re.search(r"\b[2-9]\b", count), text


@pytest.mark.browser
@pytest.mark.parametrize("mode", ["verify", "agent"])
def test_a_where_answer_says_where_and_names_the_instance(page, vlm_server, mode, tmp_path):
    """Issue 25, item 4: "where" is answered with a place (views, where in them), the instance by name."""
    reconstruct_in_page(page, example="synthetic-5")
    text = ask_in_page(page, "Where is the yellow cube?", vlm_server.url, mode=mode)
    page.screenshot(path=str(tmp_path / "where.png"), full_page=True)
    answer = text.split("Instances:")[0]
    assert "view" in answer and not re.fullmatch(r"\W*instance \[?\d+\]?\W*", answer.strip()), text
    found = text.split("Instances:")[1].split("\n")[0]
    assert re.search(r"#\d+ yellow cube", found), text  # the name, not only "#5"


@pytest.mark.browser
def test_the_3d_view_says_when_it_thins_the_cloud(page, tmp_path):
    """Issue 22: the app's 3D view draws at most `MAX_POINTS` points and says so when it thins."""
    from demo.viewer3d import MAX_POINTS

    reconstruct_in_page(page, photos=write_synthetic_photos(tmp_path, views=16))  # 16 x 112 x 112 px
    canvas = page.locator("#viewer canvas")
    drawn = int(canvas.get_attribute("data-scenes"))
    page.get_by_label("Hide unassigned points", exact=True).uncheck()  # every confident pixel
    page.wait_for_function(f"() => Number(document.querySelector('#viewer canvas').dataset.scenes) > {drawn}")
    assert int(canvas.get_attribute("data-points")) == MAX_POINTS
    thinned = page.locator(".iggt-viewer-thinned").inner_text()
    assert re.search(rf"{MAX_POINTS:,} of [\d,]+ points drawn \(at most {MAX_POINTS:,}\)", thinned), thinned
