"""Local Qwen2.5-VL through transformers: free text by greedy decoding, P(yes) from next-token logits.

The weights (``Qwen/Qwen2.5-VL-3B-Instruct`` by default) are downloaded by `QwenVLM.from_pretrained`
only, which only runs when a user asks for this backend. Images are resized by the processor
to a pixel budget between ``min_pixels`` and ``max_pixels`` (multiples of 28 x 28 patches).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from PIL import Image

from .base import BaseVLM, Message, VLMAnswer, YesNo, YES_NO_INSTRUCTION

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
_YES_WORDS = ("yes", "Yes", "YES", " yes", " Yes")
_NO_WORDS = ("no", "No", "NO", " no", " No")


@dataclass(frozen=True)
class QwenConfig:
    """Which Qwen2.5-VL to run, where, and how large its images may be."""

    model_id: str = DEFAULT_MODEL_ID
    device: str = "auto"
    """"auto" = CUDA when available, else MPS, else CPU."""
    dtype: str = "auto"
    """"auto" = bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    max_new_tokens: int = 256
    min_yes_no_mass: float = 0.05
    """Below this next-token probability of yes + no, a yes/no question counts as unanswered."""
    max_concurrency: int = 1
    """One generation at a time: the model already uses the whole device."""


def resolve_device(device: str) -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device.type == "mps" else torch.float32


@functools.cache
def _process_vision_info():
    """``qwen_vl_utils.process_vision_info`` when it imports (it needs torchvision), else None
    (logged once with the reason, since images are then resized by the processor instead)."""
    try:
        from qwen_vl_utils import process_vision_info
    except Exception as error:  # ImportError, or a torchvision build that does not match torch
        log.info("qwen_vl_utils unavailable (%s: %s); the processor resizes the images", type(error).__name__, error)
        return None
    return process_vision_info


class QwenVLM(BaseVLM):
    """`VLM` running a Qwen2.5-VL model and processor in this process."""

    def __init__(self, model, processor, config: QwenConfig = QwenConfig(), **base_kwargs):
        super().__init__(max_concurrency=config.max_concurrency, **base_kwargs)
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.name = f"qwen:{config.model_id}"
        tokenizer = processor.tokenizer
        self._yes_ids = self._first_token_ids(tokenizer, _YES_WORDS)
        self._no_ids = self._first_token_ids(tokenizer, _NO_WORDS) - self._yes_ids
        if not self._yes_ids or not self._no_ids:
            raise ValueError(f"the tokenizer of {config.model_id} has no distinct tokens for yes and no")

    @classmethod
    def from_pretrained(cls, config: QwenConfig = QwenConfig(), **base_kwargs) -> "QwenVLM":
        """Load weights and processor (downloads them from the Hugging Face Hub on first use)."""
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        device = resolve_device(config.device)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            config.model_id, dtype=resolve_dtype(config.dtype, device)).to(device)
        processor = AutoProcessor.from_pretrained(config.model_id)
        return cls(model, processor, config, **base_kwargs)

    @staticmethod
    def _first_token_ids(tokenizer, words: tuple[str, ...]) -> set[int]:
        return {ids[0] for ids in (tokenizer.encode(w, add_special_tokens=False) for w in words) if ids}

    def _inputs(self, images: list[Image.Image], prompt: str, system: str | None, history: list[Message]):
        """Chat-template the dialogue and run the processor, exactly as for the released weights.

        Images are resized to the pixel budget by ``qwen_vl_utils.process_vision_info`` (Qwen's own
        recipe). That package imports torchvision; where torchvision is missing (CPU-only installs
        with a torch that has no matching torchvision wheel) the processor applies the same budget.
        """
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        budget = {"min_pixels": self.config.min_pixels, "max_pixels": self.config.max_pixels}
        for turn in [*history, Message("user", prompt, images)]:
            content = [{"type": "image", "image": image.convert("RGB"), **budget} for image in turn.images]
            messages.append({"role": turn.role, "content": content + [{"type": "text", "text": turn.text}]})
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        vision_info = _process_vision_info()
        if vision_info is not None:
            resized, _ = vision_info(messages)
            inputs = self.processor(text=[text], images=resized or None, return_tensors="pt")
        else:
            all_images = [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]
            inputs = self.processor(text=[text], images=all_images or None, return_tensors="pt",
                                    images_kwargs={"size": {"shortest_edge": self.config.min_pixels,
                                                            "longest_edge": self.config.max_pixels}})
        return inputs.to(self.model.device)

    @torch.inference_mode()
    def _ask(self, images: list[Image.Image], prompt: str, system: str | None,
             history: list[Message], want_logprobs: bool) -> VLMAnswer:
        inputs = self._inputs(images, prompt, system, history)
        output = self.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        return VLMAnswer(self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip())

    @torch.inference_mode()
    def _yes_no(self, images: list[Image.Image], question: str) -> YesNo:
        """One forward pass: P(yes) = mass of the yes-tokens over yes + no tokens at the next position.

        When yes and no together get less than ``min_yes_no_mass`` of the probability, the model
        meant to say something else: the answer stays unanswered (P(yes) is still reported).
        """
        inputs = self._inputs(images, f"{question}\n{YES_NO_INSTRUCTION}", None, [])
        logits = self.model(**inputs).logits[0, -1].float()
        probabilities = torch.softmax(logits, dim=-1)
        yes = probabilities[sorted(self._yes_ids)].sum()
        no = probabilities[sorted(self._no_ids)].sum()
        probability = float(yes / (yes + no))
        raw = self.processor.tokenizer.decode([int(logits.argmax())])
        if float(yes + no) < self.config.min_yes_no_mass:
            return YesNo(None, probability, raw, error=f"yes and no get only {float(yes + no):.1%} of the "
                                                       "next-token probability")
        return YesNo(probability >= 0.5, probability, raw)
