"""While the model loads: a plain page on the app's port that says what is being loaded.

On a cold Space the paper's 1B weights take minutes (about 5 GB to download unless the Space
preloaded them, then to read). The Gradio page can only be built once the model is there (its input
sizes and default clustering depend on it), so until then this page answers every request, says
what is loading and reloads itself every few seconds until the app takes the port over. It answers
503 (not ready yet), so health checks and scripts that wait for the app keep waiting.
"""
from __future__ import annotations

import contextlib
import html
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from iggt.checkpoints import OFFICIAL_REPO_ID
from iggt.reconstruct import DEFAULT_CHECKPOINT as SHIPPED_MODEL

log = logging.getLogger(__name__)

REFRESH_S = 5


def _model_in_words(spec: str) -> str:
    if spec == OFFICIAL_REPO_ID:
        return (f"the paper's IGGT-1B weights ({OFFICIAL_REPO_ID}, about 5 GB: downloaded on the first start "
                "unless the Space preloaded them, then read into memory; a minute or more)")
    if Path(spec).expanduser().resolve() == SHIPPED_MODEL.resolve():
        return "the shipped IGGT-small model (24 MB, seconds)"
    return f"the model {Path(spec).name or spec}"  # a file's or folder's name only, never its path


def loading_note(candidates: list[str]) -> str:
    """What is being loaded, in words: the first choice, and what follows if it cannot be used."""
    first, *fallbacks = candidates
    note = f"Loading {_model_in_words(first)}."
    if fallbacks:
        note += f" If it cannot be used: {', then '.join(map(_model_in_words, fallbacks))}."
    return note


def _page(note: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>IGGT: loading the model</title>"
            f"<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\"></head>"
            f"<body style=\"font-family: sans-serif; max-width: 40em; margin: 4em auto\">"
            f"<h1>IGGT is starting</h1><p id=\"loading-note\">{html.escape(note)}</p>"
            f"<p>This page reloads itself every {REFRESH_S} seconds and becomes the app when the model is ready."
            f"</p></body></html>").encode()


@contextlib.contextmanager
def loading_page(host: str, port: int, note: str) -> Iterator[None]:
    """Serve the loading page on ``host:port`` for the duration of the block (nothing if the port is taken:
    the app's own start then reports it)."""
    body = _page(note)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer()

        def _answer(self) -> None:
            self.send_response(503)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Retry-After", str(REFRESH_S))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()

        def log_message(self, *args) -> None:  # a request every few seconds per visitor: not worth a log line
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as error:
        log.info("no loading page on port %s: %s", port, error)
        yield
        return
    threading.Thread(target=server.serve_forever, name="loading-page", daemon=True).start()
    log.info(note)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
