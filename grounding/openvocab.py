"""Open-vocabulary segmentation by mask pooling: an embedding per instance, text search, labels.

The instance masks of a `Scene` are region priors (the paper's open-vocabulary recipe): each
object instance is embedded by an image-text model (`grounding.embedders`), then

* `find` ranks the instances for a text query with a calibrated score: per instance, a softmax
  over the query and a few generic negatives ("object", "wall", "floor", "background") at the
  model's own temperature (its ``logit_scale``: 100 for CLIP); instances scoring at least
  `OpenVocabConfig.threshold` match;
* `label_instances` gives every instance the closest name of a vocabulary (a list, or the built-in
  ScanNet-20 / ScanNet-200 class lists), with the softmax probability over the vocabulary as its
  score. Structure (`iggt.structure`) is not embedded: it is labelled floor, wall or ceiling from
  its plane and the cameras;
* `shortlist` keeps the instances of a ranking worth asking a chat VLM about (the agent's
  pre-filter of its find checks, `PrefilterConfig`).

An instance's embedding is the mean of its region embeddings, weighted by visible pixels, over the
views that see it best (most pixels, not cut by the border) and over several context scales of a
square crop around it (the OpenMask3D recipe; the embedder dims what lies outside the mask), all
in one batched pass. Embeddings are cached per scene content, so a second query costs only the
text side. Nothing here talks to a chat VLM.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from iggt.errors import IGGTError
from iggt.geometry import fit_plane, invert_extrinsics
from iggt.progress import Progress
from iggt.scene import Scene, rgb_uint8

from .embedders import Embedder, Region
from .highlight import best_views

BUILTIN_VOCABULARIES = ("scannet20", "scannet200")
STRUCTURE_NAMES = ("floor", "wall", "ceiling")
"""Labels of structure instances; they are left out of the vocabulary offered to objects."""
HORIZONTAL_COSINE = math.cos(math.radians(30.0))
"""A structure plane whose normal is within 30 degrees of the cameras' up axis is floor or ceiling."""


@dataclass(frozen=True)
class OpenVocabConfig:
    """How instances are embedded and scored."""

    max_views: int = 3
    """Views per instance, the best ones first."""
    context_scales: tuple[float, ...] = (0.1, 0.6)
    """Margins around the instance's box, as shares of its larger side: a tight and a wide crop."""
    min_pixels: int = 16
    """Views where the instance has fewer pixels are not used."""
    border_penalty: float = 0.25
    """Score factor of a view where the instance is cut by the image border."""
    negatives: tuple[str, ...] = ("object", "wall", "floor", "background")
    """Generic texts a query competes with in `find`."""
    threshold: float = 0.5
    """`find`: instances whose score is below this do not match."""
    prompt: str = "a photo of a {}."
    """Template every text is put into (CLIP was trained on captions)."""


@dataclass(frozen=True)
class PrefilterConfig:
    """Which instances of a ranking a chat VLM is still asked about (`shortlist`).

    Built so that the right instance is rarely dropped: the best few are always kept, and so is
    every instance scoring close to the best (every match of `find` among them), so a count over
    several alike objects keeps them all; scores that hardly differ keep everyone.
    """

    enabled: bool = True
    """Pre-filter the agent's find checks when `grounding.agent.answer` is given an embedder (giving
    one is the opt-in; without one nothing changes)."""
    keep_top: int = 3
    """The best this many are always kept."""
    margin: float = 0.5
    """Also kept: every instance scoring at least the best score minus this."""
    min_spread: float = 0.1
    """Scores whose best and worst differ by less than this are flat: every instance is kept."""


@dataclass
class InstanceEmbeddings:
    """One unit vector per embedded instance (the objects of a scene)."""

    ids: list[int]
    vectors: np.ndarray
    """``[len(ids), D]`` float32."""
    regions: int = 0
    """How many regions (crops) were embedded."""


