"""CLIP-family embedders from transformers: `CLIPModel`, `SiglipModel` (SigLIP and fixed-size SigLIP 2).

A region is encoded as its square crop with everything outside the mask dimmed towards grey
(the crop keeps its context, the instance stands out), resized to the model's input size. Weights
are read from the local Hugging Face cache only: nothing is downloaded while the app or a test
runs, and a missing model gets an `EmbedderUnavailable` that says what to download and how.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from grounding.highlight import dim_outside

from .base import EmbedderUnavailable, Region, normalize_rows

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_TYPES = ("siglip", "siglip2")
SIGLIP_TEXT_LENGTH = 64
"""SigLIP was trained on texts padded to 64 tokens and expects them so."""


@dataclass(frozen=True)
class ImageInput:
    """How the model wants its pixels."""

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    background_dim: float = 0.5
    """How strongly pixels outside the mask are blended towards grey (0 = plain crop)."""


def _device(device: str) -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features`` (projected vectors in ``pooler_output``)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class TransformersEmbedder:
    """An `Embedder` around a transformers CLIP-family model and its tokenizer."""

    def __init__(self, model, tokenizer, image_input: ImageInput, name: str, device: str = "auto",
                 batch_size: int = 32):
        self.device = _device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.image_input = image_input
        self.name = name
        self.batch_size = batch_size
        self.logit_scale = float(model.logit_scale.detach().exp())
        self._siglip = model.config.model_type in SIGLIP_TYPES

    @classmethod
    def from_pretrained(cls, model_id: str, device: str = "auto") -> "TransformersEmbedder":
        """The model of a Hub id or folder, from the local cache only (see `download_hint`)."""
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        try:
            model = AutoModel.from_pretrained(model_id, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(model_id, local_files_only=True)
        except OSError:
            raise EmbedderUnavailable(download_hint(model_id)) from None
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise EmbedderUnavailable(f"{model_id} is not an image-text model (no image and text features)")
        size = model.config.vision_config.image_size
        image_input = ImageInput(int(size), tuple(processor.image_mean), tuple(processor.image_std))
        return cls(model, tokenizer, image_input, model_id, device)

    @torch.inference_mode()
    def embed_regions(self, regions: list[Region]) -> np.ndarray:
        vectors = []
        for start in range(0, len(regions), self.batch_size):
            pixels = torch.from_numpy(np.stack([self._pixels(r) for r in regions[start:start + self.batch_size]]))
            output = self.model.get_image_features(pixel_values=pixels.to(self.device))
            vectors.append(_features(output).float().cpu().numpy())
        return normalize_rows(np.concatenate(vectors)) if vectors else np.zeros((0, 0), np.float32)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        padding = dict(padding="max_length", max_length=SIGLIP_TEXT_LENGTH) if self._siglip else dict(padding=True)
        tokens = self.tokenizer(list(texts), truncation=True, return_tensors="pt", **padding)
        inputs = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if self._siglip:
            inputs.pop("attention_mask", None)  # SigLIP attends to its padding, as in training
        return normalize_rows(_features(self.model.get_text_features(**inputs)).float().cpu().numpy())

    def _pixels(self, region: Region) -> np.ndarray:
        """``[3, size, size]`` float32: the dimmed crop, resized and normalised."""
        spec = self.image_input
        image = dim_outside(region.image, region.mask, spec.background_dim)
        image = Image.fromarray(image).resize((spec.size, spec.size), Image.Resampling.BICUBIC)
        array = np.asarray(image, np.float32) / 255.0
        return ((array - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)).transpose(2, 0, 1)


def download_hint(model_id: str) -> str:
    """What to run to get ``model_id`` into the local cache (one line, no paths)."""
    return (f"the embedding model {model_id} is not downloaded yet: run `hf download {model_id} "
            "--exclude 'open_clip_*'` once with internet access (about 600 MB; or set HF_HOME to a cache that "
            "has it), then try again")
