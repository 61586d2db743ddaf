"""A test embedder that looks at each region: its colour and its shape, as words in a shared space.

It stands in for a CLIP model where no weights can be downloaded (tests, benchmarks, offline trials
of the app), as the seeing chat server stands in for a VLM: what it returns is computed from the
pixels and the mask of each region, never from knowledge of the scene. The vector space has one
axis per colour name, one per shape name, and two generic axes ("thing", "surface"):

* a region is the soft vote of its pixels over the colour names (nearest named colour, shading
  divided out), the soft vote of its silhouette over the shapes (`shape_scores`), and "thing";
* a text is the sum of the axes of the colour and shape words it contains (synonyms such as
  "ball" or "something to sit on" included); a text naming nothing known is "thing" alone, and
  "wall", "floor", "background" are "surface".
"""
from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

from grounding.vlm.seeing_server import ellipse_fill, solidity
from iggt.data.synthetic.config import CATEGORIES, PALETTE

from .base import Region, normalize_rows

COLOURS = tuple(PALETTE)
SHAPES = CATEGORIES
AXES = (*COLOURS, *SHAPES, "thing", "surface")
SYNONYMS = {"grey": "gray", "box": "cube", "block": "cube", "ball": "sphere", "globe": "sphere",
            "tube": "cylinder", "can": "cylinder", "pill": "capsule", "desk": "table", "seat": "chair",
            "sit": "chair", "stool": "chair", "tetrahedron": "pyramid", "object": "thing", "thing": "thing",
            "something": "thing", "wall": "surface", "floor": "surface", "background": "surface",
            "ceiling": "surface", "ground": "surface"}
TYPICAL_BRIGHTNESS = 0.5
"""Share of a surface's colour that typically reaches the camera (median of the rendered objects of
the training scenes, data/synthetic/train-240: about half of the named colour)."""
BRIGHTNESS_PENALTY = 0.02
SHARPNESS = 8.0
THING_WEIGHT = 0.5
"""Weight of the generic "thing" axis in a region's vector: an object fits "object" less well than
a text naming its colour and shape."""
"""How peaked the soft votes are (softmax of this times the similarity)."""


def _axis(name: str) -> int:
    return AXES.index(name)


# -- looking at a region ------------------------------------------------------------------------

def colour_scores(pixels: np.ndarray) -> np.ndarray:
    """``[len(COLOURS)]`` share of ``[N, 3]`` uint8 pixels nearest to each named colour.

    Each pixel is compared with each named colour at the brightness that fits it best (shading
    scales a surface's colour), with a penalty for brightness far from the typical one, so a shaded red is
    still red and black stays apart from a dark grey."""
    rgb = pixels.astype(np.float64) / 255.0 + 1e-3
    palette = np.array([PALETTE[c] for c in COLOURS], np.float64) / 255.0 + 1e-3
    scale = (rgb @ palette.T) / (palette ** 2).sum(axis=1)[None]             # best brightness per colour
    scale = np.clip(scale, 0.15, 1.5)
    error = ((rgb[:, None, :] - scale[..., None] * palette[None]) ** 2).sum(axis=-1)
    error += BRIGHTNESS_PENALTY * np.log(scale / TYPICAL_BRIGHTNESS) ** 2
    votes = np.bincount(error.argmin(axis=1), minlength=len(COLOURS)).astype(np.float64)
    return votes / max(votes.sum(), 1.0)


