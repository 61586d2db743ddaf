"""Grounding benchmark: accuracy, VLM calls per question and time spent outside the VLM.

Answers the questions of `grounding.evaluation.make_questions` on generated scenes
(`grounding.evaluation.SCENES`) in verify and agent mode. Questions are always written from a
scene's ground truth (the same questions in every run); what they are answered on:

* without ``--checkpoint``: the oracle scene (perfect instances at the record's resolution),
  judged by the exact instance ids (`Question.is_correct`);
* with ``--checkpoint``: the model's reconstruction of the views (`Reconstructor` at the model's
  own input size, clustered with ``--clustering``, by default the preset the app picks for that
  model, and structure marked as the app does) and, beside it, the oracle at the model's pixels
  (`resample_record`: the same images, perfect instances), so the gap between the two columns
  is the model's instances, not the resolution. Both are judged by the ground-truth objects
  their instances stand for (`match_to_objects`, `judge_on_objects`).

By default the VLM is the seeing test server (grounding/vlm/seeing_server.py, started
in-process); ``--style`` makes it answer as other models and servers do (a reasoning block, a
sentence, prose around JSON, tool calls, ...: `seeing_server.STYLES`), one column per style: the
quirk matrix. ``--base-url``/``--model`` point it at a real OpenAI-compatible server instead (API
key from OPENAI_API_KEY). ``--recheck both`` answers every question with and without the answers'
self-check (`AgentConfig.recheck`), one column each; ``--prefilter both`` with and without the
agent's pre-filter of its find checks by an embedding model (``--embedder``, default the seeing
test embedder; `AgentConfig.prefilter`), and reports the checks it saved and how often it left out
an instance the answer needed. Answers are cached per scene within a mode and column (as in an
app session), so later questions about a scene cost fewer VLM calls. The run ends with two
markdown tables per mode and question kind, one column per source, style, self-check and
pre-filter setting: VLM calls per question, then accuracy.

    python benchmarks/grounding.py --scenes 10
    python benchmarks/grounding.py --scenes 6 --style plain think reasoning-field sentence prose bold tools
    python benchmarks/grounding.py --scenes 20 --checkpoint iggt/weights/iggt-small --recheck both
    python benchmarks/grounding.py --scenes 20 --modes agent --prefilter both
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from grounding.agent import AgentConfig  # noqa: E402
from grounding.embedders import SEEING, Embedder, make_embedder  # noqa: E402
from grounding.evaluation import (KINDS, MIN_MATCH_IOU, Outcome, benchmark_scene, make_questions,  # noqa: E402
                                  match_to_objects, resample_record, run_questions, summarize, unnamed_oracle)
from grounding.highlight import highlight_instance  # noqa: E402
from grounding.vlm.base import VLM  # noqa: E402
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM  # noqa: E402
from grounding.vlm.seeing_server import STYLES  # noqa: E402
from iggt.data.scene_format import SceneRecord  # noqa: E402
from iggt.instances import ClusteringConfig, segment_instances  # noqa: E402
from iggt.reconstruct import Reconstructor  # noqa: E402
from iggt.scene import Scene  # noqa: E402
from iggt.structure import mark_structure  # noqa: E402

ORACLE = "oracle"
PREFILTER = ", pre-filter"
"""Suffix of the columns answered with the agent's pre-filter."""


@dataclass
class Source:
    """One scene the questions are answered on, and how its instances map to the ground truth."""

    name: str
    scene: Scene
    matches: dict[int, int] | None
    """Instance -> record object (`match_to_objects`); None for the oracle the questions were written on."""


@dataclass(frozen=True)
class ModelRun:
    """The model under test: what the app would run for this checkpoint."""

    reconstructor: Reconstructor
    clustering: str
    name: str
    structure: bool = True
    """Mark floor, walls and planes as structure (`mark_structure`), as the app does; the agent leaves them out."""

    @property
    def oracle_name(self) -> str:
        return f"{ORACLE} at {self.reconstructor.size} px"

    def sources(self, record: SceneRecord) -> list[Source]:
        """The reconstruction of the record's views, and the oracle at the same pixels."""
        scene = self.reconstructor([Image.fromarray(image) for image in record.images])
        scene = scene.with_instances(segment_instances(scene, ClusteringConfig.from_preset(self.clustering)))
        if self.structure:
            scene = scene.with_instances(mark_structure(scene))
        truth = resample_record(record, scene)
        perfect = unnamed_oracle(truth)
        return [Source(self.name, scene, match_to_objects(truth.instance_ids, scene.instances.labels)),
                Source(self.oracle_name, perfect, match_to_objects(truth.instance_ids, perfect.instances.labels))]


