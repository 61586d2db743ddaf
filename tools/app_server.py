"""The real web app (`python app.py`) in a subprocess on a free port, for tests, benchmarks and
scripts that use it as a person or a client would."""
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

REPO_ROOT = Path(__file__).resolve().parent.parent


class AppFailed(RuntimeError):
    """The app did not start, did not stop, or left files behind; the message holds its last output."""


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
def running_app(workdir: Path, checkpoint: Path | None, *extra: str, size: int | None = 112,
                extra_env: dict[str, str] | None = None, startup_timeout_s: float = 120.0,
                root: Path = REPO_ROOT) -> Iterator[RunningApp]:
    """`python app.py` in a subprocess on a free port; waits until the page answers, stops it afterwards.

    ``checkpoint`` None lets the app choose its model; ``size`` is the model input size (None: the
    model's own), ``extra`` are more command-line arguments, ``extra_env`` more environment variables;
    ``root`` is the checkout whose app runs (another one: a benchmark's baseline)."""
    tmp = workdir / "server-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2",
           "OPENAI_API_KEY": "", **(extra_env or {})}
    command = [sys.executable, "app.py", "--port", str(port),
               *(["--checkpoint", str(checkpoint)] if checkpoint else []), *(["--size", str(size)] if size else []),
               *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    app = RunningApp(f"http://127.0.0.1:{port}/", log, tmp)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise AppFailed(f"the app exited with code {process.returncode}:\n{app.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(app.url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AppFailed(f"the app did not answer within {startup_timeout_s:.0f} s:\n{app.log_text()[-3000:]}")
            time.sleep(0.5)
        yield app
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AppFailed(f"the app did not stop within 15 s of SIGTERM:\n{app.log_text()[-3000:]}")
    left = [p.name for p in tmp.glob("iggt-sessions-*")]
    if left:
        raise AppFailed(f"the stopped app left its session files behind: {left}")
