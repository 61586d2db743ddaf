"""The one protocol every VLM backend follows, and the strict yes/no reading they share.

A backend answers ``ask(images, prompt)`` with free text (or, when offered tools and able to,
a tool call) and ``yes_no(images, question)`` with a `YesNo`. Reasoning (a ``<think>`` block,
or a separate field of the reply) is split from the answer before anything reads it and kept
for the trace. The grounding never trusts free text: a yes/no answer is accepted only when the
reply gives a clear verdict (`grounding.vlm.replies.parse_verdict`); anything else, or an
error, leaves it unanswered, with the reason and the raw text kept for the trace.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol, runtime_checkable

from PIL import Image

from .replies import parse_verdict, split_reasoning

YES_NO_INSTRUCTION = "Answer with exactly one word: yes or no."


@dataclass(frozen=True)
class ToolCall:
    """A tool call of a reply (OpenAI tool-calling API): ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass
class Message:
    """One earlier turn of a dialogue (``role`` "user" or "assistant"), with its images.

    An assistant turn that called a tool carries the call; the user turn after it is the call's result."""

    role: str
    text: str
    images: list[Image.Image] = field(default_factory=list)
    tool_call: ToolCall | None = None


@dataclass
class VLMAnswer:
    """A reply of a VLM (``error`` set and ``text`` empty when the call failed)."""

    text: str
    """The answer, reasoning taken out."""
    verdict_logprobs: dict[str, float] | None = None
    """Log-probabilities of the alternatives at the reply's first yes/no token, when the backend can tell."""
    error: str | None = None
    seconds: float = 0.0
    reasoning: str | None = None
    """What the model reasoned before answering (inline block or separate field), for the trace."""
    finish_reason: str | None = None
    """"stop", "length" (cut off at the token limit), "tool_calls", ... as the server says."""
    tool_call: ToolCall | None = None

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class YesNo:
    """A yes/no answer: ``answer`` is None when the reply was not a clear yes or no."""

    answer: bool | None
    probability: float | None
    """Probability of "yes" in [0, 1] (from token probabilities when available)."""
    raw_text: str
    error: str | None = None
    cached: bool = False
    reasoning: str | None = None


@dataclass
class AnswerCache:
    """Thread-safe cache of answers: yes/no per (scene id, instance id, question), names per instance."""

    _answers: dict[Hashable, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: Hashable) -> Any:
        with self._lock:
            return self._answers.get(key)

    def put(self, key: Hashable, answer: Any) -> None:
        with self._lock:
            self._answers[key] = answer

    def __len__(self) -> int:
        return len(self._answers)


@runtime_checkable
class VLM(Protocol):
    """What the grounding needs from a vision-language model."""

    name: str
    max_concurrency: int
    cache: AnswerCache

    def ask(self, images: list[Image.Image], prompt: str, system: str | None = None,
            history: list[Message] | None = None, tools: list[dict] | None = None) -> VLMAnswer: ...

    def yes_no(self, images: list[Image.Image], question: str, cache_key: Hashable | None = None) -> YesNo: ...


def parse_yes_no(text: str) -> bool | None:
    """True/False for a clear "yes"/"no" (see `grounding.vlm.replies.parse_verdict`), else None."""
    return parse_verdict(text)[0]


def _token_kind(token: str) -> bool | None:
    word = token.strip().strip(".,!\"'*").lower()
    return {"yes": True, "no": False}.get(word)


def yes_probability(logprobs: dict[str, float]) -> float | None:
    """P(yes) from token log-probabilities: mass of "yes"-tokens over that of yes and no."""
    yes = sum(math.exp(lp) for token, lp in logprobs.items() if _token_kind(token) is True)
    no = sum(math.exp(lp) for token, lp in logprobs.items() if _token_kind(token) is False)
    if yes + no <= 0.0:
        return None
    return yes / (yes + no)


