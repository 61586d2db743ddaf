"""VLM over the OpenAI chat-completions API: GPT-4o, or any compatible server (vLLM, Ollama, LM Studio).

Images travel as base64 PNG data URLs. The client retries 429 and 5xx answers and timeouts
with exponential back-off (``max_retries``). P(yes) comes from the first token's
``top_logprobs`` when the server returns them. The API key comes from the config or from
``OPENAI_API_KEY`` and is never logged, printed or put into a trace or an error message.
"""
from __future__ import annotations

import base64
import io
import logging
import os
from dataclasses import dataclass, field

import httpx
import openai
from PIL import Image

from iggt.errors import IGGTError

from .base import BaseVLM, Message, VLMAnswer

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
    max_tokens: int = 512
    top_logprobs: int = 5
    """Ask for this many first-token alternatives on yes/no questions (0 = never ask)."""
    image_detail: str = "auto"


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
                                     timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
                                     max_retries=config.max_retries)
        self._logprobs_supported = config.top_logprobs > 0
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
        messages: list[dict] = [{"role": "system", "content": system}] if system else []
        for turn in history:
            content = self._content(turn.text, turn.images) if turn.role == "user" else turn.text
            messages.append({"role": turn.role, "content": content})
        messages.append({"role": "user", "content": self._content(prompt, images)})
        return messages

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _ask(self, images: list[Image.Image], prompt: str, system: str | None,
             history: list[Message], want_logprobs: bool) -> VLMAnswer:
        if self._unreachable is not None:
            return VLMAnswer("", error=self._unreachable)
        request = dict(model=self.config.model, messages=self._messages(prompt, images, system, history),
                       temperature=self.config.temperature, max_tokens=self.config.max_tokens)
        if want_logprobs and self._logprobs_supported:
            request.update(logprobs=True, top_logprobs=self.config.top_logprobs)
        try:
            response = self._client.chat.completions.create(**request)
        except openai.BadRequestError as err:
            if "logprobs" in request and "logprobs" in str(err).lower():
                log.info("%s does not return logprobs; using parsed answers", self.name)
                self._logprobs_supported = False
                return self._ask(images, prompt, system, history, want_logprobs)
            return VLMAnswer("", error=self._describe_error(err))
        except openai.OpenAIError as err:
            error = self._describe_error(err)
            if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
                self._unreachable = error
            return VLMAnswer("", error=error)
        if not response.choices:
            return VLMAnswer("", error="the server returned no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        return VLMAnswer(text, first_token_logprobs=self._first_token_logprobs(choice))

    @staticmethod
    def _first_token_logprobs(choice) -> dict[str, float] | None:
        content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
        if not content:
            return None
        first = content[0]
        candidates = {alt.token: alt.logprob for alt in (first.top_logprobs or [])}
        candidates.setdefault(first.token, first.logprob)
        return candidates

    def _describe_error(self, err: Exception) -> str:
        retries = f" after {self.config.max_retries} retries" if self.config.max_retries else ""
        if isinstance(err, openai.APITimeoutError):
            message = f"timeout: no answer within {self.config.timeout:g} s{retries}"
        elif isinstance(err, openai.APIConnectionError):
            message = f"cannot reach the server{retries}"
        elif isinstance(err, openai.APIStatusError):
            message = f"HTTP {err.status_code}{retries}: {str(getattr(err, 'message', err))[:200]}"
        else:
            message = f"{type(err).__name__}: {str(err)[:200]}"
        message = self._redact(message)
        log.warning("%s: %s", self.name, message)
        return message
