"""Multi-view consistent instances: from per-pixel features of a `Scene` to labelled instances.

Two entry points:

* `segment_instances` runs the IGGT clustering (3D k-NN smoothing of the features, then
  HDBSCAN over all views together so labels are shared across views), made fast by
  clustering a subsample and assigning every other pixel to its nearest clustered sample;
* `describe_instances` turns any integer label map (ours, or ground truth) into `Instances`:
  ids ordered by size, display colours, per-view counts and boxes, 3D centroid and box.

What is BACKGROUND: only pixels without usable geometry or with low depth confidence (see
`ClusteringConfig.confidence_percentile`). Floors and walls get instances like any object,
as in the official demo; nothing is merged into one giant "background instance".

Why it is fast: HDBSCAN of every pixel (2 M for 10 views) takes tens of minutes. We cluster a
uniform sample of ~10k pixels with the sizes scaled to the sample (and, opt-in, to the view
size: see `ClusteringConfig`), and label the rest by nearest clustered sample in feature
space, coarse to fine in the image; the 3D smoothing runs as a gated image-space filter.
`OFFICIAL_METHOD` is the released demo's exact (slow) computation, `OFFICIAL_METHOD_52B129A`
the one of its previous version; `benchmarks/clustering.py` measures the agreement of ours with
them and the times.

Memory at many views: the one array as large as the features is the smoothed float32 copy
that is clustered; normalising, image smoothing and assignment run a few views at a time
(`iggt.scene.CHUNK_VIEWS`), and only the sampled rows are copied for HDBSCAN, so a compact (float16)
scene of 1000 views needs about one float32 feature array more than the scene itself.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from iggt.progress import Progress
from iggt.scene import BACKGROUND, InstanceInfo, Instances, Scene, ViewPresence, view_chunks

GOLDEN_RATIO_CONJUGATE = 0.618033988749895
BOX_PERCENTILES = (2.0, 98.0)
"""The 3D box of an instance spans these percentiles of its points, so stray points do not inflate it."""


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusteringConfig:
    """How `segment_instances` turns features into instances.

    The HDBSCAN sizes (``min_cluster_size``, ``min_samples``) are in pixels of a clustering of
    *every* confident pixel, as in the official demo (518 x 392 for 4:3 photos). `sample_sizes`
    scales them to what is clustered: when only ``max_cluster_points`` pixels are, by the
    sampling ratio (sampled / confident pixels), so a preset keeps its meaning; and, when
    ``reference_view_pixels`` is set, also by the view size, as an object covers proportionally
    fewer pixels of a smaller view. Scaled sizes never go below ``min_scaled_cluster_size`` /
    ``min_scaled_samples``: a density estimate from one or two samples is too noisy to be
    useful, so at very low ratios the effective sizes are somewhat larger than the preset's.
    The defaults are the "large" preset, the one the released ``demo.py`` runs (`RELEASE_PRESET`).
    """

    min_cluster_size: int = 500
    min_samples: int = 100
    cluster_selection_epsilon: float = 0.06
    knn_k: int = 20
    """Neighbours averaged by the 3D smoothing (the pixel itself excluded)."""
    smoothing: Literal["image", "knn3d", "none"] = "image"
    """``"knn3d"``: exact mean of the ``knn_k`` nearest 3D points over all views (a k-d tree
    query per pixel), what the release's demo clusters since commit bec6604. ``"image"``: mean
    over the smallest square image window with at least ``knn_k`` neighbours, keeping only
    neighbours on the same surface (see ``smoothing_gate``); several times faster, see
    `smooth_features_image`. ``"none"``: the normalised features as they are, what the demo
    clustered before (demo.py blob 52b129a). Smoothed features are not re-normalised (as released)."""
    smoothing_gate: float = 3.0
    """Image smoothing: a neighbour counts when its 3D distance is at most this many times
    its pixel offset times the pixel footprint (depth / focal length); 3 accepts surfaces
    tilted up to ~70 degrees from the image plane and rejects depth discontinuities."""
    confidence_percentile: float = 10.0
    """Pixels whose depth confidence is below this percentile (over all views) are BACKGROUND."""
    min_confidence: float = 0.0
    """Pixels whose depth confidence is below this absolute value are BACKGROUND as well."""
    max_cluster_points: int | None = 10_000
    """HDBSCAN runs on this many confident pixels drawn uniformly at random (so densities keep
    their ratios); every other pixel takes the label of its nearest clustered sample in
    feature space. ``None`` clusters every confident pixel (with ``smoothing="knn3d"``,
    ``max_references_per_cluster=None`` and ``assignment_stride=1``: the official method, slow)."""
    reference_view_pixels: int | None = None
    """Opt-in: the pixels per view (height x width) the sizes were set for, usually
    `OFFICIAL_VIEW_PIXELS` (the released demo's 518 x 392 input). Smaller views then multiply the
    sizes by (view pixels / this): with the sizes as given, an object of a 112 x 112 view (the
    shipped small model's) needs ~16x its share of the image to count, and small objects vanish.
    Scaling only shrinks: larger views keep the sizes as given, which is what the released demo
    computes for them. ``None`` (the default, as released) = sizes used as given. Not the default
    because the shipped model's features fall apart into many small instances at the floors below
    (its model card has the figures: strict T-mIoU up, about 50 instances per scene for 8 objects)."""
    split_gap: float | None = None
    """Opt-in: split every instance into its parts that are connected in 3D, parts being apart
    when a gap of about this share of the scene size (the diagonal of the box holding 96 % of
    the labelled points) separates them; see `split_disconnected`. Features of two objects can
    be close while the objects are apart in 3D: the clustering alone merges them. ``None``: off."""
    min_scaled_cluster_size: int = 10
    min_scaled_samples: int = 5
    max_references_per_cluster: int | None = 200
    """Clustered samples kept per cluster as nearest-neighbour references (None = all)."""
    assignment_stride: int = 2
    """Coarse-to-fine assignment step in pixels (1 = search every pixel); see `assign_labels`."""
    seed: int = 0

    PRESETS: ClassVar[dict[str, dict]] = {
        "small": dict(cluster_selection_epsilon=0.005, min_samples=50, min_cluster_size=500),
        "medium": dict(cluster_selection_epsilon=0.01, min_samples=100, min_cluster_size=500),
        "large": dict(cluster_selection_epsilon=0.06, min_samples=100, min_cluster_size=500),
    }
    """The released demo's presets (``knn_k`` = 20 in all). Its demo.py runs "large" since commit
    bec6604 (21 Nov 2025) and ran "medium" before (blob 52b129a); the others are commented out."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be at least {least}, got {getattr(self, name)}"
            for name, least in (("min_cluster_size", 2), ("min_samples", 1), ("knn_k", 1), ("assignment_stride", 1),
                                ("min_scaled_cluster_size", 2), ("min_scaled_samples", 1))
            if getattr(self, name) < least]
        if not 0 <= self.confidence_percentile <= 100:
            problems.append(f"confidence_percentile must be in [0, 100], got {self.confidence_percentile}")
        if self.smoothing not in ("image", "knn3d", "none"):
            problems.append(f"smoothing must be 'image', 'knn3d' or 'none', got {self.smoothing!r}")
        if self.split_gap is not None and not 0 < self.split_gap < 1:
            problems.append(f"split_gap must be in (0, 1) or None, got {self.split_gap}")
        if self.reference_view_pixels is not None and self.reference_view_pixels < 1:
            problems.append(f"reference_view_pixels must be at least 1 or None, got {self.reference_view_pixels}")
        for name in ("max_cluster_points", "max_references_per_cluster"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                problems.append(f"{name} must be at least 2 or None, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid clustering settings: " + "; ".join(problems))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ClusteringConfig":
        """A preset by name ("small", "medium", "large"), with optional field overrides."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown clustering preset {name!r}; choose one of {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def sample_sizes(self, sampled: int, total: int, view_pixels: int) -> tuple[int, int]:
        """(min_cluster_size, min_samples) for HDBSCAN on ``sampled`` of ``total`` pixels of
        views of ``view_pixels`` pixels each (height x width)."""
        scale = min(1.0, sampled / total)
        if self.reference_view_pixels is not None:
            scale *= min(1.0, view_pixels / self.reference_view_pixels)
        if scale >= 1.0:
            cluster_size, samples = self.min_cluster_size, self.min_samples
        else:
            cluster_size = max(round(self.min_cluster_size * scale), self.min_scaled_cluster_size)
            samples = max(round(self.min_samples * scale), self.min_scaled_samples)
        return max(2, min(cluster_size, sampled)), max(1, min(samples, sampled - 1))


OFFICIAL_VIEW_PIXELS = 518 * 392
"""Pixels of one view of the released demo's input (518 x 392 for a 4:3 photo): 203,056."""

RELEASE_PRESET = "large"
"""The preset the release's demo.py runs (commit bec6604); the app and ``reconstruct`` use it for
every model but the shipped small one."""

SHIPPED_MODEL_PRESET = "small"
"""The preset the app and ``reconstruct`` use for the shipped small model: the best on the
benchmark (docs/clustering.md has the figures)."""


def default_preset(checkpoint: str | Path) -> str:
    """The clustering preset the app, ``reconstruct`` and ``evaluate`` use for a model by default:
    `SHIPPED_MODEL_PRESET` for the shipped small model, `RELEASE_PRESET` for any other."""
    from iggt.reconstruct import DEFAULT_CHECKPOINT  # here: it imports torch, which --help should not pay

    shipped = Path(checkpoint).expanduser().resolve() == DEFAULT_CHECKPOINT.resolve()
    return SHIPPED_MODEL_PRESET if shipped else RELEASE_PRESET


OFFICIAL_METHOD = ClusteringConfig.from_preset(
    "large", smoothing="knn3d", confidence_percentile=0.0, max_cluster_points=None,
    max_references_per_cluster=None, assignment_stride=1)
"""`segment_instances` as the release's demo.py at its HEAD, commit bec6604 (21 Nov 2025),
computes it (slow): the L2-normalised features of every pixel averaged over their 20 nearest
neighbours among the depth-unprojected points of all views together (the pixel itself excluded,
the mean not re-normalised), HDBSCAN of every pixel of every view with the "large" sizes as given
at any resolution, nothing dropped as background (only pixels without any usable geometry), noise
re-assigned to its nearest clustered pixel in the smoothed feature space."""

OFFICIAL_METHOD_52B129A = replace(OFFICIAL_METHOD, smoothing="none", **ClusteringConfig.PRESETS["medium"])
"""The release's previous demo.py (blob 52b129a, in commits 9ac0976 to d02f9ff, 19-21 Nov 2025; the
first demo, of commit 50c29c2, clusters the same way): as `OFFICIAL_METHOD`, but the normalised
features unsmoothed and the "medium" sizes."""


# -- the instance step -----------------------------------------------------------------------
def segment_instances(scene: Scene, config: ClusteringConfig | None = None,
                      progress: Progress | None = None) -> Instances:
    """Multi-view consistent instances of a scene from its per-pixel features.

    Steps (section 9 of the reference, made fast):

    1. BACKGROUND: pixels with a non-finite point or feature, depth <= 0, or a depth confidence
       below ``confidence_percentile`` / ``min_confidence``. They stay BACKGROUND throughout;
       floors and walls are not treated specially (they become instances like any other).
    2. Features are L2-normalised, then smoothed over the 3D points (`scene.points_from_depth`)
       of the confident pixels of all views (BACKGROUND pixels are nobody's neighbours, unlike
       the official demo, whose neighbours include unreliable low-confidence points).
    3. HDBSCAN on a uniform subsample of the smoothed features of all views together, so one
       object gets one label in every view (`cluster_sample`).
    4. Every other confident pixel takes the label of its nearest non-noise clustered sample in
       feature space (`assign_labels`); this also re-assigns noise, as the official demo does.
       If HDBSCAN finds no cluster at all, every confident pixel forms one instance (as the
       official demo).
    5. Opt-in (``split_gap``): instances whose parts are apart in 3D are split (`split_disconnected`).
    6. `describe_instances`: ids by decreasing size, colours, statistics (3D from
       `points_from_depth`).
    """
    config = config or ClusteringConfig()
    report = progress or (lambda fraction, message: None)
    _check_scene(scene)
    report(0.0, "Selecting confident pixels")
    confident = confident_pixels(scene, config)
    report(0.1, f"Smoothing features over 3D neighbours ({config.smoothing})")
    smoothed = smooth_features(scene, confident, config)

    pixels = np.flatnonzero(confident)
    report(0.4, f"Clustering a sample of {len(pixels)} confident pixels")
    flat_features = smoothed.reshape(-1, smoothed.shape[-1])
    sample, sample_labels = cluster_sample(flat_features, pixels, config, view_pixels=int(np.prod(scene.image_size)))
    labels = np.full(confident.shape, BACKGROUND, dtype=np.int32)
    clustered = sample_labels >= 0
    if clustered.any():
        report(0.6, "Assigning every pixel to its nearest cluster")
        labels.reshape(-1)[pixels[sample[clustered]]] = sample_labels[clustered]
        assign_labels(labels, smoothed, confident, *thin_references(
            flat_features[pixels[sample[clustered]]], sample_labels[clustered], config),
            stride=config.assignment_stride)
    else:
        labels[confident] = 0
    confident_count = len(pixels)
    del smoothed, flat_features, pixels  # the largest arrays here: free them before measuring
    if config.split_gap is not None:
        report(0.8, "Splitting instances into their parts connected in 3D")
        view_pixels = int(np.prod(scene.image_size))
        labels = split_disconnected(labels, scene.points_from_depth, config.split_gap,
                                    min_part=config.sample_sizes(confident_count, confident_count, view_pixels)[0])
    report(0.9, "Measuring instances")
    instances = describe_instances(labels, scene.points_from_depth, scene.images)
    report(1.0, f"{instances.count} instances")
    return instances


def _check_scene(scene: Scene) -> None:
    expected = scene.images.shape[:3]
    for name in ("depth", "depth_conf", "points_from_depth", "features"):
        shape = getattr(scene, name).shape
        if shape[:3] != expected:
            raise ValueError(f"scene.{name} has shape {shape}, expected [S, H, W, ...] = {expected}")


def confident_pixels(scene: Scene, config: ClusteringConfig) -> np.ndarray:
    """``[S, H, W]`` bool: pixels with usable geometry and features and enough depth confidence."""
    usable = np.empty(scene.depth.shape, bool)
    for chunk in view_chunks(scene.num_views):
        usable[chunk] = (np.isfinite(scene.points_from_depth[chunk]).all(axis=-1)
                         & np.isfinite(scene.features[chunk]).all(axis=-1)
                         & np.isfinite(scene.depth_conf[chunk]) & (scene.depth[chunk] > 0))
    if not usable.any():
        return usable
    threshold = np.percentile(scene.depth_conf[usable], config.confidence_percentile)
    return usable & (scene.depth_conf >= max(threshold, config.min_confidence))


def normalize_features(features: np.ndarray) -> np.ndarray:
    """L2-normalise over the last axis (float32); all-zero vectors stay zero."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def normalized_scene_features(features: np.ndarray) -> np.ndarray:
    """`normalize_features` of ``[S, H, W, D]`` features of any float dtype, a chunk of views at a time
    (the float32 result is the only full-size array made)."""
    normalized = np.empty(features.shape, np.float32)
    for chunk in view_chunks(len(features)):
        normalized[chunk] = normalize_features(features[chunk])
    return normalized


# -- 3D smoothing ----------------------------------------------------------------------------
def smooth_features(scene: Scene, confident: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    """The features that are clustered, ``[S, H, W, D]``: L2-normalised, then smoothed over the
    3D points (`Scene.points_from_depth`) of the ``confident`` pixels as ``config.smoothing`` says.
    The image smoothing stays within each view, so it runs a chunk of views at a time."""
    if config.smoothing == "image":
        focal = scene.intrinsics[:, [0, 1], [0, 1]].mean(axis=1)
        smoothed = np.empty(scene.features.shape, np.float32)
        for chunk in view_chunks(scene.num_views):
            smoothed[chunk] = smooth_features_image(
                normalize_features(scene.features[chunk]), scene.points_from_depth[chunk], scene.depth[chunk],
                focal[chunk], confident[chunk], config.knn_k, config.smoothing_gate)
        return smoothed
    features = normalized_scene_features(scene.features)
    if config.smoothing == "knn3d":  # every view's points together: one k-d tree, queried in chunks
        features[confident] = smooth_features_knn3d(features[confident], scene.points_from_depth[confident],
                                                    config.knn_k)
    return features


def smooth_features_knn3d(features: np.ndarray, points: np.ndarray, k: int,
                          chunk: int = 1 << 17) -> np.ndarray:
    """Each row becomes the mean feature of its ``k`` nearest 3D points, itself excluded (official).

    ``features`` ``[N, D]``, ``points`` ``[N, 3]``: every pixel of every view together. As the
    release's ``knn_graph(loop=False)``: the ``k + 1`` nearest points are found and the row itself
    is dropped from them; a row whose point has duplicates may not be among its own ``k + 1``
    nearest, and then all ``k + 1`` are averaged. Queried ``chunk`` rows at a time to bound the
    memory of the neighbour lists.
    """
    nearest = min(k + 1, len(points))
    if nearest < 2:
        return features.copy()
    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)
    smoothed = np.empty_like(features)
    for start in range(0, len(points), chunk):
        _, neighbours = tree.query(points[start:start + chunk], k=nearest, workers=-1)
        others = neighbours != np.arange(start, start + len(neighbours))[:, None]
        sums = np.einsum("nk,nkd->nd", others.astype(features.dtype), features[neighbours])
        smoothed[start:start + chunk] = sums / others.sum(axis=1, keepdims=True).astype(features.dtype)
    return smoothed


def smooth_features_image(features: np.ndarray, points: np.ndarray, depth: np.ndarray, focal: np.ndarray,
                          valid: np.ndarray, k: int, gate: float) -> np.ndarray:
    """Image-space version of `smooth_features_knn3d`: ``[S, H, W, D]`` -> ``[S, H, W, D]``.

    The k nearest 3D neighbours of a pixel lie on its own surface within a couple of pixels,
    in its view and in the other views that see that surface. Here each pixel takes the mean
    feature of the valid pixels of its own view in the smallest square window holding at
    least ``k`` neighbours (5x5 for k = 20), itself excluded, that it reaches without
    crossing a depth discontinuity. Two pixels are linked when their 3D distance is at most
    ``gate`` x pixel offset x pixel footprint (depth / focal, averaged over the pair). The
    window is summed separably, along rows and then along columns, so a pixel of the window
    counts when it is linked to the window's column through its row, and that column pixel
    to the centre: 4 instead of 12 pair comparisons per pixel for 5x5. Other views are not
    mixed in, but they see the same features, and clustering all views together makes the
    labels shared. A pixel with no linked neighbour keeps its own feature.
    """
    radius = 1
    while (2 * radius + 1) ** 2 - 1 < k:
        radius += 1
    weights = valid.astype(np.float32)
    own = features * weights[..., None]
    footprint = (gate * 0.5) * depth.astype(np.float32) / np.asarray(focal, np.float32)[:, None, None]
    link_args = (points, footprint, weights, radius)
    row_sums, row_counts = _linked_line_sums(own, weights, *link_args, axis=2)
    sums, counts = _linked_line_sums(row_sums, row_counts, *link_args, axis=1)
    sums -= own
    counts -= weights
    has_neighbours = counts > 0.5
    return np.where(has_neighbours[..., None], sums / np.maximum(counts, 1)[..., None], features)


def _linked_line_sums(values: np.ndarray, counts: np.ndarray, points: np.ndarray, footprint: np.ndarray,
                      weights: np.ndarray, radius: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` ``[S, H, W, D]`` (and ``counts``) over each pixel and the linked pixels
    within ``radius`` along one image axis (1: columns, 2: rows); see `smooth_features_image`."""
    sums, totals = values.copy(), counts.copy()
    length = values.shape[axis]
    for offset in range(1, radius + 1):
        p = [slice(None)] * 3
        q = [slice(None)] * 3
        p[axis], q[axis] = slice(0, length - offset), slice(offset, length)
        p, q = tuple(p), tuple(q)
        difference = points[p] - points[q]
        limit = (footprint[p] + footprint[q]) * np.float32(offset)
        link = (np.einsum("...i,...i->...", difference, difference) <= limit * limit) * weights[p] * weights[q]
        sums[p] += values[q] * link[..., None]
        sums[q] += values[p] * link[..., None]
        totals[p] += counts[q] * link
        totals[q] += counts[p] * link
    return sums, totals


# -- clustering ------------------------------------------------------------------------------
def cluster_sample(features: np.ndarray, rows: np.ndarray, config: ClusteringConfig,
                   view_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN of a uniform random sample of the feature rows ``features[rows]`` (``features``
    ``[P, D]``: every pixel of all views together; only the sampled rows are copied).

    Returns the sampled positions in ``rows`` (sorted) and their labels (-1 = noise). At most
    ``config.max_cluster_points`` rows are drawn (with ``config.seed``), and the HDBSCAN sizes
    are scaled to the sample and to the views' size (``view_pixels``, height x width) by
    `ClusteringConfig.sample_sizes`.
    """
    total = len(rows)
    if config.max_cluster_points is None or total <= config.max_cluster_points:
        sample = np.arange(total)
    else:
        sample = np.sort(np.random.default_rng(config.seed).choice(total, config.max_cluster_points, replace=False))
    if len(sample) < 2:
        return sample, np.full(len(sample), -1)
    import hdbscan  # here: importing it takes seconds, which the command line's --help should not pay

    cluster_size, samples = config.sample_sizes(len(sample), total, view_pixels)
    clusterer = hdbscan.HDBSCAN(min_cluster_size=cluster_size, min_samples=samples,
                                cluster_selection_epsilon=config.cluster_selection_epsilon,
                                allow_single_cluster=False, core_dist_n_jobs=1)
    return sample, clusterer.fit_predict(features[rows[sample]].astype(np.float64))


def thin_references(features: np.ndarray, labels: np.ndarray,
                    config: ClusteringConfig) -> tuple[np.ndarray, np.ndarray]:
    """At most ``config.max_references_per_cluster`` clustered samples per cluster (evenly spaced).

    Nearest-neighbour assignment costs about linear in the number of references in 8-d, and
    a large cluster is as well described by a few hundred of its samples; small clusters keep
    all of theirs.
    """
    cap = config.max_references_per_cluster
    if cap is None:
        return features, labels
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.append(members[np.linspace(0, len(members) - 1, min(cap, len(members))).astype(int)])
    keep = np.sort(np.concatenate(keep))
    return features[keep], labels[keep]


def assign_labels(labels: np.ndarray, features: np.ndarray, confident: np.ndarray, references: np.ndarray,
                  reference_labels: np.ndarray, stride: int = 1) -> None:
    """Give every confident pixel still labelled BACKGROUND the label of its nearest reference.

    ``labels`` ``[S, H, W]`` is filled in place; ``features`` ``[S, H, W, D]``. With ``stride``
    > 1 the nearest-neighbour search runs coarse to fine: first on every ``stride``-th pixel of
    every ``stride``-th row; a pixel between four such grid pixels that are confident and agree
    takes their label without a search (labels are piecewise constant in images), all others
    (boundaries, holes) are searched. ``stride`` = 1 searches every pixel (exact). Every step
    stays within a view, so views are assigned a chunk at a time (bounded copies of features).
    """
    tree = cKDTree(references, leafsize=64)  # large leaves: fastest for many queries in 8-d
    for chunk in view_chunks(len(labels)):
        _assign_chunk(labels[chunk], features[chunk], confident[chunk], tree, reference_labels, stride)


def _assign_chunk(labels: np.ndarray, features: np.ndarray, confident: np.ndarray, tree: cKDTree,
                  reference_labels: np.ndarray, stride: int) -> None:
    """`assign_labels` for a few views (``labels`` is a view of the whole, filled in place)."""
    def search(mask: np.ndarray) -> None:
        if mask.any():
            labels[mask] = reference_labels[tree.query(features[mask], k=1, workers=-1)[1]]

    pending = confident & (labels == BACKGROUND)
    if stride == 1:
        search(pending)
        return
    on_grid = np.zeros_like(pending)
    on_grid[:, ::stride, ::stride] = True
    search(pending & on_grid)
    grid = np.where(confident, labels, BACKGROUND - 1)[:, ::stride, ::stride]
    height, width = labels.shape[1:]
    rows = np.arange(height) // stride
    cols = np.arange(width) // stride
    corners = [grid[:, np.minimum(rows + dy, grid.shape[1] - 1)][:, :, np.minimum(cols + dx, grid.shape[2] - 1)]
               for dy in (0, 1) for dx in (0, 1)]
    agree = (corners[0] >= 0) & (corners[0] == corners[1]) & (corners[0] == corners[2]) & (corners[0] == corners[3])
    pending &= ~on_grid
    fill = pending & agree
    labels[fill] = corners[0][fill]
    search(pending & ~agree)


# -- 3D connectivity -------------------------------------------------------------------------
def split_disconnected(labels: np.ndarray, points: np.ndarray, gap: float, min_part: int) -> np.ndarray:
    """``[S, H, W]`` labels where every instance's parts that are apart in 3D have labels of their own.

    The distance scale comes from the scene: ``gap`` x the diagonal of the box spanning the 2nd to
    98th percentile of the labelled points. Each instance's points are binned into cubes of that
    size; cubes that touch (faces, edges or corners) are one part, so parts closer than one cube
    stay together and parts more than two cubes apart are always split. The largest part keeps
    the label, other parts of at least ``min_part`` pixels get new labels; smaller parts (stray
    points, mostly) keep the label too. All views are binned together, so a part is the same in
    every view.
    """
    labelled = (labels >= 0) & np.isfinite(points).all(axis=-1)
    if not labelled.any():
        return labels
    ids, cloud = labels[labelled], points[labelled].astype(np.float64)
    low, high = np.percentile(cloud, BOX_PERCENTILES, axis=0)
    cube = gap * float(np.linalg.norm(high - low))
    if not cube > 0:
        return labels
    cells = np.floor((cloud - low) / cube).astype(np.int64)
    split = ids.copy()
    next_label = int(ids.max()) + 1
    for label in np.unique(ids):
        members = np.flatnonzero(ids == label)
        occupied, cell_of_member = np.unique(cells[members], axis=0, return_inverse=True)
        if len(occupied) < 2:
            continue
        pairs = cKDTree(occupied).query_pairs(r=1.75, output_type="ndarray")  # sqrt(3): the 26 neighbours
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(occupied),) * 2)
        count, part_of_cell = connected_components(graph, directed=False)
        if count < 2:
            continue
        part = part_of_cell[cell_of_member.reshape(-1)]
        sizes = np.bincount(part, minlength=count)
        for kept in np.flatnonzero(sizes >= min_part):
            if kept != sizes.argmax():
                split[members[part == kept]] = next_label
                next_label += 1
    result = labels.copy()
    result[labelled] = split
    return result


# -- display colours -------------------------------------------------------------------------
def instance_colors(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 colours, one per instance id, the same for every call.

    Hues step by the golden ratio, so consecutive ids (the largest instances) are far apart
    on the colour wheel; saturation and value alternate a little so that ids whose hues
    come close again after many steps remain distinguishable.
    """
    colors = np.empty((count, 3), dtype=np.uint8)
    for i in range(count):
        hue = (0.05 + i * GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = (0.85, 0.6, 0.95)[i % 3]
        value = (0.95, 0.8, 0.65)[(i // 3) % 3]
        colors[i] = np.round(np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255)
    return colors


# -- statistics of labelled pixels -----------------------------------------------------------
def relabel_by_size(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary integer labels to ``0..K-1`` by decreasing pixel count; negatives -> BACKGROUND.

    Ties in pixel count keep the order of the original label values (smaller value first),
    so the result does not depend on how the input happened to number its instances
    beyond that.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"instance labels must be integers, got dtype {labels.dtype}")
    foreground = labels >= 0
    values, inverse, counts = _unique_with_counts(labels[foreground].astype(np.int64))
    order = np.lexsort((values, -counts))  # by count descending, then label value ascending
    new_id_of_rank = np.empty(len(values), dtype=np.int32)
    new_id_of_rank[order] = np.arange(len(values), dtype=np.int32)
    relabelled = np.full(labels.shape, BACKGROUND, dtype=np.int32)
    relabelled[foreground] = new_id_of_rank[inverse]
    return relabelled, len(values)


def _unique_with_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`np.unique` (values, inverse, counts) of non-negative ints; by counting when their range is small."""
    if len(values) == 0 or values.max() > 4 * len(values) + 1024:
        return np.unique(values, return_inverse=True, return_counts=True)
    counts = np.bincount(values)
    present = np.flatnonzero(counts)
    rank = np.zeros(len(counts), dtype=np.int64)
    rank[present] = np.arange(len(present))
    return present, rank[values], counts[present]


def _view_boxes(view_labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts ``[K]`` and boxes ``[K, 4]`` (x0, y0, x1, y1 exclusive) of ids 0..K-1 in one view."""
    height, width = view_labels.shape
    ys, xs = np.nonzero(view_labels >= 0)
    ids = view_labels[ys, xs].astype(np.int64)
    pixel_counts = np.bincount(ids, minlength=count)
    rows = np.bincount(ids * height + ys, minlength=count * height).reshape(count, height) > 0
    cols = np.bincount(ids * width + xs, minlength=count * width).reshape(count, width) > 0
    boxes = np.stack([cols.argmax(1), rows.argmax(1),
                      width - cols[:, ::-1].argmax(1), height - rows[:, ::-1].argmax(1)], axis=1)
    return pixel_counts, boxes


def _point_statistics(labels: np.ndarray, world_points: np.ndarray,
                      count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per id 0..K-1 of ``labels`` ``[S, H, W]``: centroid (mean of its finite ``world_points``) and
    the `BOX_PERCENTILES` box; NaN where an id has none. Only the labelled finite points are copied,
    grouped by id (in their order, so the sums are those of the points in pixel order)."""
    usable = np.empty(labels.shape, bool)
    for chunk in view_chunks(len(labels)):
        usable[chunk] = (labels[chunk] >= 0) & np.isfinite(world_points[chunk]).all(axis=-1)
    ids = labels[usable]
    sizes = np.bincount(ids, minlength=count)
    # A stable sort of small integers is a linear-time radix sort in numpy.
    order = np.argsort(ids.astype(np.int16) if count < 2 ** 15 else ids, kind="stable")
    ids, grouped = ids[order], world_points[usable][order]
    del order
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.stack([np.bincount(ids, grouped[:, axis], minlength=count) for axis in range(3)], axis=1)
        centroids = sums / sizes[:, None]
    box_min = np.full((count, 3), np.nan)
    box_max = np.full((count, 3), np.nan)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for k in np.flatnonzero(sizes):
        box_min[k], box_max[k] = np.percentile(grouped[starts[k]:starts[k + 1]], BOX_PERCENTILES, axis=0)
    return centroids, box_min, box_max


def _color_sums(ids: np.ndarray, images: np.ndarray, count: int) -> np.ndarray:
    """``[K, 3]`` sums of the RGB (in [0, 1]; uint8 images divided by 255) of each id's pixels, by view chunks."""
    scale = 255.0 if np.issubdtype(images.dtype, np.integer) else 1.0
    sums = np.zeros((count, 3))
    for chunk in view_chunks(len(ids)):
        foreground = ids[chunk] >= 0
        chunk_ids, colors = ids[chunk][foreground], np.asarray(images[chunk][foreground], np.float64) / scale
        sums += np.stack([np.bincount(chunk_ids, colors[:, c], minlength=count) for c in range(3)], axis=1)
    return sums


def describe_instances(labels: np.ndarray, world_points: np.ndarray, images: np.ndarray,
                       colors: np.ndarray | None = None) -> Instances:
    """Turn an integer label map of S views into `Instances` with their statistics.

    ``labels`` ``[S, H, W]``: any integers, the same value meaning the same instance in
    every view; negative values are background. They are renumbered ``0..K-1`` by decreasing
    pixel count (ties: smaller original value first). ``world_points`` ``[S, H, W, 3]``
    (non-finite points are ignored) and ``images`` ``[S, H, W, 3]`` (float in [0, 1], or
    uint8) give each instance its 3D centroid (mean of its points), its axis-aligned 3D box
    (2nd to 98th percentile of its points per axis, robust to stray points; NaN when it has
    no finite point) and its mean colour. ``colors`` ``[K, 3]`` uint8 optionally replaces the
    default palette (`instance_colors`), indexed by the new ids.
    """
    labels = np.asarray(labels)
    world_points = np.asarray(world_points)
    images = np.asarray(images)
    if labels.ndim != 3:
        raise ValueError(f"instance labels must be [S, H, W], got shape {labels.shape}")
    if world_points.shape != (*labels.shape, 3):
        raise ValueError(f"world points must be [S, H, W, 3] = {(*labels.shape, 3)}, got {world_points.shape}")
    if images.shape != (*labels.shape, 3):
        raise ValueError(f"images must be [S, H, W, 3] = {(*labels.shape, 3)}, got {images.shape}")
    ids, count = relabel_by_size(labels)
    if colors is None:
        colors = instance_colors(count)
    colors = np.asarray(colors)
    if colors.shape != (count, 3):
        raise ValueError(f"colors must be [K, 3] with K = {count} instances, got shape {colors.shape}")

    per_view = [_view_boxes(view, count) for view in ids]
    pixel_counts = np.bincount(ids[ids >= 0], minlength=count)
    mean_colors = _color_sums(ids, images, count) / np.maximum(pixel_counts, 1)[:, None]
    centroids, box_min, box_max = _point_statistics(ids, world_points, count)

    info = []
    for k in range(count):
        views = {s: ViewPresence(int(view_counts[k]), tuple(int(v) for v in boxes[k]))
                 for s, (view_counts, boxes) in enumerate(per_view) if view_counts[k] > 0}
        info.append(InstanceInfo(
            id=k, color=tuple(int(c) for c in colors[k]), pixel_count=int(pixel_counts[k]), views=views,
            centroid=tuple(float(v) for v in centroids[k]), bbox_min=tuple(float(v) for v in box_min[k]),
            bbox_max=tuple(float(v) for v in box_max[k]), mean_color=tuple(float(v) for v in mean_colors[k])))
    return Instances(labels=ids, info=info)
