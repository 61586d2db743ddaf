"""Shared fixtures: a tiny random model on disk, the seeing VLM test server, generated photos,
and the real web app running in a subprocess."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    """A folder with a randomly initialised "tiny" IGGT (fixed seed), as `save_pretrained` writes it."""
    from iggt.config import IGGTConfig
    from iggt.model.iggt import IGGT

    folder = tmp_path_factory.mktemp("tiny-iggt")
    torch.manual_seed(0)
    IGGT(IGGTConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def vlm_server():
    """The local OpenAI-compatible server that looks at the images (`tests/vlm_test_server.py`)."""
    from vlm_test_server import start_test_server

    running = start_test_server()
    yield running
    running.stop()


def write_synthetic_photos(folder: Path, seed: int = 3, views: int = 3, size: int = 112) -> list[Path]:
    """PNG photos of one generated scene (the pictures only, as a user would upload them)."""
    from iggt.training.synthetic import GeneratorConfig, generate_scene

    record = generate_scene(seed, GeneratorConfig(num_views=views, image_size=(size, size), object_count=(3, 5)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(record.images):
        paths.append(folder / f"photo_{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    log: Path
    """Everything the server printed (stdout and stderr)."""
    tmp: Path
    """The server's TMPDIR and GRADIO_TEMP_DIR: every file it writes lands here."""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_app(workdir: Path, checkpoint: Path, *extra: str, size: int | None = 112,
                extra_env: dict[str, str] | None = None, startup_timeout_s: float = 120.0) -> Iterator[RunningApp]:
    """`python app.py` in a subprocess on a free port; waits until the page answers, stops it afterwards.

    ``size`` is the model input size (None: the model's own), ``extra`` are more command-line
    arguments, ``extra_env`` more environment variables."""
    tmp = workdir / "server-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2",
           "OPENAI_API_KEY": "", **(extra_env or {})}
    command = [sys.executable, "app.py", "--port", str(port), "--checkpoint", str(checkpoint),
               *(["--size", str(size)] if size else []), *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    app = RunningApp(f"http://127.0.0.1:{port}/", log, tmp)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with code {process.returncode}:\n{app.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(app.url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within {startup_timeout_s:.0f} s:\n{app.log_text()[-3000:]}")
            time.sleep(0.5)
        yield app
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the app did not stop within 15 s of SIGTERM:\n{app.log_text()[-3000:]}")
    left = [p.name for p in tmp.glob("iggt-sessions-*")]
    assert not left, f"the stopped app left its session files behind: {left}"
