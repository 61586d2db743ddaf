"""Local Qwen-VL through transformers: free text by greedy decoding, P(yes) from next-token logits.

Two model families run here with one code path: Qwen2.5-VL (``Qwen/Qwen2.5-VL-3B-Instruct``, the
default) and, where the installed transformers has it, Qwen3-VL (``Qwen/Qwen3-VL-4B-Instruct``):
`LOCAL_MODELS` lists what this install offers. The weights are downloaded by
`QwenVLM.from_pretrained` only, which only runs when a user asks for this backend. Images are
resized to a pixel budget between ``min_pixels`` and ``max_pixels`` (multiples of the model's
merged patch: 28 px for Qwen2.5-VL, 32 px for Qwen3-VL).

On a ZeroGPU Space (the `spaces` package is importable) a GPU exists only inside a call
decorated with ``spaces.GPU``: the weights are loaded on the CPU and every forward pass runs
inside such a call, which moves the weights to the GPU first (a no-op once they are there), as
the IGGT model's calls do (`demo.services.ModelService.wrap_model_call`).
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from .base import YES_NO_INSTRUCTION, BaseVLM, Message, VLMAnswer, YesNo

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
QWEN3_MODEL_ID = "Qwen/Qwen3-VL-4B-Instruct"
_YES_WORDS = ("yes", "Yes", "YES", " yes", " Yes")
_NO_WORDS = ("no", "No", "NO", " no", " No")


def qwen3_available() -> bool:
    """Whether the installed transformers has Qwen3-VL (transformers 4.57 and later)."""
    import transformers

    return hasattr(transformers, "Qwen3VLForConditionalGeneration")


def local_models() -> dict[str, str]:
    """Hugging Face id -> label of the local models this install can run."""
    models = {DEFAULT_MODEL_ID: "Qwen2.5-VL 3B"}
    if qwen3_available():
        models[QWEN3_MODEL_ID] = "Qwen3-VL 4B"
    return models


@dataclass(frozen=True)
class QwenConfig:
    """Which Qwen-VL to run, where, and how large its images may be."""

    model_id: str = DEFAULT_MODEL_ID
    device: str = "auto"
    """"auto" = CUDA when available (always on a ZeroGPU Space), else MPS, else CPU."""
    dtype: str = "auto"
    """"auto" = bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    max_new_tokens: int = 256
    min_yes_no_mass: float = 0.05
    """Below this next-token probability of yes + no, a yes/no question counts as unanswered."""
    max_concurrency: int = 1
    """One generation at a time: the model already uses the whole device."""
    gpu_seconds: int = 60
    """ZeroGPU: the longest one decorated call may hold the GPU."""


