"""Questions with known answers about generated scenes, to measure the grounding end to end.

From a `SceneRecord`'s ground truth (object colours, categories, 3D centres) and its oracle
`Scene`, `make_questions` writes questions of five kinds, each with the instance ids that a
correct answer names: find ("Where is the red object?"), count ("How many spheres are there?"),
colour ("What color is the cone?"), left/right in a view, and nearest. Objects are described
by colour alone when that is unique, else by colour and category. Ambiguous cases (look-alikes,
near ties in position or distance) and objects that no view shows whole get no question, so
every question has one right answer that a careful person could give from the pictures.

Questions are written from the ground truth and can be answered on any `Scene` of the same
views: the oracle scene (judged by `Question.is_correct`: the exact instance ids) or a scene
whose instances a model predicted (judged by `judge_on_objects` through `match_to_objects`:
which ground-truth objects the named instances are). `resample_record` brings the ground truth
to a reconstruction's pixels, for that matching and for an oracle at the model's resolution.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from iggt.data.oracle import oracle_scene
from iggt.data.scene_format import ObjectInfo, SceneRecord
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.evaluation.metrics import label_overlap
from iggt.scene import Instances, Scene, nearest_pixels

from .agent import AgentConfig, Answer, answer
from .embedders import Embedder
from .vlm.base import VLM

KINDS = ("find", "count", "colour", "side", "nearest")
SCENES = GeneratorConfig(num_views=6, image_size=(168, 224), object_count=(3, 6),
                         categories=("cube", "sphere", "cone"),
                         colors=("red", "green", "blue", "yellow", "purple", "cyan"),
                         duplicate_probability=0.0, stack_probability=0.0)
"""Generated scenes for grounding benchmarks: basic shapes and clearly distinct colours."""


MIN_MATCH_IOU = 0.5
"""IoU (over all views) a predicted instance needs with a ground-truth object to stand for it."""


def benchmark_scene(seed: int, config: GeneratorConfig = SCENES) -> tuple[SceneRecord, Scene]:
    """A generated scene and its oracle `Scene`, with the instance names removed (a VLM must find them)."""
    record = generate_scene(seed, config)
    return record, unnamed_oracle(record)


def unnamed_oracle(record: SceneRecord) -> Scene:
    """The record's oracle `Scene` without instance names (a VLM must find them)."""
    scene = oracle_scene(record)
    unnamed = [replace(info, name=None) for info in scene.instances.info]
    return scene.with_instances(Instances(scene.instances.labels, unnamed))


def resample_record(record: SceneRecord, scene: Scene) -> SceneRecord:
    """The record at the pixels of ``scene``, a reconstruction of its views: the ground truth as the model saw it.

    Images are the scene's own (the model input); depth and instance ids take the record pixel
    under each scene pixel's centre (nearest neighbour, through the scene's view transforms),
    0 where the model input shows no record pixel (padding); intrinsics follow the resize. The
    optional semantic and structure maps are left out (the grounding does not read them).
    """
    grids, intrinsics = [], []
    for transform, original in zip(scene.view_transforms, record.intrinsics):
        grids.append(nearest_pixels(transform.to_original, scene.image_size, record.image_size))
        scale_y, scale_x = (r / o for r, o in zip(transform.resized_size, transform.original_size))
        k = np.array(original, np.float64)  # pixel centres at integers: x' = (x + 0.5) * s + offset - 0.5
        k[0, :3] *= scale_x
        k[1, :3] *= scale_y
        k[0, 2] += 0.5 * scale_x + transform.offset[1] - 0.5
        k[1, 2] += 0.5 * scale_y + transform.offset[0] - 0.5
        intrinsics.append(k)
    views = np.arange(record.num_views)[:, None, None]
    rows, cols, inside = (np.stack(part) for part in zip(*grids))

    def sample(array: np.ndarray) -> np.ndarray:
        return np.where(inside, array[views, rows, cols], 0).astype(array.dtype)

    return SceneRecord(name=record.name, images=np.rint(scene.images * 255).clip(0, 255).astype(np.uint8),
                       depth=sample(record.depth), extrinsics=record.extrinsics,
                       intrinsics=np.stack(intrinsics).astype(np.float32), instance_ids=sample(record.instance_ids),
                       objects=record.objects, meta=record.meta, categories=record.categories)


@dataclass(frozen=True)
class Question:
    text: str
    kind: str
    expected_ids: frozenset[int]
    """Instance ids of the oracle scene that a correct answer names (exactly)."""
    expected_objects: frozenset[int]
    """The same as record object ids: what a correct answer names on any scene of these views."""
    expected_word: str | None = None
    """A word the answer text must contain (the count or the colour)."""

    def is_correct(self, reply: Answer) -> bool:
        """The verdict on the oracle scene the question was written for."""
        return set(reply.instance_ids) == self.expected_ids and self.has_expected_word(reply.text)

    def has_expected_word(self, text: str) -> bool:
        return self.expected_word is None or self.expected_word in re.findall(r"[a-z0-9]+", text.lower())


