"""What a cold start of the app costs: seconds from `python app.py` to the loading page and to the app.

Starts the app (offline, so no download is part of it) a few times on a free port and polls it:
the loading page (`demo.loading_page`) answers 503 while the model loads, the app 200 when it is
ready. Then, in one process, the stages apart: imports, model load, warm-up, page built.

    python benchmarks/app_start.py                      # the shipped small model, 3 starts
    python benchmarks/app_start.py --checkpoint PATH    # another model (e.g. the 1B weights, cached)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tools.app_server import free_port  # noqa: E402

STAGES = """
import time; start = time.monotonic()
import app
from demo.handlers import Limits, warm_up
from demo.services import ModelService
from demo.ui import build_demo, bundled_examples
imported = time.monotonic()
models = ModelService({checkpoint!r}); models.load()
loaded = time.monotonic()
warm_up(models, bundled_examples())
warmed = time.monotonic()
build_demo(models, Limits(max_views=32, max_video_frames=32, max_upload_mb=50))
built = time.monotonic()
print(f"{{imported - start:.1f}} {{loaded - imported:.1f}} {{warmed - loaded:.1f}} {{built - warmed:.1f}}")
"""


def one_start(env: dict[str, str], checkpoint: str | None, timeout_s: float) -> tuple[float | None, float]:
    """(seconds to the loading page or None if the app answered first, seconds to the app)."""
    port = free_port()
    command = [sys.executable, "app.py", "--port", str(port), *(["--checkpoint", checkpoint] if checkpoint else [])]
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loading_page = None
    try:
        while time.monotonic() - start < timeout_s:
            if process.poll() is not None:
                raise SystemExit(f"the app exited with code {process.returncode}")
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 503 and loading_page is None:
                loading_page = time.monotonic() - start
            if status == 200:
                return loading_page, time.monotonic() - start
            time.sleep(0.05)
        raise SystemExit(f"the app did not answer within {timeout_s:.0f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="model of the app (default: the app's own choice)")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one start may take")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("IGGT_CHECKPOINT", None)
    print("| start | loading page | app | load average |\n| ---: | ---: | ---: | ---: |")
    for number in range(1, args.starts + 1):
        page, ready = one_start(env, args.checkpoint, args.timeout)
        shown = f"{page:.1f} s" if page is not None else "-"
        print(f"| {number} | {shown} | {ready:.1f} s | {os.getloadavg()[0]:.1f} |")
    stages = subprocess.run([sys.executable, "-c", STAGES.format(checkpoint=args.checkpoint)], cwd=REPO_ROOT,
                            env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, check=True)
    imports, model, warmed, page = stages.stdout.split()[-4:]
    print(f"\nin one process: imports {imports} s, model {model} s, warm-up (`demo.handlers.warm_up`) {warmed} s, "
          f"page built {page} s "
          f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
