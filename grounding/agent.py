"""Answer a question about a scene: yes/no verification of every instance, or a tool-using agent.

* ``verify`` (the IGGT paper's method): every instance is highlighted and the VLM is asked
  "Is the highlighted object <target>?"; the instances answered yes are returned, ranked by
  P(yes).
* ``agent``: the VLM plans and calls tools: the instance list, looking at highlights, yes/no
  checks, and spatial relations, orders and distances computed from the 3D reconstruction
  (`grounding.spatial`). Actions travel as tool calls (`agent_tools`) where the server takes
  them, else as one JSON object per reply (`agent_system_prompt`), found in prose or a fence.
  Invalid actions cost a step and are recorded; after `AgentConfig.max_invalid` invalid replies
  in a row, or when the step budget is spent, the agent falls back to ``verify``. Given an
  embedding model (`answer`'s ``embedder``), a check of every instance whose question says what
  the instance is (the agent's find) first ranks the instances by embedding score and asks only
  about the likely ones (`PrefilterConfig`, `grounding.openvocab.shortlist`): fewer VLM calls.

In both modes the answer then checks itself: an answered instance whose name contradicts the
question's target, or that failed an earlier check the target implies, is checked again in its
best view, cropped tighter, and left out if it still does not pass. Structure (floor, walls) is
reasoned about only when the question names it. A "where" question is answered with where the
instances are: in which views, where in them, and relative to the nearest other object.

Everything that happens goes into the returned `Answer.trace`, for display.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from iggt.errors import IGGTError
from iggt.progress import Progress
from iggt.scene import Scene

from . import openvocab
from .embedders import Embedder
from .highlight import HighlightConfig, highlight_instance, overview
from .naming import NamingConfig, name_instances
from .spatial import (ORDERS, RELATIONS, SceneGeometry, SpatialError, instance_table, location_sentence,
                      nearest_of, relation_holds, sort_instances)
from .targets import (check_question, contradicts, is_count_question, is_where_question, names_the_answer,
                      plural_and_singular, target_phrase, words_of)
from .vlm.base import VLM, Message, ToolCall, VLMAnswer, YesNo
from .vlm.replies import single_json_object

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
    recheck: bool = True
    """Check an answered instance again, in its best view cropped tighter, when its name or an
    earlier check contradicts the question's target; leave it out if it still does not pass."""
    highlight: HighlightConfig = HighlightConfig()
    recheck_highlight: HighlightConfig = HighlightConfig(max_views=1, context=0.12)
    naming: NamingConfig = NamingConfig()
    prefilter: openvocab.PrefilterConfig = openvocab.PrefilterConfig()
    """Agent mode, with an embedder: which instances a find check still asks the VLM about."""
    max_trace_text: int = 4000
    """Characters of a reply or its reasoning kept in the trace."""


@dataclass
class TraceStep:
    """One thing that happened while answering; ``kind`` says what."""

    kind: str
    """"plan" (a VLM reply), "tool", "check", "recheck", "invalid", "error", "naming", "scope", "prefilter",
    "fallback" or "answer"."""
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
    """Names of the answered instances (from the scene, else from the VLM's naming pass)."""
    locations: dict[int, str] = field(default_factory=dict)
    """Where each answered instance is, one sentence each (views, place in the best view, nearest object)."""
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
                "locations": {str(k): v for k, v in self.locations.items()},
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
        self.checks = 0
        self.unclear: list[str] = []
        """The reply text of each yes/no check that came back neither yes nor no."""
        self._active = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def _leave(self, counted: bool, error: str | None = None, check: YesNo | None = None) -> None:
        with self._lock:
            self._active -= 1
            self.calls += counted
            if error is not None:
                self.failures.append(error)
            if check is not None:
                self.checks += 1
                if check.answer is None and check.raw_text:
                    self.unclear.append(check.raw_text)
            if self._active == 0:
                self.busy_seconds += time.perf_counter() - self._since

    def ask(self, images, prompt, system=None, history=None, tools=None) -> VLMAnswer:
        self._enter()
        reply = None
        try:
            reply = self.backend.ask(images, prompt, system, history, tools)
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
            self._leave(answer is None or not answer.cached, answer.error if failed else None, answer)


