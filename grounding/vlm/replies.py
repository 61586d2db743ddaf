"""Reading what a VLM says: reasoning apart from the answer, a yes/no verdict, one JSON object.

Models answer in many shapes: a reasoning block before the answer (``<think>...</think>``),
a sentence around the verdict ("Looking at it, the answer is yes."), markdown (``**No**``),
prose or a fence around JSON. These functions accept every clear answer in such shapes and
nothing else: a contradiction ("yes or no"), a hedge ("probably yes"), a question back or a
reply too long to be an answer stays unanswered, with the reason.
"""
from __future__ import annotations

import json
import re

MAX_ANSWER_CHARS = 2000
"""A yes/no answer longer than this (reasoning excluded) is not an answer but a ramble."""
MAX_ACTION_CHARS = 20000
"""A reply longer than this is not searched for a JSON object."""

_REASONING_TAGS = ("think", "thinking", "reasoning")
_BLOCK = re.compile(r"<(%s)>(.*?)</\1>" % "|".join(_REASONING_TAGS), re.IGNORECASE | re.DOTALL)
_OPEN = re.compile(r"<(%s)>" % "|".join(_REASONING_TAGS), re.IGNORECASE)
_CLOSE = re.compile(r"</(%s)>" % "|".join(_REASONING_TAGS), re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of a reply whose reasoning is inline.

    Closed blocks are taken out wherever they are; an unclosed opening tag (the reply was cut
    off while reasoning) makes the rest reasoning; a closing tag without an opening one (chat
    templates that open the block in the prompt, as Qwen3's do) makes everything before it reasoning.
    """
    parts = [match.group(2).strip() for match in _BLOCK.finditer(text)]
    answer = _BLOCK.sub("", text)
    opened = _OPEN.search(answer)
    if opened:
        parts.append(answer[opened.end():].strip())
        answer = answer[:opened.start()]
    closed = None
    for closed in _CLOSE.finditer(answer):
        pass
    if closed is not None:
        parts.insert(0, answer[:closed.start()].strip())
        answer = answer[closed.end():]
    reasoning = "\n\n".join(part for part in parts if part)
    return answer.strip(), reasoning or None


_MARKDOWN = re.compile(r"[*_`#>]+")
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_HEDGES = re.compile(r"\b(maybe|perhaps|possibly|probably|likely|unlikely|might|may be|not sure|unsure|"
                     r"uncertain|unclear|cannot tell|can't tell|can not tell|hard to (say|tell)|"
                     r"difficult to (say|tell)|i think|i guess|i believe)\b", re.IGNORECASE)
_LEAD_IN = re.compile(r"(^|[.!:;,\n]|\bso|\banswer(\s+is)?|\bverdict(\s+is)?)\W*$", re.IGNORECASE)
"""What may stand right before a verdict word: the start, a sentence's or clause's end, "so", "answer (is)"."""
_QUESTION = re.compile(r"[^.!?\n]*\?")
_TAIL = re.compile(r"^\W*($|[,.!;:\-\u2013\u2014(]|\s+(it|that|this|the|there)\b)", re.IGNORECASE)
"""What may follow a verdict word: the end, punctuation, or a sentence going on ("No that is a cone")."""


def parse_verdict(text: str) -> tuple[bool | None, str | None]:
    """(True/False, None) for a clear yes/no anywhere a sentence puts it, else (None, why not).

    Counted: "Yes", "No - that is a cone.", "**No**", "Answer: yes", "Looking at it, the answer is
    yes.", "It is red, so yes.", a verdict as its own sentence after an explanation or after the
    question repeated. Not counted: no verdict, both yes and no, hedges ("probably yes", "I think
    yes"), a question back, and replies of more than `MAX_ANSWER_CHARS`.
    """
    plain = _MARKDOWN.sub("", text).strip()
    if not plain:
        return None, "empty reply"
    if len(plain) > MAX_ANSWER_CHARS:
        return None, f"the reply is too long to be a yes/no answer ({len(plain):,} characters)"
    if plain.endswith("?"):
        return None, "not a clear yes or no (a question back)"
    plain = _QUESTION.sub("", plain)  # a model that repeats the question before answering it
    words = {match.group(1).lower() for match in _VERDICT.finditer(plain)}
    if not words:
        return None, "not a clear yes or no"
    if len(words) == 2:
        return None, "not a clear yes or no (says both yes and no)"
    if _HEDGES.search(plain):
        return None, "not a clear yes or no (hedged)"
    placed = [match for match in _VERDICT.finditer(plain)
              if _LEAD_IN.search(plain[:match.start()]) and _TAIL.match(plain[match.end():])]
    if not placed:
        return None, "not a clear yes or no"
    return placed[0].group(1).lower() == "yes", None


def json_objects(text: str) -> list[dict]:
    """Every top-level JSON object in ``text`` (inside prose, fences or alone), in order."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while True:
        start = text.find("{", position)
        if start < 0:
            return found
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
        position = end


def single_json_object(text: str) -> tuple[dict | None, str | None]:
    """The one JSON object a reply holds, wherever it stands, or None and what is wrong.

    Two different objects are ambiguous; the same object twice (a model that repeats itself) is one.
    """
    body = text.strip()
    if len(body) > MAX_ACTION_CHARS:
        return None, f"the reply is too long ({len(body):,} characters)"
    try:
        whole = json.loads(body)
    except json.JSONDecodeError:
        whole = None
    else:
        if not isinstance(whole, dict):
            return None, "not a JSON object"
        return whole, None
    objects = json_objects(body)
    distinct = [obj for index, obj in enumerate(objects) if obj not in objects[:index]]
    if not distinct:
        return None, "not a single JSON object (none found)"
    if len(distinct) > 1:
        return None, f"not a single JSON object ({len(distinct)} different ones)"
    return distinct[0], None


def reasoning_end(text: str) -> int:
    """Where the answer of a reply with inline reasoning starts: after its last closing reasoning tag."""
    end = 0
    for end_tag in _CLOSE.finditer(text):
        end = end_tag.end()
    return end
