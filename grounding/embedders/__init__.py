"""Image-text embedding models behind one protocol (`Embedder`), for open-vocabulary search.

* `transformers_embedder.TransformersEmbedder`: any CLIP-family model of transformers
  (`CLIPModel`, `SiglipModel`, SigLIP 2), from the Hub cache or built from a config;
* `seeing.SeeingEmbedder`: a test embedder that really looks at each region (colour and shape)
  and places regions and texts in the same small vector space, for proofs without weights.

`make_embedder` picks one by name.
"""
from __future__ import annotations

from .base import DEFAULT_MODEL, Embedder, EmbedderUnavailable, Region

SEEING = "seeing"
"""Name of the seeing test embedder in `make_embedder`."""


def make_embedder(name: str = DEFAULT_MODEL, device: str = "auto") -> Embedder:
    """``"seeing"`` or a Hub id / local folder of a CLIP-family model (read from the local cache only)."""
    if name == SEEING:
        from .seeing import SeeingEmbedder

        return SeeingEmbedder()
    from .transformers_embedder import TransformersEmbedder

    return TransformersEmbedder.from_pretrained(name, device=device)


__all__ = ["DEFAULT_MODEL", "Embedder", "EmbedderUnavailable", "Region", "SEEING", "make_embedder"]
