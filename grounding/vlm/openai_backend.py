"""VLM over the OpenAI chat-completions API: GPT-4o, or any compatible server (vLLM, Ollama, LM Studio).

Images travel as base64 PNG data URLs. The client retries 429 and 5xx answers and timeouts
with exponential back-off (``max_retries``). The API key comes from the config or from
``OPENAI_API_KEY`` and is never logged, printed or put into a trace or an error message.

Servers differ in what they accept, so every optional part of a request is tried once and
dropped for good when the server refuses it (HTTP 400) or ignores it:

* yes/no questions ask for constrained output: first OpenAI's ``response_format`` with a JSON
  schema (``{"answer": "yes" | "no"}``), then vLLM's ``guided_choice`` (``["yes", "no"]``); the
  reply is parsed either way, so a server that ignores both still gets understood;
* ``logprobs`` (P(yes) from the alternatives at the verdict token);
* ``tools`` (the agent's actions as tool calls, `grounding.agent`);
* ``max_tokens`` (large by default, for reasoning models; a server whose context is smaller
  refuses it, and then gets requests without a limit).

Reasoning returned beside the answer (``reasoning_content`` or ``reasoning``, as vLLM, SGLang and
others send it) is kept apart from the answer, as inline ``<think>`` blocks are (`grounding.vlm.base`).
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
from dataclasses import dataclass, field

import openai
from PIL import Image

from iggt.errors import IGGTError

from .base import BaseVLM, Message, ToolCall, VLMAnswer, verdict_token_logprobs
from .replies import reasoning_end, split_reasoning

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
LOCAL_SERVER_KEY = "not-needed"
"""Key sent to a self-hosted server when none is configured (those servers ignore it)."""
CONNECT_TIMEOUT_S = 3.0
"""Seconds to open a connection: a server that is down or a mistyped URL fails this fast."""


class VLMUnavailable(IGGTError):
    """The VLM server cannot be used (unreachable, or it refuses the key); the message says which."""


def served_models(base_url: str, api_key: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> list[str]:
    """The model ids an OpenAI-compatible server serves (``GET /v1/models``), in its order.

    Also the quick check that the server is there before a question sends it dozens of requests:
    `VLMUnavailable` when it cannot be reached or refuses the key; an empty list when it does not
    list its models (the caller then needs a model name from the user).
    """
    client = openai.OpenAI(api_key=api_key or LOCAL_SERVER_KEY, base_url=base_url, timeout=timeout, max_retries=0)
    try:
        return [model.id for model in client.models.list()]
    except openai.APIConnectionError as err:  # also timeouts
        waited = f" (no answer within {timeout:g} s)" if isinstance(err, openai.APITimeoutError) else ""
        raise VLMUnavailable(f"cannot reach the VLM server at {base_url}{waited}: "
                             "check the URL and that the server is running") from None
    except openai.AuthenticationError:
        raise VLMUnavailable(f"the VLM server at {base_url} refused the API key (HTTP 401)") from None
    except openai.APIStatusError as err:
        log.info("%s does not list its models (HTTP %s)", base_url, err.status_code)
        return []


@dataclass(frozen=True)
class OpenAIConfig:
    """Connection and sampling settings of the OpenAI-compatible backend."""

    model: str = "gpt-4o"
    base_url: str | None = None
    """None = api.openai.com; e.g. http://localhost:8000/v1 for vLLM."""
    api_key: str | None = field(default=None, repr=False)
    """None = read ``OPENAI_API_KEY``."""
    timeout: float = 60.0
    """Seconds per request."""
    connect_timeout: float = CONNECT_TIMEOUT_S
    """Seconds to open a connection (short: an unreachable server should fail fast)."""
    max_retries: int = 3
    """Retries (with back-off) on timeouts, 429 and 5xx."""
    max_concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 4096
    """Token limit of a reply: large, since a reasoning model (Qwen3-VL Thinking, QVQ, ...) reasons first
    and a reply cut off while reasoning answers nothing (the trace says so)."""
    top_logprobs: int = 5
    """Ask for this many alternatives per token on yes/no questions (0 = never ask)."""
    constrained: bool = True
    """Ask for constrained yes/no output (JSON schema, then guided choice) where the server takes it."""
    image_detail: str = "auto"


_MENTIONS = {"json_schema": ("response_format", "json_schema", "schema"), "guided_choice": ("guided",),
             "logprobs": ("logprob",), "tools": ("tool",),
             "max_tokens": ("max_tokens", "context length", "maximum context", "max_completion_tokens")}
"""What a server's error message says when it refuses each optional part."""