def match_to_objects(gt_ids: np.ndarray, labels: np.ndarray, min_iou: float = MIN_MATCH_IOU) -> dict[int, int]:
    """Scene instance id -> the ground-truth object it stands for.

    ``gt_ids`` ``[S, H, W]`` (0 = background) and ``labels`` ``[S, H, W]`` (negative = none) are
    at the same pixels. Each instance is matched to the object it overlaps best, IoU counted over
    the pixels of all views together (the question is about the scene, not one view), and kept
    only when that IoU reaches ``min_iou``. Above 0.5 two disjoint instances cannot both reach
    one object, so the matching is one to one. An instance that merges objects of like size,
    holds less than half of one, or takes in much floor and wall (ground-truth background: it
    only grows the union) stands for nothing; one that adds a much smaller neighbour or misses
    a small part still stands for the object.
    """
    overlap = label_overlap(gt_ids, labels)
    if not len(overlap.gt_ids):
        return {}
    iou = overlap.iou()
    best = iou.argmax(axis=0)
    return {int(instance): int(overlap.gt_ids[row]) for instance, row, value
            in zip(overlap.pred_ids, best, iou[best, np.arange(len(best))]) if value >= min_iou}


def judge_on_objects(question: Question, reply: Answer, matches: Mapping[int, int]) -> bool:
    """Whether ``reply``, given on a scene whose instances ``matches`` maps to objects, is right.

    Right means: every instance the reply names stands for an object (`match_to_objects`),
    no two for the same one, these objects are exactly the expected ones, and the text holds
    the expected word (a count must be the true number of objects). On the oracle scene every
    instance is its object (IoU 1), so the verdict is `Question.is_correct`'s.
    """
    objects = [matches.get(instance) for instance in reply.instance_ids]
    if None in objects or len(set(objects)) != len(objects) or set(objects) != question.expected_objects:
        return False
    return question.has_expected_word(reply.text)


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

    def ask(text: str, kind: str, group: list[ObjectInfo], word: str | None = None) -> None:
        questions.append(Question(text, kind, frozenset(to_instance[o.id] for o in group),
                                  frozenset(o.id for o in group), word))

    for obj in objects:
        if obj.id in described:
            ask(f"Where is the {described[obj.id]}?", "find", [obj])
    for colour in sorted({o.color_name for o in objects}):
        group = [o for o in objects if o.color_name == colour]
        if all(o.id in clear for o in group):
            ask(f"How many {colour} objects are there?", "count", group, str(len(group)))
    for category in sorted({o.category for o in objects}):
        group = [o for o in objects if o.category == category]
        if len(clear) < len(objects):  # a shape is judged on every object: all must be seen whole
            continue
        ask(f"How many {category}s are there?", "count", group, str(len(group)))
        if len(group) == 1:
            ask(f"What color is the {category}?", "colour", group, group[0].color_name)
    width = record.image_size[1]
    named = [o for o in objects if o.id in described]
    for a, b in zip(named, named[1:]):
        xa, xb = _image_x(record, 0, a.center), _image_x(record, 0, b.center)
        if abs(xa - xb) > side_margin * width:
            side = "left" if len(questions) % 2 == 0 else "right"
            left_one = a if xa < xb else b
            winner = left_one if side == "left" else (b if left_one is a else a)
            ask(f"Which is further {side} in view 0, the {described[a.id]} or the {described[b.id]}?", "side",
                [winner])
    for obj in named:
        others = [o for o in objects if o.id != obj.id]
        if len(others) < 2:
            continue
        distances = [float(np.linalg.norm(np.subtract(o.center, obj.center))) for o in others]
        first, second = np.argsort(distances)[:2]
        if distances[second] > nearest_ratio * distances[first]:
            ask(f"Which object is nearest to the {described[obj.id]}?", "nearest", [others[first]])
    return questions


@dataclass
class Outcome:
    question: Question
    mode: str
    reply: Answer
    matches: Mapping[int, int] | None = None
    """The answered scene's instance -> object map (`match_to_objects`); None: the oracle scene itself."""

    @property
    def correct(self) -> bool:
        if self.matches is None:
            return self.question.is_correct(self.reply)
        return judge_on_objects(self.question, self.reply, self.matches)


def run_questions(scene: Scene, questions: list[Question], backend: VLM, mode: str = "agent",
                  config: AgentConfig = AgentConfig(),
                  progress: Callable[[Outcome], None] | None = None,
                  matches: Mapping[int, int] | None = None, embedder: Embedder | None = None) -> list[Outcome]:
    """Answer every question (verify mode only gets the "find" questions it is made for).

    ``matches`` judges the answers on a scene other than the oracle the questions were written
    for (see `judge_on_objects`); ``embedder`` pre-filters the agent's find checks (`answer`)."""
    outcomes = []
    for question in questions:
        if mode == "verify" and question.kind != "find":
            continue
        reply = answer(scene, question.text, backend, mode, config, embedder=embedder)
        outcome = Outcome(question, mode, reply, matches)
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
