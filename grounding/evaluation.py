"""Questions with known answers about generated scenes, to measure the grounding end to end.

From a `SceneRecord`'s ground truth (object colours, categories, 3D centres) and its oracle
`Scene`, `make_questions` writes questions of five kinds, each with the instance ids that a
correct answer names: find ("Where is the red object?"), count ("How many spheres are there?"),
colour ("What color is the cone?"), left/right in a view, and nearest. Objects are described
by colour alone when that is unique, else by colour and category. Ambiguous cases (look-alikes,
near ties in position or distance) and objects that no view shows whole get no question, so
every question has one right answer that a careful person could give from the pictures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from iggt.data.oracle import oracle_scene
from iggt.data.scene_format import ObjectInfo, SceneRecord
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.scene import Instances, Scene

from .agent import AgentConfig, Answer, answer
from .vlm.base import VLM

KINDS = ("find", "count", "colour", "side", "nearest")
SCENES = GeneratorConfig(num_views=6, image_size=(168, 224), object_count=(3, 6),
                         categories=("cube", "sphere", "cone"),
                         colors=("red", "green", "blue", "yellow", "purple", "cyan"),
                         duplicate_probability=0.0, stack_probability=0.0)
"""Generated scenes for grounding benchmarks: basic shapes and clearly distinct colours."""


def benchmark_scene(seed: int, config: GeneratorConfig = SCENES) -> tuple[SceneRecord, Scene]:
    """A generated scene and its oracle `Scene`, with the instance names removed (a VLM must find them)."""
    record = generate_scene(seed, config)
    scene = oracle_scene(record)
    unnamed = [replace(info, name=None) for info in scene.instances.info]
    return record, scene.with_instances(Instances(scene.instances.labels, unnamed))


@dataclass(frozen=True)
class Question:
    text: str
    kind: str
    expected_ids: frozenset[int]
    """Scene instance ids a correct answer names (exactly)."""
    expected_word: str | None = None
    """A word the answer text must contain (the count or the colour)."""

    def is_correct(self, reply: Answer) -> bool:
        if set(reply.instance_ids) != self.expected_ids:
            return False
        return self.expected_word is None or self.expected_word in re.findall(r"[a-z0-9]+", reply.text.lower())


def _instance_of_object(record: SceneRecord, scene: Scene) -> dict[int, int]:
    """Record object id -> scene instance id, for the objects that are visible."""
    mapping = {}
    for info in scene.instances.info:
        mapping[int(record.instance_ids[scene.instances.labels == info.id][0])] = info.id
    return mapping


def well_seen(scene: Scene, instance_id: int, min_pixels: int = 300) -> bool:
    """Whether some view shows the instance whole (not cut by the border) and large enough to judge."""
    height, width = scene.image_size
    return any(p.pixel_count >= min_pixels and p.bbox[0] > 0 and p.bbox[1] > 0 and p.bbox[2] < width
               and p.bbox[3] < height for p in scene.instances.info[instance_id].views.values())


def _descriptions(objects: list[ObjectInfo]) -> dict[int, str]:
    """Shortest unique description of each object ("red object" or "red cube"); look-alikes get none."""
    described = {}
    for obj in objects:
        same_colour = [o for o in objects if o.color_name == obj.color_name]
        same_name = [o for o in same_colour if o.category == obj.category]
        if len(same_colour) == 1:
            described[obj.id] = f"{obj.color_name} object"
        elif len(same_name) == 1:
            described[obj.id] = obj.name
    return described


def _image_x(record: SceneRecord, view: int, point: tuple[float, float, float]) -> float:
    camera = record.extrinsics[view, :, :3] @ np.asarray(point) + record.extrinsics[view, :, 3]
    return float(record.intrinsics[view, 0, 0] * camera[0] / camera[2] + record.intrinsics[view, 0, 2])


def make_questions(record: SceneRecord, scene: Scene, side_margin: float = 0.15,
                   nearest_ratio: float = 1.3) -> list[Question]:
    """Questions with one right answer each (see the module docstring)."""
    to_instance = _instance_of_object(record, scene)
    objects = [o for o in record.objects if o.id in to_instance]
    clear = {o.id for o in objects if well_seen(scene, to_instance[o.id])}
    described = {k: v for k, v in _descriptions(objects).items() if k in clear}
    questions = []
    for obj in objects:
        if obj.id in described:
            questions.append(Question(f"Where is the {described[obj.id]}?", "find",
                                      frozenset({to_instance[obj.id]})))
    for colour in sorted({o.color_name for o in objects}):
        group = [o for o in objects if o.color_name == colour]
        ids = frozenset(to_instance[o.id] for o in group)
        if all(o.id in clear for o in group):
            questions.append(Question(f"How many {colour} objects are there?", "count", ids, str(len(ids))))
    for category in sorted({o.category for o in objects}):
        group = [o for o in objects if o.category == category]
        ids = frozenset(to_instance[o.id] for o in group)
        if len(clear) < len(objects):  # a shape is judged on every object: all must be seen whole
            continue
        questions.append(Question(f"How many {category}s are there?", "count", ids, str(len(ids))))
        if len(ids) == 1:
            (only,) = [o for o in objects if o.category == category]
            questions.append(Question(f"What color is the {category}?", "colour", ids, only.color_name))
    width = record.image_size[1]
    named = [o for o in objects if o.id in described]
    for a, b in zip(named, named[1:]):
        xa, xb = _image_x(record, 0, a.center), _image_x(record, 0, b.center)
        if abs(xa - xb) > side_margin * width:
            side = "left" if len(questions) % 2 == 0 else "right"
            left_one = a if xa < xb else b
            winner = left_one if side == "left" else (b if left_one is a else a)
            questions.append(Question(f"Which is further {side} in view 0, the {described[a.id]} or the "
                                      f"{described[b.id]}?", "side", frozenset({to_instance[winner.id]})))
    for obj in named:
        others = [o for o in objects if o.id != obj.id]
        if len(others) < 2:
            continue
        distances = [float(np.linalg.norm(np.subtract(o.center, obj.center))) for o in others]
        first, second = np.argsort(distances)[:2]
        if distances[second] > nearest_ratio * distances[first]:
            questions.append(Question(f"Which object is nearest to the {described[obj.id]}?", "nearest",
                                      frozenset({to_instance[others[first].id]})))
    return questions


@dataclass
class Outcome:
    question: Question
    mode: str
    reply: Answer

    @property
    def correct(self) -> bool:
        return self.question.is_correct(self.reply)


def run_questions(scene: Scene, questions: list[Question], backend: VLM, mode: str = "agent",
                  config: AgentConfig = AgentConfig(),
                  progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Answer every question (verify mode only gets the "find" questions it is made for)."""
    outcomes = []
    for question in questions:
        if mode == "verify" and question.kind != "find":
            continue
        outcome = Outcome(question, mode, answer(scene, question.text, backend, mode, config))
        outcomes.append(outcome)
        if progress:
            progress(outcome)
    return outcomes


@dataclass(frozen=True)
class Summary:
    questions: int
    correct: int
    vlm_calls_per_question: float
    seconds_outside_vlm_per_question: float
    seconds_per_question: float

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.questions, 1)


def summarize(outcomes: list[Outcome]) -> Summary:
    count = max(len(outcomes), 1)
    return Summary(len(outcomes), sum(o.correct for o in outcomes),
                   sum(o.reply.vlm_calls for o in outcomes) / count,
                   sum(o.reply.seconds_outside_vlm for o in outcomes) / count,
                   sum(o.reply.total_seconds for o in outcomes) / count)