def verdict_token_logprobs(tokens: list[tuple[str, dict[str, float]]], skip_chars: int = 0
                           ) -> dict[str, float] | None:
    """The alternatives at the first yes/no token of a reply's ``(token, alternatives)`` list, after
    ``skip_chars`` characters (its reasoning): where a sentence or a JSON answer says its verdict."""
    offset = 0
    for token, alternatives in tokens:
        start, offset = offset, offset + len(token)
        if start >= skip_chars and _token_kind(token) is not None:
            return alternatives
    return None


def yes_no_from_answer(reply: VLMAnswer) -> YesNo:
    """Turn a reply into a `YesNo`, with P(yes) from the verdict token's probabilities when present."""
    if reply.error is not None:
        return YesNo(None, None, reply.text, error=reply.error, reasoning=reply.reasoning)
    answer, problem = parse_verdict(reply.text)
    if answer is None:
        if reply.cut_off:
            problem = ("the reply was cut off at the token limit before it answered"
                       + (" (still reasoning)" if not reply.text else "") + ": raise max_tokens")
        elif not reply.text and reply.reasoning:
            problem = "the reply holds reasoning but no answer"
        return YesNo(None, None, reply.text, error=problem, reasoning=reply.reasoning)
    probability = yes_probability(reply.verdict_logprobs) if reply.verdict_logprobs else None
    if probability is None or (probability >= 0.5) != answer:
        probability = 1.0 if answer else 0.0
    return YesNo(answer, probability, reply.text, reasoning=reply.reasoning)


def with_reasoning_split(reply: VLMAnswer) -> VLMAnswer:
    """The reply with any inline reasoning moved from ``text`` to ``reasoning`` (after a separate field's)."""
    text, inline = split_reasoning(reply.text)
    parts = [part for part in (reply.reasoning, inline) if part]
    reply.text, reply.reasoning = text, "\n\n".join(parts) or None
    return reply


class BaseVLM:
    """Shared plumbing: the concurrency limit, the answer cache, reasoning split from answers, and
    yes/no on top of `_ask`.

    Subclasses implement `_ask` (one request) and may override `_yes_no` when they can read
    token probabilities directly.
    """

    name = "vlm"

    def __init__(self, max_concurrency: int = 4, cache: AnswerCache | None = None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.cache = cache if cache is not None else AnswerCache()
        self._slots = threading.Semaphore(max_concurrency)

    def ask(self, images: list[Image.Image], prompt: str, system: str | None = None,
            history: list[Message] | None = None, tools: list[dict] | None = None) -> VLMAnswer:
        """Free-text answer about ``images``; ``history`` = earlier turns of a dialogue; ``tools``
        (OpenAI function definitions) may be called instead, by a backend and server that can."""
        start = time.perf_counter()
        with self._slots:
            reply = self._ask(list(images), prompt, system, list(history or []), tools=tools)
        reply.seconds = time.perf_counter() - start
        return with_reasoning_split(reply)

    def yes_no(self, images: list[Image.Image], question: str, cache_key: Hashable | None = None) -> YesNo:
        """Yes/no answer with P(yes); errors leave it unanswered (never raised)."""
        if cache_key is not None:
            hit = self.cache.get(cache_key)
            if hit is not None:
                return YesNo(hit.answer, hit.probability, hit.raw_text, hit.error, cached=True,
                             reasoning=hit.reasoning)
        with self._slots:
            answer = self._yes_no(list(images), question)
        if cache_key is not None and answer.error is None:
            self.cache.put(cache_key, answer)
        return answer

    def _yes_no(self, images: list[Image.Image], question: str) -> YesNo:
        prompt = f"{question}\n{YES_NO_INSTRUCTION}"
        reply = self._ask(images, prompt, None, [], want_logprobs=True, choices=("yes", "no"))
        return yes_no_from_answer(with_reasoning_split(reply))

    def _ask(self, images: list[Image.Image], prompt: str, system: str | None, history: list[Message], *,
             want_logprobs: bool = False, tools: list[dict] | None = None,
             choices: tuple[str, ...] | None = None) -> VLMAnswer:
        """One request. ``choices``: the reply must be one of these words (constrained output where the
        backend can ask for it; the answer is still parsed, so a backend may ignore it, as ``tools``)."""
        raise NotImplementedError