def answer_schema(choices: tuple[str, ...]) -> dict:
    """The ``response_format`` that constrains a reply to ``{"answer": <one of choices>}``."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "string", "enum": list(choices)}},
        "required": ["answer"], "additionalProperties": False}}}


def image_data_url(image: Image.Image) -> str:
    """A lossless PNG data URL of ``image``."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIVLM(BaseVLM):
    """`VLM` backed by an OpenAI-compatible HTTP endpoint."""

    def __init__(self, config: OpenAIConfig = OpenAIConfig(), **base_kwargs):
        super().__init__(max_concurrency=config.max_concurrency, **base_kwargs)
        api_key = config.api_key or os.environ.get(API_KEY_ENV)
        if not api_key:
            if config.base_url is None:
                raise IGGTError(f"no OpenAI API key: set {API_KEY_ENV} or pass api_key "
                                 "(or give --base-url of a self-hosted server)")
            api_key = LOCAL_SERVER_KEY
        self.config = config
        self.name = f"openai:{config.model}"
        self._secret = api_key
        self._client = openai.OpenAI(api_key=api_key, base_url=config.base_url,
                                     timeout=openai.Timeout(config.timeout, connect=config.connect_timeout),
                                     max_retries=config.max_retries)
        self._refused: set[str] = set() if config.constrained else {"json_schema", "guided_choice"}
        """Optional request parts this server refused or ignored (see the module docstring)."""
        if config.top_logprobs <= 0:
            self._refused.add("logprobs")
        self._refused_lock = threading.Lock()
        self._unreachable: str | None = None
        """Why the server could not be reached, once it could not (even after retries): later
        requests fail at once with the same reason instead of each retrying for seconds."""

    def __repr__(self) -> str:
        return f"OpenAIVLM(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def _content(self, text: str, images: list[Image.Image]) -> list[dict]:
        parts: list[dict] = [{"type": "image_url", "image_url": {"url": image_data_url(image),
                                                                  "detail": self.config.image_detail}}
                             for image in images]
        parts.append({"type": "text", "text": text})
        return parts

    def _messages(self, prompt: str, images: list[Image.Image], system: str | None,
                  history: list[Message]) -> list[dict]:
        """Chat messages of a dialogue; a user turn right after a tool call is that call's result."""
        messages: list[dict] = [{"role": "system", "content": system}] if system else []
        tools = "tools" not in self._refused
        turns = [*history, Message("user", prompt, images)]
        for previous, turn in zip([None, *turns], turns):
            if turn.tool_call is not None and tools:
                call = turn.tool_call
                messages.append({"role": "assistant", "content": turn.text or None, "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]})
            elif previous is not None and previous.tool_call is not None and tools:
                messages.append({"role": "tool", "tool_call_id": previous.tool_call.id, "content": turn.text})
                if turn.images:  # tool messages carry text only: the pictures follow as the user's
                    messages.append({"role": "user", "content": self._content("The pictures of that result.",
                                                                             turn.images)})
            elif turn.role == "user":
                messages.append({"role": "user", "content": self._content(turn.text, turn.images)})
            else:
                messages.append({"role": "assistant", "content": turn.text or _call_as_json(turn.tool_call)})
        return messages

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _request(self, messages: list[dict], want_logprobs: bool, tools: list[dict] | None,
                 choices: tuple[str, ...] | None) -> tuple[dict, list[str]]:
        """The request's keyword arguments and the optional parts it holds."""
        request: dict = dict(model=self.config.model, messages=messages, temperature=self.config.temperature)
        parts = []
        if "max_tokens" not in self._refused:
            request["max_tokens"] = self.config.max_tokens
            parts.append("max_tokens")
        if want_logprobs and "logprobs" not in self._refused:
            request.update(logprobs=True, top_logprobs=self.config.top_logprobs)
            parts.append("logprobs")
        if tools and "tools" not in self._refused:
            request["tools"] = tools
            parts.append("tools")
        if choices and "json_schema" not in self._refused:
            request["response_format"] = answer_schema(choices)
            parts.append("json_schema")
        elif choices and "guided_choice" not in self._refused:
            request["extra_body"] = {"guided_choice": list(choices)}  # vLLM's field, unknown to the client
            parts.append("guided_choice")
        return request, parts

    def _refuse(self, parts: list[str], why: str) -> None:
        with self._refused_lock:
            new = [part for part in parts if part not in self._refused]
            self._refused.update(new)
        if new:
            log.info("%s: %s %s; not asking for it again", self.name, ", ".join(new), why)

    def _ask(self, images: list[Image.Image], prompt: str, system: str | None, history: list[Message], *,
             want_logprobs: bool = False, tools: list[dict] | None = None,
             choices: tuple[str, ...] | None = None) -> VLMAnswer:
        if self._unreachable is not None:
            return VLMAnswer("", error=self._unreachable)
        messages = self._messages(prompt, images, system, history)
        while True:
            request, parts = self._request(messages, want_logprobs, tools, choices)
            try:
                response = self._client.chat.completions.create(**request)
                break
            except openai.BadRequestError as err:
                refused = self._refused_by(err, parts)
                if not refused:
                    return VLMAnswer("", error=self._describe_error(err))
                self._refuse(refused, "refused by the server")
            except openai.OpenAIError as err:
                error = self._describe_error(err)
                if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
                    self._unreachable = error
                return VLMAnswer("", error=error)
            except ValueError as err:  # a JSON body that is not valid UTF-8 or not JSON after all
                return VLMAnswer("", error=self._describe_error(err, "the server's reply is not valid JSON"))
        reply = self._read(response)
        constraint = next((part for part in parts if part in ("json_schema", "guided_choice")), None)
        if constraint and reply.error is None and not reply.cut_off and not _obeys(reply.text, choices):
            self._refuse([constraint], "ignored by the server")
        return reply

    def _refused_by(self, err: openai.BadRequestError, parts: list[str]) -> list[str]:
        """The optional parts an HTTP 400 refuses: those its message names, else all but the limit (once)."""
        message = str(getattr(err, "message", err)).lower()
        named = [part for part in parts if any(word in message for word in _MENTIONS[part])]
        return named or [part for part in parts if part != "max_tokens"]

    def _read(self, response) -> VLMAnswer:
        """The reply of a chat completion, or an error saying what is wrong with it (never raises)."""
        if isinstance(response, str):  # the openai client returns a body that is not JSON as text
            return VLMAnswer("", error=self._describe_error(None, _not_json(response)))
        choices = getattr(response, "choices", None)
        if not choices:
            return VLMAnswer("", error="the server returned no choices")
        choice = choices[0]
        message = choice.message
        if message is None:
            return VLMAnswer("", error="the server returned a choice without a message")
        text = message.content if isinstance(message.content, str) else ""
        extra = message.model_extra or {}
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        tool_call = None
        if message.tool_calls:
            call = message.tool_calls[0]
            function = getattr(call, "function", None)
            if function is not None:
                tool_call = ToolCall(call.id or "call-0", function.name or "", function.arguments or "")
        if not text and tool_call is None and not reasoning and choice.finish_reason != "length":
            return VLMAnswer("", error="the server returned an empty reply", finish_reason=choice.finish_reason)
        return VLMAnswer(text, verdict_logprobs=self._verdict_logprobs(choice, text),
                         reasoning=reasoning if isinstance(reasoning, str) else None,
                         finish_reason=choice.finish_reason, tool_call=tool_call)

    @staticmethod
    def _verdict_logprobs(choice, text: str) -> dict[str, float] | None:
        content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
        if not content:
            return None
        tokens = []
        for entry in content:
            alternatives = {alt.token: alt.logprob for alt in (entry.top_logprobs or [])}
            alternatives.setdefault(entry.token, entry.logprob)
            tokens.append((entry.token, alternatives))
        return verdict_token_logprobs(tokens, reasoning_end(text))

    def _describe_error(self, err: Exception | None, message: str | None = None) -> str:
        """A one-line reason for the trace, the key redacted; logged as a warning."""
        message = self._redact(message or self._error_text(err))
        log.warning("%s: %s", self.name, message)
        return message

    def _error_text(self, err: Exception | None) -> str:
        retries = f" after {self.config.max_retries} retries" if self.config.max_retries else ""
        if isinstance(err, openai.APITimeoutError):
            return f"timeout: no answer within {self.config.timeout:g} s{retries}"
        if isinstance(err, openai.APIConnectionError):
            return f"cannot reach the server{retries}"
        if isinstance(err, openai.APIStatusError):
            body = err.response.text if err.response is not None else ""
            detail = _not_json(body) if _looks_like_html(body) else str(getattr(err, "message", err))[:200]
            return f"HTTP {err.status_code}{retries}: {detail}"
        return f"{type(err).__name__}: {str(err)[:200]}"


def _call_as_json(call: ToolCall | None) -> str:
    """A tool call written as the JSON action it stands for (for a server that takes no tools)."""
    if call is None:
        return ""
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        arguments = {}
    return json.dumps({"action": call.name, **(arguments if isinstance(arguments, dict) else {})})


def _obeys(text: str, choices: tuple[str, ...] | None) -> bool:
    """Whether a reply is in the constrained form: one of the words, alone or as {"answer": word}."""
    words = {choice.lower() for choice in choices or ()}
    stripped = split_reasoning(text)[0]
    if stripped.lower() in words:
        return True
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and str(value.get("answer", "")).lower() in words


def _looks_like_html(body: str) -> bool:
    return body.lstrip()[:200].lower().startswith(("<!doctype html", "<html", "<head", "<body"))


def _not_json(body: str) -> str:
    kind = "an HTML page" if _looks_like_html(body) else f"{len(body):,} characters of text"
    return f"the server answered with {kind}, not an API reply (is the URL the API's, ending in /v1?)"
