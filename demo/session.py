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

from iggt.scene import Scene


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

    def new_scene(self, scene: Scene) -> None:
        self.scene = scene
        self.highlighted = []

    def output_dir(self, name: str) -> Path:
        """A fresh folder inside this session's workdir (old outputs of that name are replaced)."""
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def close_session(session: Session | None) -> None:
    """`gr.State` delete callback."""
    if session is not None:
        session.close()
