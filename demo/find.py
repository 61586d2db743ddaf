"""The Find tab: text search and "Label all" by an image-text embedding model, without any chat VLM.

A query ranks the instances of the scene shown (`grounding.openvocab.find`); the matches are
highlighted in the 3D view and the views, and listed with their scores. The first query of a
scene embeds every instance (seconds on a CPU); later ones cost only the text side. "Label all"
names every instance from a vocabulary; the labels appear in the instance table and the downloads.

The embedding model is `IGGT_EMBEDDER` (environment; default `grounding.embedders.DEFAULT_MODEL`,
"seeing" for the seeing test embedder), read from the local cache only: when its weights are not
there, the tab says what to download and how, and the rest of the app works as before.
"""
from __future__ import annotations

import html
import os
import threading
from dataclasses import dataclass

import gradio as gr

from demo.handlers import Display, Handlers, user_errors
from demo.pictures import instance_table
from demo.services import EMBEDDER_VARIABLE
from demo.session import Session
from grounding import openvocab
from grounding.embedders import DEFAULT_MODEL, Embedder, EmbedderUnavailable, shared_embedder
from iggt.errors import IGGTError

VOCABULARIES = openvocab.BUILTIN_VOCABULARIES
SHOWN_ROWS = 8


class EmbedderService:
    """The app's one embedding model, loaded on first use (or the reason it cannot be)."""

    def __init__(self, name: str | None = None):
        self.name = name or os.environ.get(EMBEDDER_VARIABLE) or DEFAULT_MODEL
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    def get(self) -> Embedder:
        """The embedder; `EmbedderUnavailable` (with what to download) when its weights are missing."""
        with self._lock:
            if self._embedder is None:
                self._embedder = shared_embedder(self.name)
            return self._embedder


@dataclass
class FindWidgets:
    query: gr.Textbox
    find: gr.Button
    result: gr.Markdown
    vocabulary: gr.Dropdown
    label_all: gr.Button


def find_tab() -> FindWidgets:
    """The widgets of the Find tab (call inside a ``gr.Tab``)."""
    with gr.Row():
        query = gr.Textbox(label="Find (no VLM needed)", placeholder="chair, red mug, something to sit on",
                           scale=4, elem_id="find-query")
        find = gr.Button("Find", variant="primary", scale=1, elem_id="find")
    with gr.Row():
        vocabulary = gr.Dropdown(list(VOCABULARIES), value=VOCABULARIES[0], allow_custom_value=True,
                                 label="Vocabulary for Label all (or type names, comma-separated)",
                                 elem_id="find-vocabulary")
        label_all = gr.Button("Label all", scale=0, elem_id="label-all")
    result = gr.Markdown(elem_id="find-result")
    return FindWidgets(query, find, result, vocabulary, label_all)


def matches_markdown(result: openvocab.FindResult, model: str) -> str:
    """The matches first, then the next best, with scores; which model ranked them."""
    if result.matches:
        head = f"**{len(result.matches)} match(es) for “{html.escape(result.query)}”**"
    else:
        head = f"**No instance matches “{html.escape(result.query)}”** (score below {result.threshold:.2f})"
    rows = ["| rank | instance | score | label |", "|---:|---:|---:|---|"]
    for rank, (k, score) in enumerate(result.ranked[:SHOWN_ROWS], start=1):
        mark = "**" if score >= result.threshold else ""
        rows.append(f"| {rank} | {mark}#{k}{mark} | {score:.2f} | {html.escape(result.labels.get(k) or '')} |")
    return "\n".join([head, "", *rows, "", f"<small>Ranked by {html.escape(model)} (calibrated against "
                      "“object”, “wall”, “floor”, “background”).</small>"])


class FindHandlers:
    """Event handlers of the Find tab; the 3D view, views and table are drawn by `Handlers`."""

    def __init__(self, handlers: Handlers, embedders: EmbedderService | None = None):
        self.handlers = handlers
        self.embedders = embedders or EmbedderService()

    def _embedder(self) -> tuple[Embedder | None, str]:
        """The embedder, or None and what the tab says instead (one load attempt)."""
        try:
            return self.embedders.get(), ""
        except EmbedderUnavailable as err:
            hint = html.escape(str(err), quote=False)  # quotes stay quotes inside the command's code span
            return None, f"**Find is offline here.** {hint[:1].upper()}{hint[1:]}. Everything else works without it."

    @user_errors
    def find(self, query, color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
             show_structure, filters, session: Session | None):
        """Rank the instances for ``query`` and highlight the matches."""
        if session is None or session.scene is None or session.scene.instances is None:
            return "Reconstruct a scene first.", gr.skip(), gr.skip(), gr.skip(), session
        embedder, offline = self._embedder()
        if embedder is None:
            return offline, gr.skip(), gr.skip(), gr.skip(), session
        try:
            result = openvocab.find(session.scene, query or "", embedder)
        except IGGTError as err:
            return f"**{html.escape(str(err))}**", gr.skip(), gr.skip(), gr.skip(), session
        display = Display.from_widgets(color_mode, conf_percentile, show_cameras, drop_background, geometry, frame,
                                       show_structure, filters)
        session.highlighted = result.matches
        viewer, overlays, table = self.handlers._render_all(session, display)
        return matches_markdown(result, embedder.name), viewer, overlays, table, session

    @user_errors
    def label_all(self, vocabulary, session: Session | None):
        """Label every instance from ``vocabulary``; the table shows the labels, the downloads carry them."""
        if session is None or session.scene is None or session.scene.instances is None:
            return "Reconstruct a scene first.", gr.skip(), session
        embedder, offline = self._embedder()
        if embedder is None:
            return offline, gr.skip(), session
        try:
            session.scene = openvocab.label_instances(session.scene, vocabulary or VOCABULARIES[0], embedder)
        except IGGTError as err:
            return f"**{html.escape(str(err))}**", gr.skip(), session
        session.downloads_pending = True
        return (f"Labelled {session.scene.instances.count} instances from {html.escape(str(vocabulary))} "
                f"({html.escape(embedder.name)}).", instance_table(session.scene, session.highlighted), session)


def wire_find(widgets: FindWidgets, handlers: Handlers, display: list, session, viewer, overlays, instance_list,
              downloads, status, view_number, click_view) -> FindHandlers:
    """Connect the Find tab's events (internal to the page, no API endpoint). The matches are drawn on the view
    to click on too (``click_view``, the view ``view_number``), as after an answer."""
    find = FindHandlers(handlers)
    outputs = [widgets.result, viewer, overlays, instance_list, session]
    gr.on([widgets.find.click, widgets.query.submit], find.find, [widgets.query, *display, session], outputs,
          api_name=False, concurrency_id="find", concurrency_limit=2).success(
        handlers.show_view, [view_number, session], click_view, api_name=False)
    widgets.label_all.click(find.label_all, [widgets.vocabulary, session], [widgets.result, instance_list, session],
                            api_name=False, concurrency_id="find").then(
        handlers.write_downloads, session, [downloads, status], api_name=False)
    return find