def zero_gpu(seconds: int) -> Callable | None:
    """``spaces.GPU(duration=seconds)`` on a ZeroGPU Space (the `spaces` package importable), else None."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces.GPU(duration=seconds)


def resolve_device(device: str, on_zero_gpu: bool = False) -> torch.device:
    """The device to run on; on ZeroGPU "auto" is CUDA, which exists there inside decorated calls only."""
    if device != "auto":
        return torch.device(device)
    if on_zero_gpu or torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device, on_zero_gpu: bool = False) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if on_zero_gpu:  # the GPU is not there to ask; ZeroGPU's GPUs (A100, H200) all support bfloat16
        return torch.bfloat16
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
    """`VLM` running a Qwen2.5-VL or Qwen3-VL model and processor in this process.

    ``device``: where the forward passes run (default: where the model is); ``gpu_call``: a decorator
    every forward pass runs through (``spaces.GPU`` on ZeroGPU), inside which the weights are moved
    to ``device``.
    """

    def __init__(self, model, processor, config: QwenConfig = QwenConfig(), *, device: torch.device | None = None,
                 gpu_call: Callable | None = None, **base_kwargs):
        super().__init__(max_concurrency=config.max_concurrency, **base_kwargs)
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.device = device if device is not None else model.device
        self.name = f"qwen:{config.model_id}"
        tokenizer = processor.tokenizer
        self._yes_ids = self._first_token_ids(tokenizer, _YES_WORDS)
        self._no_ids = self._first_token_ids(tokenizer, _NO_WORDS) - self._yes_ids
        if not self._yes_ids or not self._no_ids:
            raise ValueError(f"the tokenizer of {config.model_id} has no distinct tokens for yes and no")
        self._generate = gpu_call(self._generate_on_device) if gpu_call else self._generate_on_device
        self._next_token = gpu_call(self._next_token_on_device) if gpu_call else self._next_token_on_device

    @classmethod
    def from_pretrained(cls, config: QwenConfig = QwenConfig(), **base_kwargs) -> "QwenVLM":
        """Load weights and processor (downloads them from the Hugging Face Hub on first use); the
        model class (Qwen2.5-VL or Qwen3-VL) comes from the checkpoint's config."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        gpu_call = zero_gpu(config.gpu_seconds)
        device = resolve_device(config.device, on_zero_gpu=gpu_call is not None)
        model = AutoModelForImageTextToText.from_pretrained(
            config.model_id, dtype=resolve_dtype(config.dtype, device, on_zero_gpu=gpu_call is not None))
        if gpu_call is None:
            model = model.to(device)
        processor = AutoProcessor.from_pretrained(config.model_id)
        return cls(model, processor, config, device=device, gpu_call=gpu_call, **base_kwargs)

    @staticmethod
    def _first_token_ids(tokenizer, words: tuple[str, ...]) -> set[int]:
        return {ids[0] for ids in (tokenizer.encode(w, add_special_tokens=False) for w in words) if ids}

    @property
    def _patch_pixels(self) -> int:
        """Side of one merged patch in pixels: 28 for Qwen2.5-VL, 32 for Qwen3-VL."""
        image_processor = self.processor.image_processor
        return int(image_processor.patch_size * image_processor.merge_size)

    def _inputs(self, images: list[Image.Image], prompt: str, system: str | None, history: list[Message]):
        """Chat-template the dialogue and run the processor, exactly as for the released weights (on the CPU;
        the tensors go to the device inside the forward pass's call).

        Images are resized to the pixel budget by ``qwen_vl_utils.process_vision_info`` (Qwen's own
        recipe) for Qwen2.5-VL. That package imports torchvision; where torchvision is missing (CPU-only
        installs with a torch that has no matching torchvision wheel), and for Qwen3-VL's 32-pixel
        patches, the processor applies the same budget.
        """
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        budget = {"min_pixels": self.config.min_pixels, "max_pixels": self.config.max_pixels}
        for turn in [*history, Message("user", prompt, images)]:
            content = [{"type": "image", "image": image.convert("RGB"), **budget} for image in turn.images]
            messages.append({"role": turn.role, "content": content + [{"type": "text", "text": turn.text}]})
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        vision_info = _process_vision_info() if self._patch_pixels == 28 else None
        if vision_info is not None:
            resized, _ = vision_info(messages)
            return self.processor(text=[text], images=resized or None, return_tensors="pt")
        all_images = [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]
        return self.processor(text=[text], images=all_images or None, return_tensors="pt",
                              images_kwargs={"size": {"shortest_edge": self.config.min_pixels,
                                                      "longest_edge": self.config.max_pixels}})

    def _on_device(self, inputs):
        """Inside a forward pass's call: the weights and ``inputs`` on `device` (on ZeroGPU the GPU exists
        now, and maybe not the one of the last call); moving weights that are there already costs nothing."""
        self.model.to(self.device)
        return inputs.to(self.device)

    @torch.inference_mode()
    def _generate_on_device(self, inputs) -> str:
        inputs = self._on_device(inputs)
        output = self.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        return self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    @torch.inference_mode()
    def _next_token_on_device(self, inputs) -> tuple[float, float, int]:
        """Next-token probability of the yes tokens, of the no tokens, and the most likely token."""
        inputs = self._on_device(inputs)
        probabilities = torch.softmax(self.model(**inputs).logits[0, -1].float(), dim=-1)
        return (float(probabilities[sorted(self._yes_ids)].sum()), float(probabilities[sorted(self._no_ids)].sum()),
                int(probabilities.argmax()))

    def _ask(self, images: list[Image.Image], prompt: str, system: str | None, history: list[Message], *,
             want_logprobs: bool = False, tools: list[dict] | None = None,
             choices: tuple[str, ...] | None = None) -> VLMAnswer:
        """Greedy decoding; ``tools`` and ``choices`` are not offered to a local model (the agent reads its
        actions from the text, and yes/no comes from the logits in `_yes_no`)."""
        return VLMAnswer(self._generate(self._inputs(images, prompt, system, history)))

    def _yes_no(self, images: list[Image.Image], question: str) -> YesNo:
        """One forward pass: P(yes) = mass of the yes-tokens over yes + no tokens at the next position.

        When yes and no together get less than ``min_yes_no_mass`` of the probability, the model
        meant to say something else: the answer stays unanswered (P(yes) is still reported).
        """
        yes, no, top = self._next_token(self._inputs(images, f"{question}\n{YES_NO_INSTRUCTION}", None, []))
        probability = yes / (yes + no) if yes + no > 0 else 0.5
        raw = self.processor.tokenizer.decode([top])
        if yes + no < self.config.min_yes_no_mass:
            return YesNo(None, probability, raw, error=f"yes and no get only {yes + no:.1%} of the "
                                                       "next-token probability")
        return YesNo(probability >= 0.5, probability, raw)
