"""``python -m iggt ask SCENE.npz "question"``: answer a question about a saved scene with a VLM.

Prints the answer and the instances it names, and writes into ``--out`` the highlight of each
of those instances, an overview with every instance numbered, and ``answer.json`` (the trace).
In agent mode ``--embedder MODEL`` ranks the instances by an image-text embedding model before
each find check, so the VLM is asked only about the likely ones (fewer calls).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .vlm import BACKENDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ask", help="answer a question about a reconstructed scene with a VLM",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path, help="scene file (.npz) with instances")
    parser.add_argument("question", help='e.g. "Which object is the red mug?"')
    parser.add_argument("--backend", choices=BACKENDS, default="openai",
                        help="openai: any OpenAI-compatible server (default GPT-4o); qwen: local Qwen2.5-VL or Qwen3-VL")
    parser.add_argument("--model", default=None, help="model name or Hugging Face id (default per backend)")
    parser.add_argument("--base-url", default=None,
                        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, Ollama, LM Studio)")
    parser.add_argument("--mode", choices=("verify", "agent"), default="verify",
                        help="verify: yes/no per instance (the paper's method); agent: planner with 3D tools")
    parser.add_argument("--out", type=Path, default=None, help="folder for highlights and answer.json")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per VLM request (openai)")
    parser.add_argument("--max-retries", type=int, default=3, help="retries on timeouts, 429 and 5xx (openai)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="token limit of a reply (openai; default 4096, room for a reasoning model to finish)")
    parser.add_argument("--max-steps", type=int, default=10, help="planning steps of the agent")
    parser.add_argument("--embedder", default=None, metavar="MODEL",
                        help="agent mode: rank the instances by this embedding model before each find check and "
                             "ask the VLM only about the likely ones (seeing, or a CLIP id in the local cache; "
                             "docs/openvocab.md)")
    parser.add_argument("--device", default="auto", help="device of the local model (qwen)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from iggt.errors import IGGTError
    from iggt.scene import Scene

    from .agent import AgentConfig, answer
    from .embedders import make_embedder
    from .highlight import highlight_instance, overview
    from .vlm import make_backend

    scene = Scene.load(args.scene)
    if scene.instances is None:
        raise IGGTError(f"{args.scene.name} has no instances: run `python -m iggt reconstruct` with "
                        "instance segmentation first")
    backend = make_backend(args.backend, args.model, base_url=args.base_url, timeout=args.timeout,
                           max_retries=args.max_retries, max_tokens=args.max_tokens, device=args.device)
    embedder = make_embedder(args.embedder) if args.embedder else None
    result = answer(scene, args.question, backend, args.mode, replace(AgentConfig(), max_steps=args.max_steps),
                    embedder=embedder)
    print(result.text)
    for k in result.instance_ids:
        name = result.instance_names.get(k)
        probability = result.probabilities.get(k)
        print(f"  instance {k}" + (f" ({name})" if name else "")
              + (f"  P(yes) = {probability:.2f}" if probability is not None else ""))
    if result.fell_back:
        print("  (the agent broke the action format and fell back to verify mode; see the trace)")
    cost = f"{result.vlm_calls} VLM calls, {result.total_seconds:.1f} s"
    if embedder is not None and args.mode == "agent":
        saved = sum(step.detail["saved"] for step in result.trace if step.kind == "prefilter")
        cost += f" ({saved} yes/no checks saved by the {embedder.name} pre-filter)"
    print(cost)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for k in result.instance_ids:
            highlight_instance(scene, k).image.save(args.out / f"instance_{k:03d}.png")
        overview(scene).image.save(args.out / "overview.png")
        (args.out / "answer.json").write_text(json.dumps(result.to_json(), indent=2))
        print(f"wrote {args.out}")
    return 0
