"""The protocol of image-text embedding models: regions and texts in one space, compared by cosine.

A *region* is a crop of one view and the mask of one instance in it. The embedder decides how
the mask is used (dimming the rest of the crop, pooling dense features in it), so masked crops
and mask pooling are interchangeable behind `embed_regions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from iggt.errors import IGGTError

DEFAULT_MODEL = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
"""The default embedding model: OpenCLIP's ViT-B/32 trained on LAION-2B, as a transformers `CLIPModel`
(MIT licence, 151 M parameters, about 600 MB in fp32). A B/32 encodes a crop in a quarter of the
work of a B/16 (49 patches, not 196), which keeps the instance pass of a scene within seconds on a
CPU, and it is the most accurate CLIP of that cost with a clear licence (docs/openvocab.md)."""


class EmbedderUnavailable(IGGTError):
    """The embedding model cannot be loaded here (weights not downloaded, no network)."""


@dataclass(frozen=True)
class Region:
    """One instance seen in one view: a square crop around it and its mask in that crop."""

    image: np.ndarray
    """``[h, w, 3]`` uint8 RGB."""
    mask: np.ndarray
    """``[h, w]`` bool, the instance's pixels."""


@runtime_checkable
class Embedder(Protocol):
    """Maps regions and texts to L2-normalised vectors of the same space."""

    name: str
    logit_scale: float
    """Temperature of the model: cosine similarities times this are the logits of a softmax."""

    def embed_regions(self, regions: list[Region]) -> np.ndarray:
        """``[N, D]`` float32, one unit vector per region, computed in batches."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """``[N, D]`` float32, one unit vector per text."""
        ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