@dataclass
class FindResult:
    """Instances ranked for one query."""

    query: str
    ranked: list[tuple[int, float]]
    """(instance id, score) of every candidate instance, best first."""
    threshold: float
    labels: dict[int, str | None] = field(default_factory=dict)
    """The instances' labels, where the scene has them."""

    @property
    def matches(self) -> list[int]:
        """Ids of the instances scoring at least the threshold, best first."""
        return [k for k, score in self.ranked if score >= self.threshold]

    def table(self, rows: int = 10) -> str:
        """A ranked plain-text table for the command line."""
        lines = [f"{'rank':>4}  {'instance':>8}  {'score':>5}  match  label"]
        for rank, (k, score) in enumerate(self.ranked[:rows], start=1):
            lines.append(f"{rank:>4}  {k:>8}  {score:5.2f}  {'yes' if score >= self.threshold else '   '}    "
                         f"{self.labels.get(k) or ''}")
        return "\n".join(lines)


# -- cache ------------------------------------------------------------------------------------

_HASHED: dict[tuple[int, int], tuple[weakref.ref, weakref.ref, str]] = {}
"""Content hashes of the arrays seen last (hashing 10 views of 518 px takes longer than a text query)."""


def scene_content_hash(scene: Scene) -> str:
    """Hash of what the embeddings depend on: the pictures and the instance masks (arrays are not
    changed in place, so the hash of the same two arrays is remembered while they live)."""
    if scene.instances is None:
        raise IGGTError("the scene has no instances: segment it first")
    images, labels = scene.images, scene.instances.labels
    key = (id(images), id(labels))
    known = _HASHED.get(key)
    if known is None or known[0]() is not images or known[1]() is not labels:
        digest = hashlib.sha1()
        for array in (images, labels):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        if len(_HASHED) > 64:
            _HASHED.clear()
        known = _HASHED[key] = (weakref.ref(images), weakref.ref(labels), digest.hexdigest())
    structure = json.dumps([i.structure for i in scene.instances.info]).encode()
    return hashlib.sha1(known[2].encode() + structure).hexdigest()


class EmbeddingCache:
    """Instance embeddings by (scene content, embedder, config), in memory (and on disk when given a folder)."""

    def __init__(self, directory: str | Path | None = None, max_entries: int = 16):
        self.directory = Path(directory) if directory is not None else None
        self.max_entries = max_entries
        self._entries: OrderedDict[str, InstanceEmbeddings] = OrderedDict()
        self._texts: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(scene: Scene, embedder: Embedder, config: OpenVocabConfig) -> str:
        setting = (embedder.name, config.max_views, config.context_scales, config.min_pixels, config.border_penalty)
        return hashlib.sha1(f"{scene_content_hash(scene)}{setting}".encode()).hexdigest()[:24]

    def get(self, key: str) -> InstanceEmbeddings | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        path = self._path(key)
        if path is not None and path.exists():
            with np.load(path) as data:
                found = InstanceEmbeddings([int(i) for i in data["ids"]], data["vectors"], int(data["regions"]))
            self._remember(key, found)
            return found
        return None

    def put(self, key: str, value: InstanceEmbeddings) -> None:
        self._remember(key, value)
        path = self._path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, ids=np.array(value.ids, np.int64), vectors=value.vectors, regions=value.regions)

    def texts(self, embedder: Embedder, texts: list[str]) -> np.ndarray:
        """Text embeddings, each text computed once per embedder."""
        missing = [t for t in dict.fromkeys(texts) if (embedder.name, t) not in self._texts]
        if missing:
            for text, vector in zip(missing, embedder.embed_texts(missing)):
                self._texts[(embedder.name, text)] = vector
        return np.stack([self._texts[(embedder.name, t)] for t in texts])

    def _remember(self, key: str, value: InstanceEmbeddings) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.npz"


DEFAULT_CACHE = EmbeddingCache()
"""The in-memory cache shared by the app and the Python functions of one process."""


# -- embedding --------------------------------------------------------------------------------