def region_features(region: Region) -> dict[str, float]:
    """Silhouette measures of the region's largest connected part."""
    parts, count = ndimage.label(region.mask)
    mask = parts == (np.bincount(parts.ravel())[1:].argmax() + 1) if count else region.mask
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    widths = mask.sum(axis=1).astype(np.float64)
    quarter = max(1, len(widths) // 5)
    return {"solidity": solidity(mask), "extent": float(mask.mean()), "aspect": mask.shape[0] / mask.shape[1],
            "top": float(widths[:quarter].mean() / widths.max()),
            "bottom": float(widths[-quarter:].mean() / widths.max()), "ellipse": ellipse_fill(mask)}


SHAPE_PROTOTYPES = {
    #          solidity     extent       aspect       top          bottom       ellipse
    "capsule": ((0.98, .09), (0.72, .12), (0.84, .32), (0.54, .13), (0.49, .17), (0.91, .10)),
    "chair": ((0.64, .09), (0.45, .08), (1.70, .19), (0.48, .23), (0.16, .04), (0.59, .10)),
    "cone": ((0.99, .05), (0.60, .09), (1.27, .35), (0.19, .12), (0.70, .11), (0.80, .09)),
    "cube": ((0.97, .05), (0.79, .10), (0.91, .24), (0.68, .17), (0.55, .24), (0.86, .06)),
    "cylinder": ((0.97, .10), (0.80, .14), (1.68, .43), (0.87, .14), (0.70, .25), (0.87, .09)),
    "pyramid": ((0.99, .05), (0.55, .06), (1.01, .36), (0.21, .11), (0.56, .24), (0.78, .05)),
    "sphere": ((0.99, .03), (0.77, .05), (1.00, .08), (0.54, .04), (0.52, .11), (0.97, .06)),
    "table": ((0.51, .14), (0.37, .11), (0.84, .25), (0.66, .17), (0.09, .04), (0.49, .15)),
}
"""Mean and spread of each `region_features` measure per shape (in that order), measured on the
ground-truth masks of 371 uncut object views of the training scenes (data/synthetic/train-240,
first 15 scenes, seed 0), never on the benchmark."""
FEATURE_ORDER = ("solidity", "extent", "aspect", "top", "bottom", "ellipse")


def shape_scores(region: Region) -> np.ndarray:
    """``[len(SHAPES)]`` probabilities of the shapes, from the silhouette (Gaussian likelihoods of
    its measures around each shape's prototype; spreads floored so no single measure decides)."""
    features = region_features(region)
    values = np.array([features[k] for k in FEATURE_ORDER])
    log_likelihood = []
    for shape in SHAPES:
        mean, spread = np.array(SHAPE_PROTOTYPES[shape]).T
        spread = np.maximum(spread, 0.05)
        log_likelihood.append(float(-0.5 * (((values - mean) / spread) ** 2).sum() - np.log(spread).sum()))
    log_likelihood = np.array(log_likelihood)
    weights = np.exp(log_likelihood - log_likelihood.max())
    return weights / weights.sum()


# -- reading a text -----------------------------------------------------------------------------

def text_axes(text: str) -> list[str]:
    """The axes a text names ("the red ball" -> ["red", "sphere"]); ["thing"] when it names nothing
    more specific ("something to sit on" -> ["chair"], "an object" -> ["thing"])."""
    words = re.findall(r"[a-z]+", text.lower())
    axes = []
    for word in words:
        for candidate in (word, word.rstrip("s"), word[:-2] if word.endswith("es") else word):
            name = SYNONYMS.get(candidate, candidate)
            if name in AXES:
                axes.append(name)
                break
    named = [axis for axis in dict.fromkeys(axes) if axis != "thing"]
    return named or ["thing"]


class SeeingEmbedder:
    """An `Embedder` that sees colour and shape (see the module docstring)."""

    name = "seeing"
    logit_scale = 25.0

    def embed_regions(self, regions: list[Region]) -> np.ndarray:
        vectors = np.zeros((len(regions), len(AXES)), np.float32)
        for row, region in enumerate(regions):
            if not region.mask.any():
                vectors[row, _axis("thing")] = 1.0
                continue
            colours = colour_scores(region.image[region.mask])
            vectors[row, :len(COLOURS)] = _peaked(colours)
            vectors[row, len(COLOURS):len(COLOURS) + len(SHAPES)] = shape_scores(region)
            vectors[row, _axis("thing")] = THING_WEIGHT
        return normalize_rows(vectors)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), len(AXES)), np.float32)
        for row, text in enumerate(texts):
            for name in text_axes(text):
                vectors[row, _axis(name)] = 1.0
        return normalize_rows(vectors)


def _peaked(shares: np.ndarray) -> np.ndarray:
    """Votes -> probabilities that favour the majority (a few stray pixels do not make a colour)."""
    weights = np.exp(SHARPNESS * (shares - shares.max()))
    return weights / weights.sum()
