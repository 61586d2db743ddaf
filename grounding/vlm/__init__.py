"""VLM backends behind one protocol (`grounding.vlm.base.VLM`): OpenAI-compatible HTTP, local Qwen-VL.

`make_backend` builds one by name; the backend modules are imported only when chosen, so
using the HTTP backend never imports transformers.
"""
from __future__ import annotations

from .base import VLM, AnswerCache, Message, VLMAnswer, YesNo, parse_yes_no

BACKENDS = ("openai", "qwen")


def make_backend(kind: str, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, max_concurrency: int | None = None,
                 max_tokens: int | None = None, device: str = "auto") -> VLM:
    """A backend by name: "openai" (any OpenAI-compatible server) or "qwen" (local transformers).

    ``max_tokens`` (openai): token limit of a reply (default `OpenAIConfig.max_tokens`, large enough
    for reasoning models)."""
    if kind == "openai":
        from .openai_backend import OpenAIConfig, OpenAIVLM

        config = OpenAIConfig(model=model or OpenAIConfig.model, base_url=base_url, api_key=api_key,
                              timeout=timeout, max_retries=max_retries,
                              max_concurrency=max_concurrency or OpenAIConfig.max_concurrency,
                              max_tokens=max_tokens or OpenAIConfig.max_tokens)
        return OpenAIVLM(config)
    if kind == "qwen":
        from .qwen_backend import QwenConfig, QwenVLM

        return QwenVLM.from_pretrained(QwenConfig(model_id=model or QwenConfig.model_id, device=device))
    raise ValueError(f"unknown VLM backend {kind!r}: use one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "VLM", "AnswerCache", "Message", "VLMAnswer", "YesNo", "make_backend", "parse_yes_no"]
