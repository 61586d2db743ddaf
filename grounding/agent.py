"""Answer a question about a scene: yes/no verification of every instance, or a tool-using agent.

* ``verify`` (the IGGT paper's method): every instance is highlighted and the VLM is asked
  "Is the highlighted object <target>?"; the instances answered yes are returned, ranked by
  P(yes).
* ``agent``: the VLM plans in a strict JSON action format (`agent_system_prompt`) and calls
  tools: the instance list, looking at highlights, yes/no checks, and spatial relations,
  orders and distances computed from the 3D reconstruction (`grounding.spatial`). Invalid
  actions cost a step and are recorded; after `AgentConfig.max_invalid` invalid replies in a
  row, or when the step budget is spent, the agent falls back to ``verify``.

Everything that happens goes into the returned `Answer.trace`, for display.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from iggt.errors import IGGTError
from iggt.progress import Progress
from iggt.scene import Scene

from .highlight import HighlightConfig, highlight_instance, overview
from .naming import NamingConfig, name_instances
from .spatial import ORDERS, RELATIONS, SceneGeometry, SpatialError, instance_table, relation_holds, sort_instances
from .vlm.base import VLM, Message, VLMAnswer, YesNo

MODES = ("verify", "agent")

@dataclass(frozen=True)
class AgentConfig:
    """How questions are answered."""

    max_steps: int = 10
    """Planning replies the agent may use before it falls back to verification."""
    max_invalid: int = 3
    """Invalid replies in a row that make the agent give up planning."""
    threshold: float = 0.5
    """P(yes) at or above which an instance passes a check."""
    max_look: int = 4
    """Instances one "look" action may show."""
    name_instances: bool = True
    """Agent mode: name every instance (one batched pass, cached) before planning."""
    highlight: HighlightConfig = HighlightConfig()
    naming: NamingConfig = NamingConfig()


@dataclass
class TraceStep:
    """One thing that happened while answering; ``kind`` says what."""

    kind: str
    """"plan" (a VLM reply), "tool", "check", "invalid", "error", "naming", "fallback" or "answer"."""
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    images: list[Image.Image] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"kind": self.kind, "summary": self.summary, "detail": self.detail, "images": len(self.images)}


@dataclass
class Answer:
    """The answer to one question, with the trace of how it was reached."""

    question: str
    mode: str
    text: str
    instance_ids: list[int]
    probabilities: dict[int, float]
    trace: list[TraceStep]
    vlm_calls: int
    vlm_seconds: float
    """Wall-clock time during which at least one VLM request was running."""
    total_seconds: float
    instance_names: dict[int, str | None] = field(default_factory=dict)
    """Names of the answered instances (from the VLM naming pass in agent mode, else the scene's)."""
    fell_back: bool = False
    scene: Scene | None = None
    """The scene the answer was computed on: in agent mode a copy whose instances carry VLM names."""

    @property
    def seconds_outside_vlm(self) -> float:
        return max(0.0, self.total_seconds - self.vlm_seconds)

    def to_json(self) -> dict:
        return {"question": self.question, "mode": self.mode, "text": self.text,
                "instance_ids": self.instance_ids,
                "instance_names": {str(k): v for k, v in self.instance_names.items()},
                "probabilities": {str(k): v for k, v in self.probabilities.items()},
                "fell_back": self.fell_back, "vlm_calls": self.vlm_calls, "vlm_seconds": self.vlm_seconds,
                "total_seconds": self.total_seconds, "trace": [s.to_json() for s in self.trace]}


def scene_fingerprint(scene: Scene) -> str:
    """A short id of a scene's pictures and instances, for caching answers across calls."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(scene.images[:, ::4, ::4]).tobytes())
    if scene.instances is not None:
        digest.update(np.ascontiguousarray(scene.instances.labels[:, ::2, ::2]).tobytes())
    return digest.hexdigest()[:16]


class _MeteredVLM:
    """Counts a backend's requests (cache hits excluded) and the wall time while any is running."""

    def __init__(self, backend: VLM):
        self.backend = backend
        self.name = backend.name
        self.cache = backend.cache
        self.max_concurrency = backend.max_concurrency
        self.calls = 0
        self.busy_seconds = 0.0
        self.failures: list[str] = []
        """Why each failed request failed (no reply at all: unreachable, timeout, HTTP error)."""
        self._active = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def _leave(self, counted: bool, error: str | None = None) -> None:
        with self._lock:
            self._active -= 1
            self.calls += counted
            if error is not None:
                self.failures.append(error)
            if self._active == 0:
                self.busy_seconds += time.perf_counter() - self._since

    def ask(self, images, prompt, system=None, history=None) -> VLMAnswer:
        self._enter()
        reply = None
        try:
            reply = self.backend.ask(images, prompt, system, history)
            return reply
        finally:
            self._leave(True, reply.error if reply is not None else None)

    def yes_no(self, images, question, cache_key=None) -> YesNo:
        self._enter()
        answer = None
        try:
            answer = self.backend.yes_no(images, question, cache_key)
            return answer
        finally:  # an error with no reply text is a failed request; unclear replies are not
            failed = answer is not None and answer.error is not None and not answer.raw_text
            self._leave(answer is None or not answer.cached, answer.error if failed else None)


def _lead_with_failures(text: str, vlm: _MeteredVLM) -> str:
    """The answer, led by what failed: a VLM that did not reply is not a VLM that said no."""
    failed = vlm.failures
    if not failed:
        return text
    if len(failed) >= vlm.calls:
        return f"The VLM failed: {failed[0]} ({len(failed)} of {vlm.calls} requests); no answer."
    return (f"The VLM failed in {len(failed)} of {vlm.calls} requests ({failed[0]}): "
            f"this answer may be incomplete. {text}")


_TARGET_PREFIX = re.compile(r"^(please\s+)?(find|show( me)?|highlight|locate|where is|where are|which (object|one|"
                            r"objects|ones) (is|are)|what is|is there)\s+", re.IGNORECASE)


_STRUCTURE_WORDS = re.compile(r"\b(floors?|ground|walls?|ceilings?|planes?|surfaces?|structures?|rooms?|"
                              r"backgrounds?|sky|table ?tops?|countertops?)\b", re.IGNORECASE)


def asks_about_structure(question: str) -> bool:
    """Whether a question names floor, walls, ceiling, planes or the like: then the instances flagged as
    structure (`iggt.structure`) are reasoned about too; otherwise only the objects are."""
    return bool(_STRUCTURE_WORDS.search(question))


def target_phrase(question: str) -> str:
    """The object description inside a query: "Where is the red cube?" -> "the red cube"."""
    phrase = _TARGET_PREFIX.sub("", question.strip()).strip().rstrip("?.!").strip()
    return phrase or question.strip()


def check_question(target: str) -> str:
    return f'Is the object outlined in magenta {target}?'


def agent_system_prompt(max_look: int) -> str:
    """The planner's instructions: the tools and the strict JSON action format."""
    return f"""You answer questions about a 3D scene reconstructed from several photos.
The scene is split into instances with integer ids. You cannot see the scene directly: you call tools.
Reply with exactly one JSON object and nothing else, one of:
{{"action": "list_instances"}}
  -> every instance: id, name (may be null), centroid, size, image_x_in_view, depth_in_view, height.
{{"action": "look", "ids": [ID, ...]}}
  -> pictures of at most {max_look} instances (outlined in magenta, the rest dimmed); "ids": [] shows the
     whole scene with every instance numbered.
{{"action": "check", "ids": [ID, ...] or "all", "question": "Is the object outlined in magenta red?"}}
  -> yes/no for every listed instance, with P(yes) and the number of yes answers (use it to count).
{{"action": "relation", "a": ID, "relation": R, "b": ID, "view": V}}
  -> whether "a R b" holds, R one of {", ".join(RELATIONS)}; left/right and front/behind are as seen
     from camera view V (default 0), above/below along the vertical.
{{"action": "sort", "ids": [ID, ...] or "all", "by": O, "reference": ID or null, "view": V}}
  -> the ids ordered by O, one of {", ".join(ORDERS)}; "nearest_to"/"farthest_from" need a reference.
{{"action": "distance", "a": ID, "b": ID}}
  -> the 3D distance between two instances (scene units).
{{"action": "answer", "ids": [ID, ...], "text": "one sentence answering the question"}}
  -> ends the task. "ids" are the instances the answer refers to (may be empty).
Positions, distances and sizes come from the 3D reconstruction: trust them over your impression of a picture."""

_ACTION_FIELDS = {
    "list_instances": (set(), set()),
    "look": ({"ids"}, set()),
    "check": ({"ids", "question"}, set()),
    "relation": ({"a", "relation", "b"}, {"view"}),
    "sort": ({"ids", "by"}, {"reference", "view"}),
    "distance": ({"a", "b"}, set()),
    "answer": ({"ids", "text"}, set()),
}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_action(text: str) -> tuple[dict | None, str | None]:
    """The action of a planning reply, or None and what is wrong with it.

    Accepted: one JSON object (optionally in one ```json fence) whose "action" is known and
    whose fields are exactly the documented ones.
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        action = json.loads(body)
    except json.JSONDecodeError as err:
        return None, f"not a single JSON object ({err.msg})"
    if not isinstance(action, dict):
        return None, "not a JSON object"
    name = action.get("action")
    if name not in _ACTION_FIELDS:
        return None, f"unknown action {name!r}: use one of {', '.join(_ACTION_FIELDS)}"
    required, optional = _ACTION_FIELDS[name]
    given = set(action) - {"action"}
    if required - given:
        return None, f"{name} needs field(s) {', '.join(sorted(required - given))}"
    if given - required - optional:
        return None, f"{name} has unknown field(s) {', '.join(sorted(given - required - optional))}"
    return action, None


class _Grounder:
    """Answers questions about one scene with one backend (holds the per-question caches)."""

    def __init__(self, scene: Scene, backend: VLM, config: AgentConfig, progress: Progress | None):
        if scene.instances is None or scene.instances.count == 0:
            raise ValueError("the scene has no instances: segment it (iggt.instances) before asking questions")
        self.scene = scene
        self.vlm = _MeteredVLM(backend)
        self.config = config
        self.progress = progress or (lambda fraction, message: None)
        self.key = scene_fingerprint(scene)
        self.trace: list[TraceStep] = []
        self._highlights: dict[int, Image.Image] = {}
        self.geometry = SceneGeometry.from_scene(scene)
        self.ids = list(range(scene.instances.count))
        """The instances reasoned about: every one, or the objects only (`answer` leaves structure out)."""

    def highlight(self, instance_id: int) -> Image.Image:
        if instance_id not in self._highlights:
            self._highlights[instance_id] = highlight_instance(self.scene, instance_id, self.config.highlight).image
        return self._highlights[instance_id]

    # -- verification ----------------------------------------------------------------------
    def check(self, ids: list[int], question: str) -> dict[int, YesNo]:
        """The yes/no ``question`` about each instance, asked in parallel (cached per scene)."""
        images = {k: self.highlight(k) for k in ids}

        def ask(k: int) -> YesNo:
            return self.vlm.yes_no([images[k]], question, cache_key=(self.key, k, question))

        with ThreadPoolExecutor(max_workers=self.vlm.max_concurrency) as pool:
            answers = dict(zip(ids, pool.map(ask, ids)))
        for k, reply in answers.items():
            if reply.answer is None:
                self.trace.append(TraceStep("error", f"instance {k}: no clear yes/no ({reply.error})",
                                            {"instance": k, "question": question, "raw_text": reply.raw_text}))
        return answers

    def passing(self, answers: dict[int, YesNo]) -> list[int]:
        """Instances answered yes with P(yes) >= threshold, most probable first."""
        passed = [k for k, a in answers.items()
                  if a.answer is not None and a.probability is not None and a.probability >= self.config.threshold]
        return sorted(passed, key=lambda k: (-answers[k].probability, k))

    def verify(self, question: str) -> tuple[str, list[int], dict[int, float]]:
        target = target_phrase(question)
        prompt = check_question(target)
        self.progress(0.1, f"checking {len(self.ids)} instances")
        answers = self.check(list(self.ids), prompt)
        probabilities = {k: a.probability for k, a in answers.items() if a.probability is not None}
        passed = self.passing(answers)
        self.trace.append(TraceStep("check", f"{prompt} -> yes for {passed or 'none'}",
                                    {"question": prompt, "yes": passed, "probabilities": probabilities},
                                    [self.highlight(k) for k in passed]))
        if passed:
            text = f"{len(passed)} instance(s) match {target!r}: " + ", ".join(self._label(k) for k in passed)
        else:
            text = f"No instance matches {target!r}."
        return text, passed, probabilities

    def _label(self, k: int) -> str:
        name = self.scene.instances.info[k].name
        return f"#{k} ({name})" if name else f"#{k}"

    # -- tools -----------------------------------------------------------------------------
    def _ids(self, value, allow_all: bool = True) -> list[int]:
        if allow_all and value == "all":
            return list(self.ids)
        if not (isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)):
            raise SpatialError('"ids" must be a list of instance ids' + (' or "all"' if allow_all else ""))
        self.geometry.check_ids(value)
        return value

    def _int(self, value, what: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpatialError(f'"{what}" must be an integer')
        return value

    def run_tool(self, action: dict) -> tuple[dict, list[Image.Image]]:
        """Execute one (already well-formed) action; `SpatialError` for bad arguments."""
        name = action["action"]
        if name == "list_instances":
            return {"instances": [row for row in instance_table(self.geometry) if row["id"] in self.ids]}, []
        if name == "look":
            ids = self._ids(action["ids"], allow_all=False)
            if len(ids) > self.config.max_look:
                raise SpatialError(f"look shows at most {self.config.max_look} instances at once")
            if not ids:
                return {"shown": "overview with every instance numbered"}, [overview(self.scene).image]
            return {"shown": ids, "note": "one image per id, in this order"}, [self.highlight(k) for k in ids]
        if name == "check":
            if not isinstance(action["question"], str) or not action["question"].strip():
                raise SpatialError('"question" must be a yes/no question')
            answers = self.check(self._ids(action["ids"]), action["question"])
            passed = self.passing(answers)
            return {"yes": passed, "no": [k for k, a in answers.items() if a.answer is not None and k not in passed],
                    "unanswered": [k for k, a in answers.items() if a.answer is None],
                    "count_yes": len(passed),
                    "p_yes": {str(k): round(a.probability, 3) for k, a in answers.items()
                              if a.probability is not None}}, []
        if name == "relation":
            a, b = self._int(action["a"], "a"), self._int(action["b"], "b")
            view = self._int(action.get("view", 0), "view")
            holds, margin = relation_holds(self.geometry, a, action["relation"], b, view)
            return {"holds": holds, "margin": round(margin, 3)}, []
        if name == "sort":
            reference = action.get("reference")
            if reference is not None:
                reference = self._int(reference, "reference")
            ordered = sort_instances(self.geometry, self._ids(action["ids"]), action["by"],
                                     self._int(action.get("view", 0), "view"), reference)
            return {"order": [k for k, _ in ordered], "values": {str(k): round(v, 3) for k, v in ordered}}, []
        if name == "distance":
            return {"distance": round(self.geometry.distance(self._int(action["a"], "a"),
                                                              self._int(action["b"], "b")), 3)}, []
        raise SpatialError(f"unknown action {name!r}")

    # -- agent -----------------------------------------------------------------------------
    def plan(self, question: str) -> tuple[str, list[int], dict[int, float]] | None:
        """Run the planning loop; None when it ended without a valid answer."""
        system = agent_system_prompt(self.config.max_look)
        count = self.scene.instances.count
        scope = (f"ids 0 to {count - 1}" if len(self.ids) == count else
                 f"of which {len(self.ids)} are objects, ids {self.ids} (the others are floor, walls and "
                 "other structure)")
        pending = Message("user", f"Question: {question}\nThe scene has {count} instances, {scope}, "
                                  f"seen in {self.scene.num_views} views, 0 to {self.scene.num_views - 1}. "
                                  "Reply with your first action.")
        history: list[Message] = []
        invalid = 0
        for step in range(self.config.max_steps):
            self.progress(0.1 + 0.8 * step / self.config.max_steps, f"planning step {step + 1}")
            reply = self.vlm.ask(pending.images, pending.text, system, history)
            if reply.error is not None:
                self.trace.append(TraceStep("error", f"step {step + 1}: the VLM failed ({reply.error})"))
                invalid += 1
                if invalid >= self.config.max_invalid:
                    return None
                continue
            self.trace.append(TraceStep("plan", reply.text[:300], {"step": step + 1, "reply": reply.text}))
            history += [pending, Message("assistant", reply.text)]
            action, problem = parse_action(reply.text)
            if action is not None and action["action"] == "answer":
                try:
                    ids = self._ids(action["ids"], allow_all=False)
                    if not isinstance(action["text"], str) or not action["text"].strip():
                        raise SpatialError('"text" must be a sentence')
                    return action["text"].strip(), ids, {}
                except SpatialError as err:
                    problem = str(err)
            images: list[Image.Image] = []
            if problem is None:
                try:
                    result, images = self.run_tool(action)
                    self.trace.append(TraceStep("tool", f"{action['action']}: {json.dumps(result)[:300]}",
                                                {"action": action, "result": result}, images))
                    pending = Message("user", f"Result of {action['action']}: {json.dumps(result)}\n"
                                              "Reply with your next action.", images)
                    invalid = 0
                    continue
                except SpatialError as err:
                    problem = str(err)
            invalid += 1
            self.trace.append(TraceStep("invalid", f"step {step + 1}: {problem}", {"reply": reply.text}))
            if invalid >= self.config.max_invalid:
                return None
            pending = Message("user", f"Invalid action: {problem}. Reply with exactly one JSON object as documented.")
        return None


def answer(scene: Scene, question: str, backend: VLM, mode: str = "verify", config: AgentConfig = AgentConfig(),
           progress: Progress | None = None) -> Answer:
    """Answer ``question`` about ``scene`` with ``backend`` in ``mode`` ("verify" or "agent")."""
    if mode not in MODES:
        raise IGGTError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if not question.strip():
        raise IGGTError("the question is empty")
    start = time.perf_counter()
    grounder = _Grounder(scene, backend, config, progress)
    if not asks_about_structure(question) and scene.instances.object_ids:
        grounder.ids = scene.instances.object_ids
        left_out = [i.id for i in scene.instances.info if i.structure]
        if left_out:
            grounder.trace.append(TraceStep("scope", f"left out {len(left_out)} structure instance(s) (floor, "
                                                     f"walls, large planes): {left_out}", {"left_out": left_out}))
    fell_back = False
    result = None
    if mode == "agent":
        if config.name_instances:
            grounder.progress(0.05, "naming instances")
            named, notes = name_instances(scene, grounder.vlm, grounder.key, config.naming)
            grounder.scene = named
            grounder.geometry = SceneGeometry.from_scene(named)
            grounder.trace.append(TraceStep("naming", "; ".join(f"#{i.id}: {i.name}" for i in named.instances.info),
                                            {"notes": notes}))
        result = grounder.plan(question)
        if result is None:
            fell_back = True
            grounder.trace.append(TraceStep("fallback", "the agent gave no valid answer: falling back to verify mode"))
    if result is None:
        result = grounder.verify(question)
    text, ids, probabilities = result
    text = _lead_with_failures(text, grounder.vlm)
    grounder.trace.append(TraceStep("answer", text, {"instance_ids": ids},
                                    [grounder.highlight(k) for k in ids[:config.max_look]]))
    grounder.progress(1.0, "done")
    names = {k: grounder.scene.instances.info[k].name for k in ids}
    return Answer(question, mode, text, ids, probabilities, grounder.trace, grounder.vlm.calls,
                  grounder.vlm.busy_seconds, time.perf_counter() - start, names, fell_back, grounder.scene)