def load_model_run(checkpoint: str, clustering: str | None, device: str, structure: bool = True) -> ModelRun:
    """The checkpoint's model at its own input size, with the app's clustering preset unless one is given."""
    from demo.services import describe
    from iggt.evaluation.evaluate import make_reconstructor

    reconstructor = make_reconstructor(checkpoint, device)
    clustering = clustering or describe(checkpoint, reconstructor.model).clustering
    name = f"{Path(checkpoint).name or checkpoint} ({clustering}{'' if structure else ', no structure'})"
    return ModelRun(reconstructor, clustering, name, structure)


@dataclass(frozen=True)
class Variant:
    """How the questions are answered besides the scene: the VLM (model name) and the agent's settings."""

    suffix: str
    """Added to the source's name to name the column ("" for the only variant)."""
    model: str
    config: AgentConfig = AgentConfig()
    embedder: Embedder | None = None
    """The agent's pre-filter of its find checks (None: every find asks about every instance)."""


def _settings(choice: str, on: tuple[str, object], off: tuple[str, object]) -> list[tuple[str, object]]:
    """An on/off/both option as (column suffix, setting) pairs, the one without a suffix first."""
    return sorted({"on": [on], "off": [off], "both": [on, off]}[choice], key=lambda setting: setting[0] != "")


def variants(model: str, styles: list[str] | None, recheck: str, prefilter: str = "off",
             embedder: Embedder | None = None) -> list[Variant]:
    """One variant per style (model "seeing+<style>", "plain" = the model itself), self-check setting and
    pre-filter setting."""
    models = [(f", {style}" if len(styles) > 1 else f" ({style})", model if style == "plain" else f"{model}+{style}")
              for style in styles] if styles else [("", model)]
    checks = _settings(recheck, ("", True), (", no re-check", False))
    filters = _settings(prefilter, (PREFILTER, embedder), ("", None))
    return [Variant(style_suffix + check_suffix + filter_suffix, name, replace(AgentConfig(), recheck=check),
                    filter_embedder)
            for style_suffix, name in models for check_suffix, check in checks
            for filter_suffix, filter_embedder in filters]


def left_out_needed(outcome: Outcome) -> int:
    """How many instances the answer needed that a pre-filter left out of a check of the question's own
    target (find, count and colour questions; the others check other descriptions)."""
    if outcome.question.kind not in ("find", "count", "colour"):
        return 0
    if outcome.matches is None:
        needed = set(outcome.question.expected_ids)
    else:
        needed = {k for k, obj in outcome.matches.items() if obj in outcome.question.expected_objects}
    return sum(len(needed & set(step.detail.get("skipped", ()))) for step in outcome.reply.trace
               if step.kind == "prefilter")


