"""Per-browser-session state: the current scene, its output folder and what the user selected.

Gradio keeps one `Session` per browser tab in a `gr.State`; when the tab goes away (or the
state expires) `Session.close` removes the session's temporary files. All session folders
live in one temporary folder per server process, removed when the process exits.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from demo.pictures import GalleryViews
from iggt.scene import Scene

PHOTO_SIDE = 1024


@functools.cache
def sessions_root() -> Path:
    """This process's folder of session folders (made on first use, deleted at exit)."""
    root = Path(tempfile.mkdtemp(prefix="iggt-sessions-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@dataclass
class Session:
    """What one user is looking at."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="session-", dir=sessions_root())))
    scene: Scene | None = None
    timings: dict[str, float] = field(default_factory=dict)
    highlighted: list[int] = field(default_factory=list)
    photos: list[Image.Image] = field(default_factory=list)
    """The input pictures (long side at most `PHOTO_SIDE`), to draw masks at the photos' resolution."""
    downloads_pending: bool = False
    """The scene is shown but its download files are not written yet."""
    clustering: str = ""
    """How the scene's instances were made, for the status line."""
    viewer_instances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    """The instance id of each point the 3D view shows, in its order (a click there sends the point's index)."""
    gallery: GalleryViews = field(default_factory=lambda: GalleryViews([]))
    """The photos as the page draws them, with the instance labels kept for the next selection."""

    def new_scene(self, scene: Scene, photos: list[Image.Image] | None = None) -> None:
        """Show ``scene`` (clustered again when ``photos`` is None: the photos stay), nothing selected."""
        self.scene = scene
        self.highlighted = []
        if photos is not None:
            self.photos = [_shrunk(photo) for photo in photos]
            self.gallery = GalleryViews(self.photos)
        self.downloads_pending = True

    def output_dir(self, name: str) -> Path:
        """A fresh folder inside this session's workdir (old outputs of that name are replaced)."""
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _shrunk(photo: Image.Image) -> Image.Image:
    if max(photo.size) <= PHOTO_SIDE:
        return photo
    copy = photo.copy()
    copy.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.BILINEAR)
    return copy


def close_session(session: Session | None) -> None:
    """`gr.State` delete callback."""
    if session is not None:
        session.close()
