"""Shared fixtures: one intra-op thread, a tiny random model on disk, the seeing VLM test server,
Debian's Chromium.

Plain helpers are in `helpers.py` (pytest discourages importing from conftest); the web app in a
subprocess and its page driver in the repository's `tools/`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module: on a loaded shared machine, thread synchronisation
    dominates the tiny model's small ops (use with ``pytest.mark.usefixtures``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A folder with a randomly initialised "tiny" IGGT (fixed seed), as `save_model` writes it."""
    from iggt.config import IGGTConfig
    from iggt.loading import save_model
    from iggt.model.iggt import IGGT

    folder = tmp_path_factory.mktemp("tiny-iggt")
    torch.manual_seed(0)
    save_model(IGGT(IGGTConfig.from_preset("tiny")), folder)
    return folder


@pytest.fixture(scope="session")
def vlm_server():
    """The local OpenAI-compatible server that looks at the images (`grounding.vlm.seeing_server`)."""
    from grounding.vlm.seeing_server import start_test_server

    running = start_test_server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def chromium_args() -> list[str]:
    """Command-line arguments of the `browser` fixture's Chromium (a test module may override them)."""
    from tools.app_page import CHROMIUM_ARGS

    return CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser(chromium_args):
    """Debian's Chromium driven by Playwright; the test is skipped where it is not installed."""
    from tools.app_page import CHROMIUM

    if CHROMIUM is None:
        pytest.skip("needs Debian's Chromium (`apt-get install chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args)
        yield browser
        browser.close()