class Benchmark:
    """Answers the questions of one scene after another and keeps what the report needs."""

    def __init__(self, model_run: ModelRun | None, modes: list[str], make_backend: Callable[[str], VLM],
                 answer_variants: list[Variant]):
        self.model_run, self.modes, self.make_backend = model_run, modes, make_backend
        self.variants = answer_variants
        # one backend (and answer cache) per source and mode, so none profits from another's answers
        self.backends: dict[tuple[str, str], VLM] = {}
        self.results: list[tuple[str, Outcome]] = []  # (source name, outcome)
        self.highlight_seconds: dict[str, float] = defaultdict(float)
        self.highlighted: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, tuple[int, int]] = {}
        self.objects: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # visible, matched, matched structure

    def add_scene(self, seed: int) -> None:
        record, oracle = benchmark_scene(seed)
        questions = make_questions(record, oracle)
        sources = self.model_run.sources(record) if self.model_run else [Source(ORACLE, oracle, None)]
        for source in sources:
            self._time_highlights(source)
            if source.matches is not None:
                counts = self.objects[source.name]
                counts[0] += len(np.unique(record.instance_ids[record.instance_ids > 0]))
                counts[1] += len(source.matches)
                counts[2] += sum(source.scene.instances.info[i].structure for i in source.matches)
            for variant in self.variants:
                column = source.name + variant.suffix
                for mode in self.modes:
                    backend = self.backends.setdefault((column, mode), self.make_backend(variant.model))
                    self.results += [(column, outcome) for outcome in
                                     run_questions(source.scene, questions, backend, mode, variant.config,
                                                   matches=source.matches, embedder=variant.embedder)]

    def _time_highlights(self, source: Source) -> None:
        start = time.perf_counter()
        for info in source.scene.instances.info:
            highlight_instance(source.scene, info.id)
        self.highlight_seconds[source.name] += time.perf_counter() - start
        self.highlighted[source.name] += source.scene.instances.count
        self.sizes[source.name] = source.scene.image_size

    def groups(self) -> dict[tuple[str, str, str], list[Outcome]]:
        """(source, mode, kind) -> outcomes; kind "all" holds every kind."""
        groups: dict[tuple[str, str, str], list[Outcome]] = defaultdict(list)
        for name, outcome in self.results:
            for kind in (outcome.question.kind, "all"):
                groups[(name, outcome.mode, kind)].append(outcome)
        return groups

    def print_report(self, show_wrong: bool = False) -> None:
        """Highlight cost, matched objects, the full table per source, mode and kind, the pre-filter's savings;
        the markdown tables last (accuracy the very last)."""
        for name, seconds in self.highlight_seconds.items():
            height, width = self.sizes[name]
            print(f"highlight ({name}): {1000 * seconds / max(self.highlighted[name], 1):.1f} ms per instance "
                  f"({width}x{height} px)")
        for name, (visible, matched, structure) in self.objects.items():
            print(f"objects ({name}): {matched} of {visible} visible ones have an instance (IoU >= "
                  f"{MIN_MATCH_IOU}), {structure} of these marked structure")
        print(f"{'source':32s} {'mode':8s} {'kind':8s} {'questions':>9s} {'accuracy':>9s} {'VLM calls/q':>12s} "
              f"{'s outside VLM/q':>16s} {'s/q':>7s}")
        for (name, mode, kind), members in sorted(self.groups().items()):
            summary = summarize(members)
            print(f"{name:32s} {mode:8s} {kind:8s} {summary.questions:9d} {summary.accuracy:9.1%} "
                  f"{summary.vlm_calls_per_question:12.2f} {summary.seconds_outside_vlm_per_question:16.3f} "
                  f"{summary.seconds_per_question:7.2f}")
        self.print_prefilter()
        if show_wrong:
            for name, outcome in self.results:
                if not outcome.correct:
                    print(f"  wrong ({name}, {outcome.mode}): {outcome.question.text} -> {outcome.reply.text}")
        print()
        print(self.markdown_table(calls=True))
        print()
        print(self.markdown_table())

    def print_prefilter(self) -> None:
        """Per column with the pre-filter: the find checks it ranked and filtered, the checks saved, the
        instances an answer needed that it left out, and the verdicts that differ from the same column
        without it (question by question)."""
        columns = {name: [o for column, o in self.results if column == name]
                   for name in dict.fromkeys(name for name, _ in self.results)}
        for name, outcomes in columns.items():
            steps = [step for o in outcomes for step in o.reply.trace if step.kind == "prefilter"]
            if not steps:
                continue
            line = (f"pre-filter ({name}): {len(steps)} find checks ranked, "
                    f"{sum(step.detail['saved'] > 0 for step in steps)} filtered, "
                    f"{sum(step.detail['saved'] for step in steps)} yes/no checks saved; needed instances "
                    f"left out: {sum(left_out_needed(o) for o in outcomes)}")
            plain = columns.get(name.removesuffix(PREFILTER))
            if plain is not None and len(plain) == len(outcomes):
                pairs = list(zip(plain, outcomes))
                line += (f"; answers right without it and wrong with it: "
                         f"{sum(a.correct and not b.correct for a, b in pairs)}, the other way: "
                         f"{sum(b.correct and not a.correct for a, b in pairs)}")
            print(line)

    def markdown_table(self, calls: bool = False) -> str:
        """Accuracy (or, with ``calls``, VLM calls per question) per mode and kind (rows) and source (columns),
        ready to paste into a README."""
        names = list(dict.fromkeys(name for name, _ in self.results))
        groups = self.groups()
        mode_column = "mode (VLM calls per question)" if calls else "mode"
        lines = [f"| {mode_column} | questions | kind | " + " | ".join(names) + " |",
                 "| --- | ---: | --- |" + " ---: |" * len(names)]
        for mode in sorted({o.mode for _, o in self.results}, reverse=True):  # verify, then agent
            for kind in ("all", *KINDS):
                if (names[0], mode, kind) not in groups:
                    continue
                summaries = [summarize(groups[(name, mode, kind)]) for name in names]
                cells = [f"{s.vlm_calls_per_question:.2f}" if calls else f"{s.accuracy:.1%}" for s in summaries]
                lines.append(f"| {mode} | {len(groups[(names[0], mode, kind)])} | {kind} | " + " | ".join(cells)
                             + " |")
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=10, help="number of generated scenes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    parser.add_argument("--modes", nargs="+", default=["verify", "agent"], choices=["verify", "agent"])
    parser.add_argument("--checkpoint", default=None,
                        help="answer on this model's reconstructions (e.g. iggt/weights/iggt-small); default: oracle")
    parser.add_argument("--clustering", default=None, choices=list(ClusteringConfig.PRESETS),
                        help="clustering preset (default: the one the app uses for the model)")
    parser.add_argument("--no-structure", action="store_true",
                        help="do not mark floor, walls and planes as structure (the app does; the agent leaves "
                             "structure out, so an object taken for a plane cannot be found)")
    parser.add_argument("--device", default="auto", help="device of the model: auto, cpu, cuda")
    parser.add_argument("--base-url", default=None, help="a real OpenAI-compatible server (default: test server)")
    parser.add_argument("--model", default="seeing")
    parser.add_argument("--style", nargs="+", default=None, choices=list(STYLES), metavar="STYLE",
                        help="answer styles of the seeing test server, one column each: " + ", ".join(STYLES))
    parser.add_argument("--recheck", choices=["on", "off", "both"], default="on",
                        help="the answers' self-check (re-check instances whose name contradicts the target)")
    parser.add_argument("--prefilter", choices=["on", "off", "both"], default="off",
                        help="the agent's pre-filter of its find checks by embedding score (AgentConfig.prefilter)")
    parser.add_argument("--embedder", default=SEEING,
                        help="embedding model of the pre-filter: seeing (the test embedder) or a cached CLIP id")
    parser.add_argument("--show-wrong", action="store_true", help="list every wrong answer")
    args = parser.parse_args()

    model_run = (load_model_run(args.checkpoint, args.clustering, args.device, not args.no_structure)
                 if args.checkpoint else None)
    stop = None
    base_url = args.base_url
    if base_url is None:
        from grounding.vlm.seeing_server import start_server
        base_url, stop = start_server()
    benchmark = Benchmark(model_run, args.modes, lambda model: OpenAIVLM(OpenAIConfig(model=model, base_url=base_url)),
                          variants(args.model, args.style, args.recheck, args.prefilter,
                                   make_embedder(args.embedder) if args.prefilter != "off" else None))
    for seed in tqdm(range(args.seed, args.seed + args.scenes), desc="scenes", unit="scene"):
        benchmark.add_scene(seed)
    if stop is not None:
        stop()

    print(f"{args.scenes} scenes from seed {args.seed}, VLM {args.model!r} at {base_url}")
    if model_run:
        reconstructor = model_run.reconstructor
        print(f"model: {reconstructor.model_name} from {args.checkpoint}, input {reconstructor.size} px, "
              f"clustering {model_run.clustering!r}, structure {'marked' if model_run.structure else 'not marked'}")
    benchmark.print_report(args.show_wrong)


if __name__ == "__main__":
    main()
