"""How long a question takes to fail when the VLM server cannot be reached.

Two paths, both against a local port where nothing listens (a mistyped URL, a server that is down):

* the app: `VLMService.backend` asks the server for its models first (``/v1/models``) and stops
  there with the reason;
* the library (`python -m iggt ask`, `grounding.agent.answer`) with the default backend settings
  (3 retries with back-off): the first request that cannot connect marks the backend unreachable
  and the later ones fail at once.

    python benchmarks/vlm_failure.py
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from demo.services import VLMService  # noqa: E402
from grounding.agent import answer  # noqa: E402
from grounding.evaluation import benchmark_scene  # noqa: E402
from grounding.vlm import make_backend  # noqa: E402
from grounding.vlm.openai_backend import VLMUnavailable  # noqa: E402

QUESTION = "Where is the red cube?"


def nowhere() -> str:
    """The URL of a local port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> None:
    _, scene = benchmark_scene(3)
    print("| path | seconds to the failure | first words |\n| --- | ---: | --- |")

    start = time.perf_counter()
    try:
        VLMService().backend("OpenAI-compatible server", base_url=nowhere(), model=None, api_key=None)
        said = "(no failure?)"
    except VLMUnavailable as err:
        said = str(err)
    print(f"| app (asks /v1/models first) | {time.perf_counter() - start:.2f} | {said[:60]} |")

    for mode in ("verify", "agent"):
        backend = make_backend("openai", "seeing", base_url=nowhere())
        start = time.perf_counter()
        result = answer(scene, QUESTION, backend, mode=mode)
        print(f"| library, {mode} mode ({result.vlm_calls} requests) | {time.perf_counter() - start:.2f} "
              f"| {result.text[:60]} |")


if __name__ == "__main__":
    main()