def square_region(image: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int], margin: float,
                  fill: int = 128) -> Region:
    """A square crop centred on ``bbox`` (x0, y0, x1, y1), ``margin`` x its larger side wider on each
    side; what lies beyond the image is ``fill`` grey and outside the mask."""
    x0, y0, x1, y1 = bbox
    side = max(8, int(math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * margin))))
    top, left = int(round((y0 + y1 - side) / 2)), int(round((x0 + x1 - side) / 2))
    crop = np.full((side, side, 3), fill, np.uint8)
    crop_mask = np.zeros((side, side), bool)
    height, width = mask.shape
    sy0, sx0, sy1, sx1 = max(top, 0), max(left, 0), min(top + side, height), min(left + side, width)
    crop[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
    crop_mask[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = mask[sy0:sy1, sx0:sx1]
    return Region(crop, crop_mask)


def _require_objects(scene: Scene) -> list[int]:
    if scene.instances is None or scene.instances.count == 0:
        raise IGGTError("the scene has no instances: reconstruct it with instance segmentation first")
    ids = scene.instances.object_ids
    if not ids:
        raise IGGTError("every instance of the scene is structure (floor, walls): there is no object to search")
    return ids


def instance_regions(scene: Scene, config: OpenVocabConfig = OpenVocabConfig()
                     ) -> tuple[list[Region], np.ndarray, np.ndarray]:
    """Every region to embed, the instance (index into the object ids) and the weight of each."""
    images = rgb_uint8(scene.images)
    regions, owners, weights = [], [], []
    for index, k in enumerate(_require_objects(scene)):
        info = scene.instances.info[k]
        for view in best_views(scene, k, config.max_views, config.border_penalty):
            presence = info.views[view]
            if presence.pixel_count < config.min_pixels:
                continue
            mask = scene.instances.labels[view] == k
            for margin in config.context_scales:
                regions.append(square_region(images[view], mask, presence.bbox, margin))
                owners.append(index)
                weights.append(presence.pixel_count)
    return regions, np.array(owners, np.int64), np.array(weights, np.float64)


def embed_instances(scene: Scene, embedder: Embedder, config: OpenVocabConfig = OpenVocabConfig(),
                    cache: EmbeddingCache | None = DEFAULT_CACHE, progress: Progress | None = None
                    ) -> InstanceEmbeddings:
    """The unit embedding of every object instance (cached per scene content; see the module docstring)."""
    ids = _require_objects(scene)
    key = EmbeddingCache.key(scene, embedder, config) if cache is not None else ""
    found = cache.get(key) if cache is not None else None
    if found is not None:
        return found
    if progress:
        progress(0.0, f"embedding {len(ids)} instances")
    regions, owners, weights = instance_regions(scene, config)
    vectors = np.asarray(embedder.embed_regions(regions), np.float64) if regions else np.zeros((0, 1))
    pooled = np.zeros((len(ids), vectors.shape[1]))
    np.add.at(pooled, owners, vectors * weights[:, None])
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    result = InstanceEmbeddings(ids, pooled.astype(np.float32), len(regions))
    if cache is not None:
        cache.put(key, result)
    return result


# -- text to instances ------------------------------------------------------------------------

def _softmax(logits: np.ndarray) -> np.ndarray:
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def clean_query(query: str) -> str:
    text = " ".join(str(query).split())
    if not text:
        raise IGGTError("the query is empty: type what to find, e.g. \"chair\" or \"red mug\"")
    if not re.search(r"[A-Za-z]", text):
        raise IGGTError(f"the query {text!r} has no English word: the embedding models read English names")
    return text


def _structure_words(text: str) -> set[str]:
    words = {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower())}
    return words & set(STRUCTURE_NAMES)


def find(scene: Scene, query: str, embedder: Embedder, config: OpenVocabConfig = OpenVocabConfig(),
         cache: EmbeddingCache | None = DEFAULT_CACHE) -> FindResult:
    """Object instances ranked for ``query`` (see the module docstring); structure is found by its label."""
    text = clean_query(query)
    embeddings = embed_instances(scene, embedder, config, cache)
    texts = [config.prompt.format(t) for t in (text, *config.negatives)]
    vectors = (cache or EmbeddingCache()).texts(embedder, texts)
    generic = float(vectors[0] @ vectors[1])
    if generic > 1 - 1e-6:  # the same vector as "object": no word the model knows
        raise IGGTError(f"{embedder.name} reads nothing in {text!r} beyond \"object\": name the thing in English, "
                        "e.g. \"chair\" or \"yellow cube\"")
    scores = _softmax(embedder.logit_scale * embeddings.vectors @ vectors.T)[:, 0]
    ranked = sorted(zip(embeddings.ids, (float(s) for s in scores)), key=lambda item: (-item[1], item[0]))
    structure = _structure_words(text)
    if structure:
        named = [i.id for i in scene.instances.info
                 if i.structure and (i.label or structure_label(scene, i.id)) in structure]
        ranked = [(k, 1.0) for k in named] + ranked
    labels = {i.id: i.label for i in scene.instances.info}
    return FindResult(text, ranked, config.threshold, labels)


def shortlist(result: FindResult, config: PrefilterConfig = PrefilterConfig()) -> list[int] | None:
    """The ranked instances worth checking one by one (best first), or None when the scores are flat."""
    scores = [score for _, score in result.ranked]
    if not scores or scores[0] - scores[-1] < config.min_spread:
        return None
    floor = scores[0] - config.margin
    return [k for rank, (k, score) in enumerate(result.ranked) if rank < config.keep_top or score >= floor]


# -- vocabularies and labels ------------------------------------------------------------------

def load_vocabulary(source: str | list[str]) -> list[str]:
    """Class names from a list, a built-in name (scannet20, scannet200), a file (one name per line, or a
    JSON list of strings), or a comma-separated string."""
    if isinstance(source, (list, tuple)):
        names = list(source)
    elif source in BUILTIN_VOCABULARIES:
        names = resources.files("grounding").joinpath(f"vocabularies/{source}.txt").read_text().splitlines()
    elif Path(source).is_file():
        path = Path(source)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            try:
                names = json.loads(text)
            except json.JSONDecodeError as err:
                raise IGGTError(f"{path.name} is not valid JSON ({err.msg})") from None
            if not isinstance(names, list):
                raise IGGTError(f"{path.name} must hold a JSON list of class names, not a {type(names).__name__}")
        else:
            names = text.splitlines()
    else:
        names = str(source).split(",")
    if not all(isinstance(n, str) for n in names):
        raise IGGTError("a vocabulary is a list of class names (strings)")
    names = list(dict.fromkeys(" ".join(n.split()) for n in names if n.strip()))
    if not names:
        raise IGGTError(f"the vocabulary {source!r} has no class names: give a list, a file or one of "
                        f"{', '.join(BUILTIN_VOCABULARIES)}")
    return names


def structure_label(scene: Scene, instance_id: int) -> str:
    """floor, wall or ceiling: from the instance's plane and the cameras' up direction."""
    points = scene.points_from_depth[scene.instances.labels == instance_id]
    points = points[np.isfinite(points).all(axis=1)].astype(np.float64)
    if len(points) < 3:
        return "wall"
    normal, offset = fit_plane(points[:: max(1, len(points) // 20000)])
    cam_to_world = invert_extrinsics(scene.extrinsics.astype(np.float64))
    up = -cam_to_world[:, :, 1].mean(axis=0)  # OpenCV cameras look with y down
    up /= max(np.linalg.norm(up), 1e-12)
    if abs(float(normal @ up)) < HORIZONTAL_COSINE:
        return "wall"
    camera_side = float(np.mean(cam_to_world[:, :, 3] @ normal) - offset)
    return "floor" if camera_side * float(normal @ up) > 0 else "ceiling"


def label_instances(scene: Scene, vocabulary: str | list[str], embedder: Embedder,
                    config: OpenVocabConfig = OpenVocabConfig(), cache: EmbeddingCache | None = DEFAULT_CACHE,
                    progress: Progress | None = None) -> Scene:
    """A copy of ``scene`` whose instances carry the closest vocabulary name and its probability."""
    names = [n for n in load_vocabulary(vocabulary) if n.lower() not in STRUCTURE_NAMES]
    if not names:
        raise IGGTError("the vocabulary names only structure (floor, wall, ceiling): add object names")
    _require_objects(scene)
    embeddings = embed_instances(scene, embedder, config, cache, progress)
    texts = (cache or EmbeddingCache()).texts(embedder, [config.prompt.format(n) for n in names])
    probabilities = _softmax(embedder.logit_scale * embeddings.vectors @ texts.T)
    labels = {k: (names[int(p.argmax())], float(p.max())) for k, p in zip(embeddings.ids, probabilities)}
    labels.update({i.id: (structure_label(scene, i.id), 1.0) for i in scene.instances.info if i.structure})
    return scene.with_instances(scene.instances.with_labels(labels))