def _lead_with_failures(text: str, vlm: _MeteredVLM) -> str:
    """The answer, led by what failed: a VLM that did not reply, or replied neither yes nor no, is
    not a VLM that said no."""
    failed, unclear = vlm.failures, vlm.unclear
    if failed:
        if len(failed) >= vlm.calls:
            return f"The VLM failed: {failed[0]} ({len(failed)} of {vlm.calls} requests); no answer."
        return (f"The VLM failed in {len(failed)} of {vlm.calls} requests ({failed[0]}): "
                f"this answer may be incomplete. {text}")
    if not unclear:
        return text
    example = " ".join(unclear[0].split())
    example = example if len(example) <= 80 else example[:79] + "…"
    if len(unclear) >= vlm.checks:
        return f"The VLM gave no clear yes or no to any of its {vlm.checks} checks (e.g. “{example}”); no answer."
    return (f"The VLM gave no clear yes or no to {len(unclear)} of {vlm.checks} checks (e.g. “{example}”): "
            f"this answer may be incomplete. {text}")


_STRUCTURE_WORDS = re.compile(r"\b(floors?|ground|walls?|ceilings?|planes?|surfaces?|structures?|rooms?|"
                              r"backgrounds?|sky|table ?tops?|countertops?)\b", re.IGNORECASE)


def asks_about_structure(question: str) -> bool:
    """Whether a question names floor, walls, ceiling, planes or the like: then the instances flagged as
    structure (`iggt.structure`) are reasoned about too; otherwise only the objects are."""
    return bool(_STRUCTURE_WORDS.search(question))


def agent_system_prompt(max_look: int) -> str:
    """The planner's instructions: the tools, and the JSON action format for servers without tool calling."""
    return f"""You answer questions about a 3D scene reconstructed from several photos.
The scene is split into instances with integer ids. You cannot see the scene directly: you call tools.
If you are given tools, call exactly one tool per reply. Otherwise reply with exactly one JSON object and
nothing else, one of:
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
  -> the 3D distance between two instances, in the units it names.
{{"action": "answer", "ids": [ID, ...], "text": "one sentence answering the question"}}
  -> ends the task. "ids" are the instances the answer refers to (may be empty).
Positions, distances and sizes come from the 3D reconstruction: trust them over your impression of a picture."""


_ID = {"type": "integer"}
_ID_LIST = {"type": "array", "items": _ID}
_IDS_OR_ALL = {"anyOf": [_ID_LIST, {"type": "string", "enum": ["all"]}], "description": 'instance ids, or "all"'}
_VIEW = {"type": "integer", "description": "camera view, default 0"}
_ACTIONS: dict[str, tuple[str, dict[str, dict], tuple[str, ...]]] = {
    "list_instances": ("Every instance: id, name, centroid, size, image x and depth in view 0, height.", {}, ()),
    "look": ("Pictures of instances, each outlined in magenta; [] shows the whole scene numbered.",
             {"ids": _ID_LIST}, ("ids",)),
    "check": ("Ask a yes/no question about each listed instance (P(yes), the yes count).",
              {"ids": _IDS_OR_ALL, "question": {"type": "string"}}, ("ids", "question")),
    "relation": ("Whether a <relation> b holds, seen from a view.",
                 {"a": _ID, "relation": {"type": "string", "enum": list(RELATIONS)}, "b": _ID, "view": _VIEW},
                 ("a", "relation", "b")),
    "sort": ("Order instances by a measure from the 3D reconstruction.",
             {"ids": _IDS_OR_ALL, "by": {"type": "string", "enum": list(ORDERS)},
              "reference": {"anyOf": [_ID, {"type": "null"}]}, "view": _VIEW}, ("ids", "by")),
    "distance": ("The 3D distance between two instances.", {"a": _ID, "b": _ID}, ("a", "b")),
    "answer": ("End the task with the answer and the instances it refers to.",
               {"ids": _ID_LIST, "text": {"type": "string"}}, ("ids", "text")),
}
"""Every action: what it does, its arguments (JSON schema) and the required ones; the rest are optional."""


def agent_tools() -> list[dict]:
    """The actions as OpenAI tool definitions (the same names and arguments as the JSON format)."""
    return [{"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": list(required),
                       "additionalProperties": False}}}
            for name, (description, properties, required) in _ACTIONS.items()]


