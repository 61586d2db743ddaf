"""Image-text embedding models behind one protocol (`Embedder`), for open-vocabulary search.

* `transformers_embedder.TransformersEmbedder`: any CLIP-family model of transformers
  (`CLIPModel`, `SiglipModel`, SigLIP 2), from the Hub cache or built from a config;
* `seeing.SeeingEmbedder`: a test embedder that really looks at each region (colour and shape)
  and places regions and texts in the same small vector space, for proofs without weights.

`make_embedder` picks one by name; `shared_embedder` keeps one loaded copy per name in a process.
"""
from __future__ import annotations

import threading

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


_SHARED: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(name: str = DEFAULT_MODEL) -> Embedder:
    """`make_embedder`'s model, loaded once per process: the app's Find tab and the agent's pre-filter
    share one copy (a failed load is not remembered, so a later call tries again)."""
    with _SHARED_LOCK:
        if name not in _SHARED:
            _SHARED[name] = make_embedder(name)
        return _SHARED[name]


__all__ = ["DEFAULT_MODEL", "Embedder", "EmbedderUnavailable", "Region", "SEEING", "make_embedder",
           "shared_embedder"]
