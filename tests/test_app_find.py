"""The app's Find tab: type a query, see the matches highlighted; Label all; offline it says what to download.

The page test drives the real app (the shipped small model, 112 px) in Debian's Chromium with the seeing
test embedder (``IGGT_EMBEDDER=seeing``); the handler tests call the tab's handlers on a generated scene.
"""
from __future__ import annotations

import re
import time

import pytest

from demo.find import EmbedderService, FindHandlers, matches_markdown
from demo.session import Session
from grounding import openvocab
from grounding.embedders.seeing import COLOURS, SeeingEmbedder
from helpers import write_synthetic_photos
from iggt.data.oracle import oracle_scene
from iggt.data.synthetic import GeneratorConfig, generate_scene
from tools.app_page import CHROMIUM, ask_in_page, latest_scene, open_page, reconstruct_in_page
from tools.app_server import running_app

DISPLAY = ("Instances", 2.0, True, True, "Depth + cameras", "All", True, ())


@pytest.fixture(scope="module")
def session() -> Session:
    session = Session()
    session.new_scene(oracle_scene(generate_scene(5, GeneratorConfig(num_views=3, image_size=(128, 128),
                                                                      object_count=(3, 5)))))
    yield session
    session.close()


def test_offline_the_tab_says_what_to_download_and_nothing_breaks(session):
    find = FindHandlers(None, EmbedderService("openai/clip-vit-base-patch32"))  # not in the local cache
    message, viewer, overlays, table, kept = find.find("chair", *DISPLAY, session)
    assert "Find is offline here" in message and "hf download openai/clip-vit-base-patch32" in message
    assert "The embedding model openai/clip-vit-base-patch32" in message and "&#x27;" not in message  # as typed
    assert kept is session and session.scene.instances is not None
    assert "/" not in message.replace("openai/clip", "")  # no file system path
    message, _, _ = find.label_all("scannet20", session)
    assert "hf download" in message


def test_bad_queries_and_vocabularies_answer_in_the_tab(session):
    find = FindHandlers(None, EmbedderService("seeing"))
    assert "the query is empty" in find.find("   ", *DISPLAY, session)[0]
    assert "has no class names" in find.label_all(" , ", session)[0]
    assert "Reconstruct a scene first" in find.find("chair", *DISPLAY, None)[0]


def test_label_all_fills_the_label_column(session):
    find = FindHandlers(None, EmbedderService("seeing"))
    message, table, _ = find.label_all("cube, cylinder, table, pyramid, cone", session)
    assert "Labelled 5 instances" in message and "<th>label</th>" in table and "instance-label'>table<" in table
    assert session.downloads_pending


def test_matches_are_listed_first_with_their_scores(session):
    result = openvocab.find(session.scene, "yellow cube", SeeingEmbedder())
    text = matches_markdown(result, "seeing")
    assert text.startswith("**1 match(es) for “yellow cube”**") and f"**#{result.matches[0]}**" in text


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's Chromium (`apt-get install chromium`)")
def test_type_a_query_and_see_the_matches_highlighted(browser, vlm_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("find")
    photos = write_synthetic_photos(folder / "photos", seed=3, views=3)
    # the shipped model at 112 px; GRADIO_IS_E2E_TEST: a closed tab's state goes after 1 s, not an hour
    with running_app(folder, None, extra_env={"IGGT_EMBEDDER": "seeing", "GRADIO_IS_E2E_TEST": "1"}) as app:
        page = open_page(browser, app.url)
        reconstruct_in_page(page, photos=photos)
        scene = latest_scene(app.tmp)
        # The query: the first colour word that matches something in this reconstruction.
        query, expected = next((c, m) for c in COLOURS
                               if (m := openvocab.find(scene, c, SeeingEmbedder(), cache=None).matches))
        views_before = page.locator("#overlays").screenshot()
        click_view_before = page.locator("#click-view img").get_attribute("src")
        viewer_before = page.locator("#viewer canvas").screenshot()
        page.get_by_role("tab", name="Find").click()
        page.locator("#find-query textarea").fill(query)
        page.locator("#find").click()
        page.locator("#find-result").get_by_text(f"match(es) for “{query}”").wait_for()
        page.wait_for_timeout(1500)  # the 3D view draws the highlight
        assert page.locator("#viewer canvas").screenshot() != viewer_before, "the 3D view did not highlight"
        page.screenshot(path=str(folder / "find.png"), full_page=True)
        page.get_by_role("tab", name="Views and instances").click()
        page.wait_for_function("() => !document.querySelector('#overlays .pending')")
        bold = page.locator("#instances tr[style*='bold']")
        assert bold.count() == len(expected) and int(bold.first.locator("td").nth(1).inner_text()) == expected[0]
        assert page.locator("#overlays").screenshot() != views_before, "the views did not show the highlight"
        assert page.locator("#click-view img").get_attribute("src") != click_view_before, \
            "the view to click on still shows every instance"
        assert "Traceback" not in page.content()
        # The Ask tab's agent ranks its find checks with the same embedder (fewer VLM calls), in a
        # scene with more objects than the pre-filter keeps
        reconstruct_in_page(page, example="synthetic-7")
        ask_in_page(page, "Where is the yellow cube?", vlm_server.url, mode="agent")
        assert re.search(r"pre-filter \(seeing, 'yellow cube'\): asking about \d+ of \d+ instances",
                         page.locator("#trace").inner_text())
        page.close()  # the tab goes, and with it the session's files, before the app stops
        for _ in range(40):
            if not list(app.tmp.glob("iggt-sessions-*/session-*")):
                break
            time.sleep(0.25)