def _checked_action(action: dict) -> tuple[dict | None, str | None]:
    """The action if its name is known and its fields are exactly the documented ones."""
    name = action.get("action")
    if name not in _ACTIONS:
        return None, f"unknown action {name!r}: use one of {', '.join(_ACTIONS)}"
    _, properties, required_fields = _ACTIONS[name]
    required, given = set(required_fields), set(action) - {"action"}
    if required - given:
        return None, f"{name} needs field(s) {', '.join(sorted(required - given))}"
    if given - set(properties):
        return None, f"{name} has unknown field(s) {', '.join(sorted(given - set(properties)))}"
    return action, None


def parse_action(text: str) -> tuple[dict | None, str | None]:
    """The action of a planning reply, or None and what is wrong with it.

    Accepted: one JSON object, alone or in prose or a fence, whose "action" is known and whose
    fields are exactly the documented ones.
    """
    action, problem = single_json_object(text)
    if action is None:
        return None, problem
    return _checked_action(action)


def action_from_call(call: ToolCall) -> tuple[dict | None, str | None]:
    """The action of a tool call, checked as strictly as a JSON reply."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as err:
        return None, f"the arguments of {call.name!r} are not JSON ({err.msg})"
    if not isinstance(arguments, dict):
        return None, f"the arguments of {call.name!r} are not a JSON object"
    if "action" in arguments:
        return None, f"{call.name} has unknown field(s) action"
    return _checked_action({"action": call.name, **arguments})


_CHECK_PREFIX = re.compile(
    r"^\s*(is|are)\s+(it|this|that|the\s+(highlighted\s+)?(objects?|things?|instances?|ones?)"
    r"(\s+(outlined|highlighted|marked)(\s+in\s+magenta)?)?)\s+(?P<rest>.+?)[\s?.!]*$", re.IGNORECASE)
_ARTICLE = re.compile(r"^((a|an|the|any|some)\s+)+", re.IGNORECASE)
_NOT_WHAT_IT_IS = re.compile(
    r"^(on|in|inside|into|near|at|with|without|under|over|above|below|behind|beside|by|next|left|right|between|"
    r"part|made|of|from|to|touching|closer|nearer|farther|further|bigger|smaller|larger|taller|shorter)\b",
    re.IGNORECASE)


def check_description(question: str) -> str | None:
    """What a yes/no check says the instance is ("Is the object outlined in magenta a red cube?" -> "red
    cube"), or None when it asks something else (where it is, what it is near, how it compares): only
    a description can be ranked by embedding score."""
    match = _CHECK_PREFIX.match(question)
    if match is None:
        return None
    phrase = _ARTICLE.sub("", match.group("rest")).strip()
    if not phrase or _NOT_WHAT_IT_IS.match(phrase) or not names_the_answer(phrase):
        return None
    return phrase


def instance_label(instance_id: int, name: str | None) -> str:
    """How an answer names an instance: "#5 yellow cube", or "#5" without a name."""
    return f"#{instance_id} {name}" if name else f"#{instance_id}"


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class _Grounder:
    """Answers questions about one scene with one backend (holds the per-question caches)."""

    def __init__(self, scene: Scene, backend: VLM, config: AgentConfig, progress: Progress | None,
                 embedder: Embedder | None = None):
        if scene.instances is None or scene.instances.count == 0:
            raise ValueError("the scene has no instances: segment it (iggt.instances) before asking questions")
        self.scene = scene
        self.vlm = _MeteredVLM(backend)
        self.config = config
        self.embedder = embedder
        self.progress = progress or (lambda fraction, message: None)
        self.key = scene_fingerprint(scene)
        self.trace: list[TraceStep] = []
        self._highlights: dict[tuple[int, bool], Image.Image] = {}
        self.geometry = SceneGeometry.from_scene(scene)
        self.ids = list(range(scene.instances.count))
        """The instances reasoned about: every one, or the objects only (`answer` leaves structure out)."""
        self.verdicts: dict[int, dict[str, bool]] = {}
        """Every clear check answer of this question: instance -> check question -> yes."""

    def highlight(self, instance_id: int, sharp: bool = False) -> Image.Image:
        """The instance's highlight; ``sharp``: its best view only, cropped tighter (for re-checks)."""
        key = (instance_id, sharp)
        if key not in self._highlights:
            config = self.config.recheck_highlight if sharp else self.config.highlight
            self._highlights[key] = highlight_instance(self.scene, instance_id, config).image
        return self._highlights[key]

    def name(self, k: int) -> str | None:
        """The instance's name: the VLM's, else its open-vocabulary label."""
        return self.scene.instances.info[k].display_name

    def label(self, k: int) -> str:
        return instance_label(k, self.name(k))

    def name_instances(self, ids: list[int]) -> None:
        """Give the instances without a name one (a batched VLM pass, cached); structure is named as such."""
        named, notes = name_instances(self.scene, self.vlm, self.key, self.config.naming, ids=ids)
        self.scene = named
        self.geometry = SceneGeometry.from_scene(named)
        self.trace.append(TraceStep("naming", "; ".join(f"#{k}: {self.name(k)}" for k in ids), {"notes": notes}))

    # -- verification ----------------------------------------------------------------------
    def check(self, ids: list[int], question: str, sharp: bool = False) -> dict[int, YesNo]:
        """The yes/no ``question`` about each instance, asked in parallel (cached per scene)."""
        images = {k: self.highlight(k, sharp) for k in ids}

        def ask(k: int) -> YesNo:
            return self.vlm.yes_no([images[k]], question, cache_key=(self.key, k, question, sharp))

        with ThreadPoolExecutor(max_workers=self.vlm.max_concurrency) as pool:
            answers = dict(zip(ids, pool.map(ask, ids)))
        limit = self.config.max_trace_text
        for k, reply in answers.items():
            if reply.answer is None:
                self.trace.append(TraceStep("error", f"instance {k}: no clear yes/no ({reply.error})",
                                            {"instance": k, "question": question,
                                             "raw_text": _clip(reply.raw_text, limit),
                                             "reasoning": _clip(reply.reasoning, limit)}))
            elif not sharp:
                self.verdicts.setdefault(k, {})[question] = reply.answer
        return answers

    def prefilter(self, ids: list[int], question: str) -> tuple[list[int], list[int]]:
        """The instances a check asks the VLM about, and those the embedding ranking leaves out.

        Only a find is pre-filtered: a check of every instance reasoned about whose question says
        what the instance is. Instances the ranking does not score (structure) are always asked
        about. The trace records the ranking and the checks saved, or why none were.
        """
        config = self.config.prefilter
        if (self.embedder is None or not config.enabled or set(ids) != set(self.ids)
                or len(ids) <= config.keep_top):
            return ids, []
        phrase = check_description(question)
        detail: dict[str, Any] = {"query": phrase, "embedder": self.embedder.name, "candidates": len(ids)}
        kept, why = None, "the check does not say what the instance is"
        if phrase is not None:
            try:
                ranking = openvocab.find(self.scene, phrase, self.embedder)
            except IGGTError as err:
                why = str(err)
            else:
                scored = [(k, score) for k, score in ranking.ranked if k in ids]
                detail["scores"] = {str(k): round(score, 3) for k, score in scored}
                kept = openvocab.shortlist(replace(ranking, ranked=scored), config)
                if kept is None:
                    why = "the embedding scores are flat"
        if kept is None:
            self.trace.append(TraceStep("prefilter", f"pre-filter: {why}; asking about all {len(ids)} instances",
                                        {**detail, "why": why, "saved": 0}))
            return ids, []
        skipped = [k for k, _ in scored if k not in kept]
        asked = [k for k in ids if k not in skipped]
        self.trace.append(TraceStep(
            "prefilter", f"pre-filter ({self.embedder.name}, {phrase!r}): asking about {len(asked)} of {len(ids)} "
                         f"instances, {len(skipped)} checks saved",
            {**detail, "asked": asked, "skipped": skipped, "saved": len(skipped)}))
        return asked, skipped

    def passing(self, answers: dict[int, YesNo]) -> list[int]:
        """Instances answered yes with P(yes) >= threshold, most probable first."""
        passed = [k for k, a in answers.items()
                  if a.answer is not None and a.probability is not None and a.probability >= self.config.threshold]
        return sorted(passed, key=lambda k: (-answers[k].probability, k))

    def verify(self, question: str) -> tuple[list[int], dict[int, float]]:
        """The instances that pass the target's check, most probable first, and every P(yes)."""
        prompt = check_question(target_phrase(question))
        self.progress(0.1, f"checking {len(self.ids)} instances")
        answers = self.check(list(self.ids), prompt)
        probabilities = {k: a.probability for k, a in answers.items() if a.probability is not None}
        passed = self.passing(answers)
        self.trace.append(TraceStep("check", f"{prompt} -> yes for {passed or 'none'}",
                                    {"question": prompt, "yes": passed, "probabilities": probabilities},
                                    [self.highlight(k) for k in passed]))
        return passed, probabilities

    def others(self, ids: list[int]) -> list[int]:
        """The instances an answer's locations are told relative to: the other ones reasoned about."""
        return [k for k in self.ids if k not in ids] or list(self.ids)

    def answer_text(self, question: str, ids: list[int]) -> str:
        """The answer as verify mode writes it: a count, or the matching instances by number and name."""
        target = target_phrase(question)
        labels = ", ".join(self.label(k) for k in ids)
        if is_count_question(question):
            plural, one = plural_and_singular(target)
            if not ids:
                return f"There are no {plural}."
            return (f"There is 1 {one.split(' ', 1)[1]}: {labels}." if len(ids) == 1 else
                    f"There are {len(ids)} {plural}: {labels}.")
        if not ids:
            return f"No instance matches {target!r}."
        return f"{len(ids)} instance(s) match {target!r}: {labels}."

    def confirm(self, question: str, ids: list[int]) -> list[int]:
        """The answered instances that survive a re-check (see the module docstring), in order."""
        target = target_phrase(question)
        if not self.config.recheck or not ids or not names_the_answer(target):
            return ids
        wanted = words_of(target)
        doubts = {}
        for k in ids:
            failed = [q for q, yes in self.verdicts.get(k, {}).items() if not yes and words_of(q) <= wanted]
            if contradicts(self.name(k), target):
                doubts[k] = f"its name {self.name(k)!r} contradicts {target!r}"
            elif failed:
                doubts[k] = f"it failed the check {failed[0]!r}"
        if not doubts:
            return ids
        prompt = check_question(target)
        answers = self.check(list(doubts), prompt, sharp=True)
        kept = [k for k in ids if k not in doubts or answers[k].answer is True]
        for k, why in doubts.items():
            verdict = "kept" if k in kept else "left out"
            self.trace.append(TraceStep("recheck", f"#{k}: {why}; in its best view, cropped tighter: "
                                                   f"{_verdict_word(answers[k])} -> {verdict}",
                                        {"instance": k, "why": why, "question": prompt, "kept": k in kept},
                                        [self.highlight(k, sharp=True)]))
        return kept

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
            asked, skipped = self.prefilter(self._ids(action["ids"]), action["question"])
            answers = self.check(asked, action["question"])
            passed = self.passing(answers)
            result = {"yes": passed, "no": [k for k, a in answers.items() if a.answer is not None and k not in passed],
                      "unanswered": [k for k, a in answers.items() if a.answer is None],
                      "count_yes": len(passed),
                      "p_yes": {str(k): round(a.probability, 3) for k, a in answers.items()
                                if a.probability is not None}}
            if skipped:
                result["not_asked"] = skipped
                result["note"] = ("not_asked: an embedding model ranked them far below the best for this "
                                  "description; check them by id if they matter")
            return result, []
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
                                                              self._int(action["b"], "b")), 3),
                    "units": self.geometry.units}, []
        raise SpatialError(f"unknown action {name!r}")

    # -- agent -----------------------------------------------------------------------------
    def _plan_step(self, step: int, reply: VLMAnswer) -> tuple[dict | None, str | None]:
        """Record a planning reply and read its action (from the tool call, else from the text)."""
        limit = self.config.max_trace_text
        call = reply.tool_call
        summary = f"{call.name}({call.arguments})" if call is not None else reply.text
        self.trace.append(TraceStep("plan", summary[:300] or "(no answer)", {
            "step": step, "reply": _clip(reply.text, limit), "reasoning": _clip(reply.reasoning, limit),
            "tool_call": {"name": call.name, "arguments": _clip(call.arguments, limit)} if call else None,
            "finish_reason": reply.finish_reason}))
        action, problem = action_from_call(call) if call is not None else parse_action(reply.text)
        if action is None and reply.cut_off:
            problem = "the reply was cut off at the token limit before it finished: raise max_tokens"
        return action, problem

    def plan(self, question: str) -> tuple[str, list[int], dict[int, float]] | None:
        """Run the planning loop; None when it ended without a valid answer."""
        system = agent_system_prompt(self.config.max_look)
        tools = agent_tools()
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
            reply = self.vlm.ask(pending.images, pending.text, system, history, tools)
            if reply.error is not None:
                self.trace.append(TraceStep("error", f"step {step + 1}: the VLM failed ({reply.error})"))
                invalid += 1
                if invalid >= self.config.max_invalid:
                    return None
                continue
            action, problem = self._plan_step(step + 1, reply)
            history += [pending, Message("assistant", _clip(reply.text, self.config.max_trace_text) or "",
                                         tool_call=reply.tool_call)]
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
            self.trace.append(TraceStep("invalid", f"step {step + 1}: {problem}",
                                        {"reply": _clip(reply.text, self.config.max_trace_text)}))
            if invalid >= self.config.max_invalid:
                return None
            pending = Message("user", f"Invalid action: {problem}. Reply with exactly one action as documented.")
        return None


