"""A local OpenAI-compatible chat server that really looks at the images it is sent.

It stands in for a VLM in tests, benchmarks and offline trials of the app (``python -m
grounding.vlm.seeing_server`` serves it alone): `start_server()` runs it on 127.0.0.1 in a
thread and the `openai` client talks to it over HTTP at ``/v1/chat/completions`` (its models
are listed at ``/v1/models``). Answers are computed from the pictures, never from hidden
knowledge of the scene:

* the outlined object of a highlight (magenta outline, see `grounding.highlight`) is found
  by filling the outline; its colour is the median hue of its pixels, its shape comes from
  the mask's geometry (cone = narrow top, sphere = fills its moment ellipse, else cube), voted
  over the tiles (views where it is cut off or partly hidden count little); an object cut off
  by the border in every view has no shape it can tell (an "object": shape questions get no,
  as the benchmark asks none about such objects);
* yes/no questions ("Is the object outlined in magenta a red cube?") compare the words of
  the question with what was seen; naming requests get "<colour> <shape>" per image;
* planning requests (the agent's system prompt) get JSON actions from a small rule-based
  planner that parses the question, and reads object properties only from tool results
  (and pictures) in the conversation.

The model name selects how it answers: ``seeing`` answers plainly (one word, one JSON
object); ``seeing+<style>[+<style>...]`` answers in the `STYLES` that real models and servers
answer in (a reasoning block, a sentence, prose around JSON, tool calls, constrained output,
bad replies), on the wire as those servers do (chat-completions JSON, ``finish_reason``,
``tool_calls``, ``reasoning_content``, HTTP 400 for what they refuse). More names: "seeing-logprobs"
(= seeing+logprobs), "reject-logprobs" (= seeing+no-logprobs), "slow-<seconds>" (answers late,
for timeouts), "fail-429-<n>" / "fail-500-<n>" (the first n requests fail with that status),
"nonsense" (free text that is neither yes/no nor JSON), "bad-planner" (planning replies are not
JSON, other requests are answered normally). Requests are logged in `TestServer.requests`
(headers included, names lower-cased) so tests can check what was sent.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from grounding.highlight import CONTOUR_COLOR
from grounding.vlm.replies import single_json_object

# -- seeing ---------------------------------------------------------------------------------

HUES = {"red": 0.0, "orange": 28.0, "yellow": 52.0, "green": 130.0, "cyan": 185.0, "blue": 225.0,
        "purple": 275.0, "pink": 330.0}
SHAPES = ("cube", "sphere", "cone")
SHAPE_WORDS = {"cube": "cube", "box": "cube", "block": "cube", "sphere": "sphere", "ball": "sphere",
               "cone": "cone"}
MIN_REGION = 24
SERVED_MODELS = ("seeing", "seeing-logprobs")
"""What ``GET /v1/models`` lists (every other name is answered too, but not listed)."""
STYLES = {
    "plain": "as the seeing test server answers: one word, one JSON object",
    "think": "a reasoning model: a <think>...</think> block before the answer",
    "reasoning-field": "a reasoning model behind a reasoning parser: the reasoning in reasoning_content",
    "sentence": 'a chatty model: "Looking at the highlighted object, the answer is yes."',
    "prose": 'prose around JSON: "Sure! Here is my next action: {...} Let me know the result."',
    "bold": "markdown bold: **Yes**",
    "no-logprobs": "a server that refuses logprobs (HTTP 400)",
    "logprobs": "a server that returns token logprobs",
    "tools": "a server with tool calling: the agent's actions come back as tool_calls",
    "cutoff": "a long reasoning block, cut off (finish_reason length) under a small max_tokens",
    "json-schema": 'a server that honours response_format json_schema: {"answer": "yes"}',
    "guided-choice": "a vLLM server that honours guided_choice",
    "strict": "refuses request fields it does not support (HTTP 400, as api.openai.com does)",
}
"""Answer styles (``seeing+<style>``); the benchmark's quirk matrix runs the first ones."""
FAULTS = {
    "empty-choices": "a reply with no choices",
    "foreign": "answers in French",
    "html": "an HTML page instead of JSON (a proxy's login page)",
    "huge": "50,000-character replies",
    "bad-utf8": "a JSON body that is not valid UTF-8",
}
"""Bad replies (``seeing+<fault>``): each must leave a question unanswered with the reason, never crash."""
LEGACY_NAMES = {"seeing-logprobs": "seeing+logprobs", "reject-logprobs": "seeing+no-logprobs"}


