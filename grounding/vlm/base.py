"""The one protocol every VLM backend follows, and the strict yes/no parsing they share.

A backend answers ``ask(images, prompt)`` with free text and ``yes_no(images, question)``
with a `YesNo`. The grounding never trusts free text: a yes/no answer is accepted only
when it is clearly "yes" or "no"; anything else (or an error) leaves it unanswered, with
the raw text kept for the trace.
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol, runtime_checkable

from PIL import Image

YES_NO_INSTRUCTION = "Answer with exactly one word: yes or no."


@dataclass
class Message:
    """One earlier turn of a dialogue (``role`` "user" or "assistant"), with its images."""

    role: str
    text: str
    images: list[Image.Image] = field(default_factory=list)


@dataclass
class VLMAnswer:
    """Free-text reply of a VLM (``error`` set and ``text`` empty when the call failed)."""

    text: str
    first_token_logprobs: dict[str, float] | None = None
    """Log-probabilities of the candidate first tokens, when the backend can tell."""
    error: str | None = None
    seconds: float = 0.0


@dataclass
class YesNo:
    """A yes/no answer: ``answer`` is None when the reply was not a clear yes or no."""

    answer: bool | None
    probability: float | None
    """Probability of "yes" in [0, 1] (from token probabilities when available)."""
    raw_text: str
    error: str | None = None
    cached: bool = False


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
            history: list[Message] | None = None) -> VLMAnswer: ...

    def yes_no(self, images: list[Image.Image], question: str, cache_key: Hashable | None = None) -> YesNo: ...


_YES_NO = re.compile(r"^\W*(yes|no)\b(.*)$", re.IGNORECASE | re.DOTALL)


def parse_yes_no(text: str) -> bool | None:
    """True/False for a clear "yes"/"no" (optionally followed by a short remark), else None.

    "Yes.", "no", "Yes, it is red." pass; "Maybe", "yes or no", "Yes... no" and empty text do not.
    """
    match = _YES_NO.match(text.strip())
    if not match:
        return None
    answer = match.group(1).lower() == "yes"
    rest = match.group(2).lower()
    if re.search(r"\b(yes|no|maybe|not sure|cannot|can't|unsure)\b", rest):
        return None
    return answer


def _token_kind(token: str) -> bool | None:
    word = token.strip().strip(".,!").lower()
    return {"yes": True, "no": False}.get(word)


def yes_probability(logprobs: dict[str, float]) -> float | None:
    """P(yes) from first-token log-probabilities: mass of "yes"-tokens over that of yes and no."""
    yes = sum(math.exp(lp) for token, lp in logprobs.items() if _token_kind(token) is True)
    no = sum(math.exp(lp) for token, lp in logprobs.items() if _token_kind(token) is False)
    if yes + no <= 0.0:
        return None
    return yes / (yes + no)


def yes_no_from_answer(reply: VLMAnswer) -> YesNo:
    """Turn a free-text reply into a `YesNo`, preferring token probabilities when present."""
    if reply.error is not None:
        return YesNo(None, None, reply.text, error=reply.error)
    answer = parse_yes_no(reply.text)
    probability = yes_probability(reply.first_token_logprobs) if reply.first_token_logprobs else None
    if answer is None:
        return YesNo(None, None, reply.text, error="not a clear yes or no")
    if probability is None:
        probability = 1.0 if answer else 0.0
    return YesNo(answer, probability, reply.text)


class BaseVLM:
    """Shared plumbing: the concurrency limit, the answer cache, and yes/no on top of `ask`.

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
            history: list[Message] | None = None) -> VLMAnswer:
        """Free-text answer about ``images``; ``history`` = earlier turns of a dialogue."""
        start = time.perf_counter()
        with self._slots:
            reply = self._ask(list(images), prompt, system, list(history or []), want_logprobs=False)
        reply.seconds = time.perf_counter() - start
        return reply

    def yes_no(self, images: list[Image.Image], question: str, cache_key: Hashable | None = None) -> YesNo:
        """Yes/no answer with P(yes); errors leave it unanswered (never raised)."""
        if cache_key is not None:
            hit = self.cache.get(cache_key)
            if hit is not None:
                return YesNo(hit.answer, hit.probability, hit.raw_text, hit.error, cached=True)
        with self._slots:
            answer = self._yes_no(list(images), question)
        if cache_key is not None and answer.error is None:
            self.cache.put(cache_key, answer)
        return answer

    def _yes_no(self, images: list[Image.Image], question: str) -> YesNo:
        prompt = f"{question}\n{YES_NO_INSTRUCTION}"
        return yes_no_from_answer(self._ask(images, prompt, None, [], want_logprobs=True))

    def _ask(self, images: list[Image.Image], prompt: str, system: str | None,
             history: list[Message], want_logprobs: bool) -> VLMAnswer:
        raise NotImplementedError