def _verdict_word(reply: YesNo) -> str:
    return {True: "yes", False: "no"}.get(reply.answer, f"unanswered ({reply.error})")


def answer(scene: Scene, question: str, backend: VLM, mode: str = "verify", config: AgentConfig = AgentConfig(),
           progress: Progress | None = None, embedder: Embedder | None = None) -> Answer:
    """Answer ``question`` about ``scene`` with ``backend`` in ``mode`` ("verify" or "agent").

    ``embedder``: an image-text embedding model (`grounding.embedders`) for the agent's pre-filter
    (`AgentConfig.prefilter`); without one every find check asks about every instance."""
    if mode not in MODES:
        raise IGGTError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if not question.strip():
        raise IGGTError("the question is empty")
    start = time.perf_counter()
    grounder = _Grounder(scene, backend, config, progress, embedder)
    if not asks_about_structure(question) and scene.instances.object_ids:
        grounder.ids = scene.instances.object_ids
        left_out = [i.id for i in scene.instances.info if i.structure]
        if left_out:
            grounder.trace.append(TraceStep("scope", f"left out {len(left_out)} structure instance(s) (floor, "
                                                     f"walls, large planes): {left_out}", {"left_out": left_out}))
    fell_back = False
    planned = None
    if mode == "agent":
        if config.name_instances:
            grounder.progress(0.05, "naming instances")
            grounder.name_instances(list(grounder.ids))
        planned = grounder.plan(question)
        if planned is None:
            fell_back = True
            grounder.trace.append(TraceStep("fallback", "the agent gave no valid answer: falling back to verify mode"))
    if planned is None:
        text, (ids, probabilities) = None, grounder.verify(question)
    else:
        text, ids, probabilities = planned
    where = is_where_question(question)
    if config.name_instances:  # answers name their instances (and a "where" answer the nearest object)
        around = [nearest_of(grounder.geometry, k, grounder.others(ids)) for k in ids] if where else []
        unnamed = [k for k in dict.fromkeys([*ids, *around]) if k is not None and grounder.name(k) is None]
        if unnamed:
            grounder.name_instances(unnamed)
    confirmed = grounder.confirm(question, ids)
    if text is None or confirmed != ids:
        text = grounder.answer_text(question, confirmed)
    ids = confirmed
    locations = {k: location_sentence(grounder.scene, grounder.geometry, k, grounder.others(ids),
                                      lambda i: _located_label(grounder, i)) for k in ids}
    if where and ids:
        text = " ".join(locations[k] for k in ids)
    text = _lead_with_failures(text, grounder.vlm)
    grounder.trace.append(TraceStep("answer", text, {"instance_ids": ids},
                                    [grounder.highlight(k) for k in ids[:config.max_look]]))
    grounder.progress(1.0, "done")
    return Answer(question, mode, text, ids, probabilities, grounder.trace, grounder.vlm.calls,
                  grounder.vlm.busy_seconds, time.perf_counter() - start,
                  instance_names={k: grounder.name(k) for k in ids}, locations=locations, fell_back=fell_back,
                  scene=grounder.scene)


def _located_label(grounder: _Grounder, k: int) -> str:
    """An instance as a location sentence names it: "the yellow cube (#5)", or "instance #5"."""
    name = grounder.name(k)
    return f"the {name} (#{k})" if name else f"instance #{k}"
