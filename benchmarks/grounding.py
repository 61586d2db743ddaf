"""Grounding benchmark: accuracy, VLM calls per question and time spent outside the VLM.

Answers the questions of `grounding.evaluation.make_questions` on generated scenes in verify
and agent mode. By default the VLM is the seeing test server (grounding/vlm/seeing_server.py,
started in-process); ``--base-url``/``--model`` point it at a real OpenAI-compatible server
instead (API key from OPENAI_API_KEY). Answers are cached per scene within a mode (as in an
app session), so later questions about a scene cost fewer VLM calls.

    python benchmarks/grounding.py --scenes 10
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from tqdm import tqdm  # noqa: E402

from grounding.evaluation import benchmark_scene, make_questions, run_questions, summarize  # noqa: E402
from grounding.highlight import highlight_instance  # noqa: E402
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=10, help="number of generated scenes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    parser.add_argument("--modes", nargs="+", default=["verify", "agent"], choices=["verify", "agent"])
    parser.add_argument("--base-url", default=None, help="a real OpenAI-compatible server (default: test server)")
    parser.add_argument("--model", default="seeing")
    args = parser.parse_args()

    stop = None
    base_url = args.base_url
    if base_url is None:
        from grounding.vlm.seeing_server import start_server
        base_url, stop = start_server()
    # one backend (and answer cache) per mode, so neither mode profits from the other's answers
    backends = {mode: OpenAIVLM(OpenAIConfig(model=args.model, base_url=base_url)) for mode in args.modes}

    outcomes, highlight_seconds, highlighted = [], 0.0, 0
    for seed in tqdm(range(args.seed, args.seed + args.scenes), desc="scenes", unit="scene"):
        record, scene = benchmark_scene(seed)
        start = time.perf_counter()
        for info in scene.instances.info:
            highlight_instance(scene, info.id)
        highlight_seconds += time.perf_counter() - start
        highlighted += scene.instances.count
        questions = make_questions(record, scene)
        for mode in args.modes:
            outcomes += run_questions(scene, questions, backends[mode], mode)
    if stop is not None:
        stop()

    print(f"{args.scenes} scenes, VLM {args.model!r} at {base_url}")
    print(f"highlight: {1000 * highlight_seconds / max(highlighted, 1):.1f} ms per instance "
          f"({scene.num_views} views of {scene.image_size[0]}x{scene.image_size[1]})")
    print(f"{'mode':8s} {'kind':8s} {'questions':>9s} {'accuracy':>9s} {'VLM calls/q':>12s} "
          f"{'s outside VLM/q':>16s} {'s/q':>7s}")
    groups = defaultdict(list)
    for outcome in outcomes:
        groups[(outcome.mode, outcome.question.kind)].append(outcome)
        groups[(outcome.mode, "all")].append(outcome)
    for (mode, kind), members in sorted(groups.items()):
        summary = summarize(members)
        print(f"{mode:8s} {kind:8s} {summary.questions:9d} {summary.accuracy:9.1%} "
              f"{summary.vlm_calls_per_question:12.2f} {summary.seconds_outside_vlm_per_question:16.3f} "
              f"{summary.seconds_per_question:7.2f}")
    wrong = [o for o in outcomes if not o.correct]
    for outcome in wrong:
        print(f"  wrong ({outcome.mode}): {outcome.question.text} -> {outcome.reply.text}")


if __name__ == "__main__":
    main()