@dataclass
class Seen:
    """What the server sees of one outlined object."""

    color: str
    shape: str
    area: int


def colour_name(pixels: np.ndarray) -> str:
    """Basic colour term of ``[N, 3]`` uint8 pixels: median hue of the saturated ones, else a grey."""
    rgb = pixels.astype(np.float64) / 255.0
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    saturation = (high - low) / np.maximum(high, 1e-6)
    chromatic = saturation > 0.3
    if chromatic.mean() < 0.3:
        value = float(np.median(high))
        return "white" if value > 0.75 else "black" if value < 0.2 else "gray"
    r, g, b = rgb[chromatic].T
    hue = np.degrees(np.arctan2(math.sqrt(3) * (g - b), 2 * r - g - b)) % 360.0
    angles = np.radians(hue)
    mean_hue = math.degrees(math.atan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360.0
    return min(HUES, key=lambda name: min(abs(mean_hue - HUES[name]), 360 - abs(mean_hue - HUES[name])))


def shape_name(mask: np.ndarray) -> str:
    """cone (narrow top), sphere (fills the ellipse of its second moments), else cube."""
    rows = np.flatnonzero(mask.any(axis=1))
    widths = mask[rows].sum(axis=1).astype(np.float64)
    if widths[:max(1, len(rows) // 4)].mean() < 0.4 * widths.max():
        return "cone"
    return "sphere" if ellipse_fill(mask) >= 0.945 else "cube"


def ellipse_fill(mask: np.ndarray) -> float:
    """IoU of the mask with the ellipse of its second moments (1 for a disc)."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([ys - cy, xs - cx])) + np.eye(2) * 1e-6
    grid_y, grid_x = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    offsets = np.stack([grid_y - cy, grid_x - cx], axis=-1)
    ellipse = np.einsum("...i,ij,...j->...", offsets, np.linalg.inv(cov), offsets) <= 4.0
    return float((ellipse & mask).sum() / max((ellipse | mask).sum(), 1))


def solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area: well below 1 when something in front bites into the object."""
    points = np.argwhere(mask)
    try:
        return float(min(1.0, mask.sum() / ConvexHull(points).volume))
    except QhullError:  # a line of pixels
        return 1.0


def _tiles(array: np.ndarray) -> np.ndarray:
    """Label image of the highlight's tiles (everything that is not the black canvas)."""
    return ndimage.label(np.any(array != 0, axis=-1))[0]


def outlined_objects(image: Image.Image) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(mask, pixels, cut) of the region enclosed by the magenta outline, one per highlight tile:
    the largest one, as a person names the outlined object and not a speck of outline beside it;
    ``cut`` = the region reaches its tile's edge, so the object is cut off by the photo's border."""
    array = np.asarray(image.convert("RGB"))
    ring = np.all(array == np.array(CONTOUR_COLOR, np.uint8), axis=-1)
    inside = ndimage.binary_fill_holes(ring) & ~ring
    tiles = _tiles(array)
    tile_boxes = ndimage.find_objects(tiles)
    components, _ = ndimage.label(inside)
    largest: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        mask = components[box] == index
        if mask.sum() < MIN_REGION:
            continue
        tile = int(tiles[box][mask][0])
        if tile in largest and largest[tile][0].sum() >= mask.sum():
            continue
        tile_box = tile_boxes[tile - 1]
        cut = any(abs(box[axis].start - tile_box[axis].start) <= 3 or abs(box[axis].stop - tile_box[axis].stop) <= 3
                  for axis in (0, 1))
        largest[tile] = (mask, array[box][mask], cut)
    return [largest[tile] for tile in sorted(largest)]


def see(image: Image.Image) -> Seen | None:
    """Colour and shape of the outlined object, voted over the tiles; views where the object is
    cut off by the border or partly hidden count little. None when nothing is outlined."""
    regions = outlined_objects(image)
    if not regions:
        return None
    votes: dict[tuple[str, str], float] = {}
    for mask, pixels, cut in regions:
        key = (colour_name(pixels), shape_name(mask))
        weight = (0.01 if cut else 1.0) * (0.2 if solidity(mask) < 0.95 else 1.0)
        votes[key] = votes.get(key, 0.0) + weight * (1.0 + 1e-6 * float(mask.sum()))
    (colour, shape), _ = max(votes.items(), key=lambda item: item[1])
    if all(cut for _, _, cut in regions):
        shape = "object"  # never seen whole: a table top or a wall could be anything
    return Seen(colour, shape, sum(int(m.sum()) for m, _, _ in regions))


def described(text: str) -> tuple[str | None, str | None]:
    """The colour and shape words of a description ("the red ball" -> ("red", "sphere"))."""
    words = re.findall(r"[a-z]+", text.lower())
    colour = next((w for w in words if w in HUES or w in ("white", "black", "gray", "grey")), None)
    shape = next((SHAPE_WORDS[w.rstrip("s")] for w in words if w.rstrip("s") in SHAPE_WORDS), None)
    return ("gray" if colour == "grey" else colour), shape


def matches(seen: Seen | None, description: str) -> bool | None:
    """Whether the seen object fits the description; None when the description names nothing known."""
    colour, shape = described(description)
    if colour is None and shape is None:
        return None
    if seen is None:
        return False
    return (colour is None or colour == seen.color) and (shape is None or shape == seen.shape)


# -- planning -------------------------------------------------------------------------------

_PATTERNS = [
    ("count", re.compile(r"how many (.+?)(?: are there)?\??$")),
    ("colour_of", re.compile(r"what colou?r is the (.+?)\??$")),
    ("side", re.compile(r"which is further (left|right)(?: in view (\d+))?, the (.+?) or the (.+?)\??$")),
    ("nearest", re.compile(r"which object is (nearest|closest|farthest) (?:to|from) the (.+?)\??$")),
    ("find", re.compile(r"(?:where is|find|which object is) the (.+?)\??$")),
]


def parse_question(question: str) -> tuple[str, tuple] | None:
    text = question.strip().lower()
    for kind, pattern in _PATTERNS:
        match = pattern.search(text)
        if match:
            return kind, match.groups()
    return None


def _tool_results(messages: list[dict]) -> list[tuple[dict, dict, list[Image.Image]]]:
    """(action, result, images) of every tool call so far: assistant turns (JSON text or a tool call)
    followed by the result (a user turn, or a tool turn and the user turn with its pictures)."""
    calls = []
    for index, message in enumerate(messages[:-1]):
        if message["role"] != "assistant":
            continue
        if message.get("tool_calls"):
            function = message["tool_calls"][0]["function"]
            action = {"action": function["name"], **json.loads(function["arguments"] or "{}")}
        else:
            action, _ = single_json_object(message.get("content") or "")
        following = messages[index + 1]
        text, images = _text_and_images(following)
        if following["role"] == "tool" and index + 2 < len(messages) and messages[index + 2]["role"] == "user":
            images = _text_and_images(messages[index + 2])[1]
        match = re.match(r"Result of (\w+): (.*?)\nReply with your next action", text, re.DOTALL)
        if action is not None and match:
            calls.append((action, json.loads(match.group(2)), images))
    return calls


def _find(calls, description: str) -> list[int] | None:
    """Instances that a previous check found for this description (None = not checked yet)."""
    for action, result, _ in calls:
        if action["action"] == "check" and action["question"].endswith(f"the {description}?"):
            return result["yes"]
    return None


def _check(description: str) -> dict:
    return {"action": "check", "ids": "all", "question": f"Is the object outlined in magenta the {description}?"}


def plan(question: str, messages: list[dict]) -> dict:
    """Next action for the question, given the conversation so far."""
    calls = _tool_results(messages)
    parsed = parse_question(question)
    if parsed is None:
        return {"action": "answer", "ids": [], "text": "I do not understand the question."}
    kind, groups = parsed
    if kind == "count":
        found = _find(calls, groups[0])
        if found is None:
            return _check(groups[0])
        if len(found) == 1:  # "how many cubes" -> "There is 1 cube."
            plural = groups[0]
            one = plural[:-2] if plural.endswith(("xes", "ches", "shes", "sses")) else plural.removesuffix("s")
            return {"action": "answer", "ids": found, "text": f"There is 1 {one}."}
        return {"action": "answer", "ids": found, "text": f"There are {len(found)} {groups[0]}."}
    if kind == "find":
        found = _find(calls, groups[0])
        if found is None:
            return _check(groups[0])
        return {"action": "answer", "ids": found, "text": f"The {groups[0]} is instance {found}."}
    if kind == "colour_of":
        found = _find(calls, groups[0])
        if found is None:
            return _check(groups[0])
        if not found:
            return {"action": "answer", "ids": [], "text": f"There is no {groups[0]}."}
        looked = [images for action, _, images in calls if action["action"] == "look"]
        if not looked:
            return {"action": "look", "ids": found[:1]}
        seen = see(looked[-1][0])
        return {"action": "answer", "ids": found[:1], "text": f"The {groups[0]} is {seen.color if seen else 'unknown'}."}
    if kind == "side":
        side, view, first, second = groups
        a, b = _find(calls, first), _find(calls, second)
        if a is None:
            return _check(first)
        if b is None:
            return _check(second)
        if not a or not b:
            return {"action": "answer", "ids": [], "text": "I cannot find both objects."}
        sorts = [result for action, result, _ in calls if action["action"] == "sort"]
        if not sorts:
            return {"action": "sort", "ids": [a[0], b[0]], "by": f"{side}_to_{'right' if side == 'left' else 'left'}",
                    "reference": None, "view": int(view or 0)}
        winner = sorts[-1]["order"][0]
        name = first if winner == a[0] else second
        return {"action": "answer", "ids": [winner], "text": f"The {name} is further {side}."}
    if kind == "nearest":
        which, reference = groups
        found = _find(calls, reference)
        if found is None:
            return _check(reference)
        if not found:
            return {"action": "answer", "ids": [], "text": f"There is no {reference}."}
        sorts = [result for action, result, _ in calls if action["action"] == "sort"]
        if not sorts:
            return {"action": "sort", "ids": "all", "by": "farthest_from" if which == "farthest" else "nearest_to",
                    "reference": found[0]}
        winner = sorts[-1]["order"][0]
        return {"action": "answer", "ids": [winner], "text": f"Instance {winner} is {which} to the {reference}."}
    raise AssertionError(kind)


# -- HTTP -----------------------------------------------------------------------------------

def _text_and_images(message: dict) -> tuple[str, list[Image.Image]]:
    content = message.get("content")
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content or []:
        if part.get("type") == "text":
            texts.append(part["text"])
        elif part.get("type") == "image_url":
            url = part["image_url"]["url"]
            header, data = url.split(",", 1)
            if not header.startswith("data:image/") or ";base64" not in header:
                raise ValueError("images must be base64 data URLs")
            images.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return "\n".join(texts), images


@dataclass(frozen=True)
class Decision:
    """What the server means to answer, before a style writes it: an action, names, a verdict or text."""

    kind: str
    """"plan", "names", "yes_no" or "text"."""
    value: object
    seen: Seen | None = None


def decide(messages: list[dict], model: str) -> Decision:
    """What to answer to a conversation (see the module docstring)."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    prompt, images = _text_and_images(messages[-1])
    if "exactly one JSON object" in system:
        if model == "bad-planner":
            return Decision("text", "I think the answer is probably the red one.")
        first, _ = _text_and_images(next(m for m in messages if m["role"] == "user"))
        question = re.match(r"Question: (.*?)\n", first).group(1)
        return Decision("plan", plan(question, messages))
    if "Reply with one JSON object mapping the image number" in prompt:
        names = {}
        for number, image in enumerate(images, start=1):
            seen = see(image)
            names[str(number)] = f"{seen.color} {seen.shape}" if seen else "unknown object"
        return Decision("names", names)
    question = re.match(r"(.*?)\n?Answer with exactly one word: yes or no", prompt, re.DOTALL)
    seen = see(images[0]) if images else None
    if question:
        return Decision("yes_no", matches(seen, question.group(1)), seen)
    return Decision("text", f"It is a {seen.color} {seen.shape}." if seen else "I see nothing outlined.", seen)


def quirks_of(model: str) -> frozenset[str]:
    """The styles and faults a model name asks for ("seeing+think+tools" -> {"think", "tools"})."""
    name = LEGACY_NAMES.get(model, model)
    return frozenset(name.split("+")[1:]) if name.startswith("seeing+") else frozenset()


_SENTENCES_YES = ("Looking at the highlighted object, the answer is yes.", "Yes, it is.",
                  "The outlined object is a {seen}, so yes.", "Answer: yes")
_SENTENCES_NO = ("Looking at the highlighted object, the answer is no.", "No - that is a {seen}.",
                 "The outlined object is a {seen}, so no.", "Answer: no")
_REASONING = ("The user asks about the object outlined in magenta. Should I say yes or no? Let me look at "
              "each tile: {seen_sentence} Comparing this with the question, the answer is {verdict}.")
CUTOFF_WORDS = 1500
"""Words of the cutoff style's reasoning: more than a small ``max_tokens`` lets through."""


@dataclass(frozen=True)
class _Writer:
    """Writes a `Decision` in the styles of one request (its model name's quirks and its fields)."""

    quirks: frozenset[str]
    body: dict

    def content(self, decision: Decision) -> str:
        """The answer text, without reasoning."""
        if decision.kind in ("plan", "names"):
            text = json.dumps(decision.value)
            if "prose" in self.quirks:
                lead = "Sure! Here is my next action:" if decision.kind == "plan" else "Here are the names:"
                text = f"{lead}\n\n```json\n{text}\n```\n\nLet me know the result."
            return text
        if decision.kind == "text":
            return decision.value
        verdict = decision.value
        if self.constraint() == "json_schema":
            return json.dumps({"answer": "yes" if verdict else "no"})
        if self.constraint() == "guided_choice":
            return "yes" if verdict else "no"
        if verdict is None:
            return "I cannot tell what is outlined."
        if "foreign" in self.quirks:
            return "Oui, c'est bien lui." if verdict else "Non, ce n'est pas lui."
        if "sentence" in self.quirks:
            seen = f"{decision.seen.color} {decision.seen.shape}" if decision.seen else "thing"
            options = _SENTENCES_YES if verdict else _SENTENCES_NO
            digest = int(hashlib.sha1(json.dumps(self.body.get("messages", [])[-1:], default=str)[-200:]
                                      .encode()).hexdigest(), 16)
            return options[digest % len(options)].format(seen=seen)
        word = "Yes" if verdict else "No"
        return f"**{word}**" if "bold" in self.quirks else word

    def constraint(self) -> str | None:
        if "json-schema" in self.quirks and (self.body.get("response_format") or {}).get("type") == "json_schema":
            return "json_schema"
        if "guided-choice" in self.quirks and self.body.get("guided_choice"):
            return "guided_choice"
        return None

    def reasoning(self, decision: Decision) -> str | None:
        if not self.quirks & {"think", "reasoning-field", "cutoff"}:
            return None
        seen = decision.seen
        seen_sentence = (f"I see a {seen.color} {seen.shape}, not something else." if seen else
                         "I need to think about what the question asks, yes, and what no would mean.")
        verdict = {True: "yes", False: "no", None: "unclear"}.get(decision.value, "this action") \
            if decision.kind == "yes_no" else "this action"
        text = _REASONING.format(seen_sentence=seen_sentence, verdict=verdict)
        if "cutoff" in self.quirks:
            text += " Let me double-check every tile once more." * (CUTOFF_WORDS // 8)
        return text

    def message(self, decision: Decision) -> tuple[dict, str]:
        """The assistant message and the finish_reason, as a server of these quirks sends them."""
        reasoning = self.reasoning(decision)
        message: dict = {"role": "assistant", "content": None}
        finish = "stop"
        if decision.kind == "plan" and "tools" in self.quirks and self.body.get("tools"):
            action = dict(decision.value)
            message["tool_calls"] = [{"id": f"call_{len(self.body['messages'])}", "type": "function",
                                      "function": {"name": action.pop("action"), "arguments": json.dumps(action)}}]
            finish = "tool_calls"
            content = ""
        else:
            content = self.content(decision)
        if reasoning and "reasoning-field" in self.quirks:
            message["reasoning_content"] = reasoning
        elif reasoning:
            content = f"<think>\n{reasoning}\n</think>\n\n{content}"
        limit = self.body.get("max_tokens") or self.body.get("max_completion_tokens")
        words = content.split(" ")
        if limit and len(words) > limit:
            content, finish = " ".join(words[:limit]), "length"
            message.pop("tool_calls", None)
        message["content"] = content or None
        if "huge" in self.quirks:
            message["content"] = (content or "") + " and so on" * 5000
        return message, finish


def _token_logprobs(text: str) -> dict:
    """Per-token logprobs as a confident model gives them: at a yes/no token, the token itself (p 0.9)
    and its opposite (p 0.1) as the alternatives."""
    content = []
    for token in re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", text):
        entry = {"token": token, "logprob": 0.0, "bytes": None, "top_logprobs": []}
        word = token.strip()
        if word.lower() in ("yes", "no"):
            opposite = {"yes": "no", "no": "yes"}[word.lower()]
            opposite = opposite.upper() if word.isupper() else opposite.title() if word.istitle() else opposite
            entry["logprob"] = math.log(0.9)
            entry["top_logprobs"] = [{"token": token, "logprob": math.log(0.9), "bytes": None},
                                     {"token": token.replace(word, opposite), "logprob": math.log(0.1), "bytes": None}]
        content.append(entry)
    return {"content": content}


@dataclass
class TestServer:
    """State shared by the handler threads: failure counters and the request log."""

    requests: list[dict] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def should_fail(self, model: str) -> int | None:
        match = re.fullmatch(r"fail-(\d{3})-(\d+)", model)
        if not match:
            return None
        with self.lock:
            done = self.failures.get(model, 0)
            if done >= int(match.group(2)):
                return None
            self.failures[model] = done + 1
        return int(match.group(1))


def _completion(model: str, message: dict, finish_reason: str, logprobs: dict | None) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def refused_field(body: dict, quirks: frozenset[str]) -> str | None:
    """The request field this server refuses with HTTP 400, if any."""
    if "no-logprobs" in quirks and body.get("logprobs"):
        return "logprobs"
    if "strict" not in quirks:
        return None
    if body.get("guided_choice") and "guided-choice" not in quirks:
        return "guided_choice"
    if body.get("response_format") and "json-schema" not in quirks:
        return "response_format"
    if body.get("tools") and "tools" not in quirks:
        return "tools"
    return None


def _handler(state: TestServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            self._send_raw(status, "application/json", json.dumps(body).encode("utf-8"))

        def _send_raw(self, status: int, content_type: str, data: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            self._send(200, {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                                          "owned_by": "test"} for model in SERVED_MODELS]})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            model = body.get("model", "seeing")
            with state.lock:
                state.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            status = state.should_fail(model)
            if status is not None:
                self._send(status, {"error": {"message": f"simulated {status}", "type": "test"}})
                return
            quirks = quirks_of(model)
            refused = refused_field(body, quirks)
            if refused == "logprobs":
                self._send(400, {"error": {"message": "logprobs are not supported by this server",
                                           "type": "invalid_request_error"}})
                return
            if refused is not None:
                self._send(400, {"error": {"message": f"Unrecognized request argument supplied: {refused}",
                                           "type": "invalid_request_error"}})
                return
            slow = re.fullmatch(r"slow-([\d.]+)", model)
            if slow:
                time.sleep(float(slow.group(1)))
            if "html" in quirks:
                self._send_raw(200, "text/html", b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
                                                 b"<body><form>Please sign in</form></body></html>")
                return
            try:
                decision = (Decision("text", "The quick brown fox jumps over the lazy dog.") if model == "nonsense"
                            else decide(body["messages"], model))
            except (ValueError, KeyError) as err:
                self._send(400, {"error": {"message": str(err), "type": "invalid_request_error"}})
                return
            message, finish = _Writer(quirks, body).message(decision)
            logprobs = None
            if "logprobs" in quirks and body.get("logprobs"):
                logprobs = _token_logprobs(message["content"] or "")
            completion = _completion(model, message, finish, logprobs)
            if "empty-choices" in quirks:
                completion["choices"] = []
            if "bad-utf8" in quirks:
                data = json.dumps(completion).encode("utf-8").replace(b'"content": "', b'"content": "\xff\xfe', 1)
                self._send_raw(200, "application/json", data)
                return
            self._send(200, completion)

    return Handler


@dataclass
class RunningServer:
    url: str
    """Base URL ending in /v1."""
    stop: Callable[[], None]
    state: TestServer


def start_test_server(port: int = 0) -> RunningServer:
    """Run the server on 127.0.0.1 (``port`` 0 = any free port) in a daemon thread."""
    state = TestServer()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return RunningServer(f"http://127.0.0.1:{server.server_address[1]}/v1", stop, state)


def start_server(port: int = 0) -> tuple[str, Callable[[], None]]:
    """(base URL ending in /v1, stop()) of a freshly started server; see `start_test_server`."""
    running = start_test_server(port)
    return running.url, running.stop


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the seeing test VLM server until interrupted.")
    parser.add_argument("--port", type=int, default=8765)
    url, stop_server = start_server(parser.parse_args().port)
    print(f"serving at {url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stop_server()
