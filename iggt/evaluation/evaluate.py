"""The evaluate command: run the model and the baselines on scene records, score them, write a report.

For every scene record of a folder (the format of `iggt.data.scene_format`):

1. the ground truth is re-expressed with world = first camera (the model's convention) and
   unprojected to GT world points;
2. the model reconstructs the views (`Reconstructor`, at the model's own resolution, as for
   photos) and its features are clustered (`segment_instances`); the baselines of
   `iggt.evaluation.baselines` and the oracle (perfect features through the same clustering)
   label the same scene;
3. predictions are mapped back to the record's pixels (nearest neighbour) and
   `iggt.evaluation.metrics` scores geometry (model only) and instances (every method).

Outputs in the report folder: ``metrics.json`` (every figure, per scene and averaged),
``report.md`` (tables, model vs baselines) and PNG plots (per-scene bars; masks next to the
ground truth for the worst scenes). A scene that fails is reported and skipped.

The benchmark is a fixed set of `BENCHMARK_COUNT` generated scenes of data-set seed
`BENCHMARK_SEED`, made with ``python -m iggt generate --out data/benchmark --count 20 --seed 10000``.
Scene i of a data set with seed s is generated from ``SeedSequence([s, i])``, so it shares no
scene with training data generated with any other data-set seed (the training recipes use 0).
"""
from __future__ import annotations

import functools
import json
import math
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from iggt.data.oracle import oracle_scene
from iggt.data.scene_format import (SceneRecord, list_scene_records, load_scene_record, relative_extrinsics,
                                    semantic_index)
from iggt.evaluation import baselines, metrics
from iggt.geometry import unproject_depth
from iggt.instances import ClusteringConfig, instance_colors, segment_instances
from iggt.progress import Progress
from iggt.scene import BACKGROUND, Scene, ViewTransform, nearest_pixels

BENCHMARK_SEED = 10_000
BENCHMARK_COUNT = 20

MODEL = "iggt"
METHOD_TITLES = {
    MODEL: "IGGT (joint multi-view clustering)",
    "per_view": "Baseline: per-view clustering + 2D IoU chaining",
    "geometry": "Baseline: geometry only (planes removed, DBSCAN)",
    "oracle": "Oracle: perfect features, same clustering",
}
OPENVOCAB_METHODS = (MODEL, "per_view", "oracle")
"""Methods whose masks are also named by an image-text embedder (``openvocab_model``)."""
INSTANCE_COLUMNS = {"t_miou": "T-mIoU (strict)", "t_sr": "T-SR", "matched_miou": "matched mIoU (release)",
                    "num_matches": "matches", "ap": "AP", "ap50": "AP50", "ap_3d": "AP 3D",
                    "ap50_3d": "AP50 3D", "miou_2d": "mIoU 2D", "miou_3d": "mIoU 3D",
                    "ov_miou_2d": "OV mIoU 2D", "ov_miou_3d": "OV mIoU 3D"}
GEOMETRY_COLUMNS = {"abs_rel_view": "AbsRel (view)", "delta1_view": "δ<1.25 (view)",
                    "abs_rel_scene": "AbsRel (scene)", "delta1_scene": "δ<1.25 (scene)",
                    "points_chamfer": "Chamfer (point head)", "depth_points_chamfer": "Chamfer (depth+cam)",
                    "rra@5": "RRA@5", "rta@5": "RTA@5", "rra@15": "RRA@15", "rta@15": "RTA@15", "auc@30": "AUC@30"}
PERCENT_FIGURES = {"t_miou", "t_sr", "matched_miou", "matched_pixel_accuracy", "ap", "ap50", "ap_3d", "ap50_3d", "miou_2d", "miou_3d", "ov_miou_2d", "ov_miou_3d", "delta1_view",
                   "delta1_scene", "rra@5", "rta@5", "rra@15", "rta@15", "auc@30"}
COUNT_FIGURES = {"num_matches", "num_gt_objects", "num_predicted_instances"}
CLUSTERING_SHOWN = ("min_cluster_size", "min_samples", "cluster_selection_epsilon", "smoothing",
                    "reference_view_pixels")
DEFINITIONS = (
    "- **T-mIoU / T-SR** (multi-view tracking): predicted instances are matched to ground-truth objects once per "
    "scene (Hungarian on the IoU over all views together); T-mIoU = mean IoU of each object with its match "
    "(0 if none); an object is tracked (T-SR) when its per-view IoU with its match is >= 0.5 in every view where "
    "it covers >= 0.1 % of the image.",
    "- **matched mIoU (release)**: the released code's metric (`evaluate_matched_instances`): Hungarian matching "
    "on 1 - IoU (masks over all views together), matches kept at IoU >= 0.5, mean IoU over the kept matches only "
    "(an object without such a match is not counted, so the figure is >= 50 % whenever defined); `matches` is "
    "their number per scene. T-mIoU (strict) counts such an object as 0.",
    "- **AP / AP50**: class-agnostic instance AP, predictions ranked by size, IoU thresholds 0.5:0.05:0.95 "
    "(ScanNet) / 0.5, all-point interpolation; an unmatched prediction lying mostly on background (floor, walls) "
    "is ignored rather than a false positive; over the pixels of all views, and (3D) over the ground-truth "
    "point cloud fused into voxels of 0.25 % of the scene diagonal (majority label per voxel).",
    "- **OV mIoU 2D / 3D** (open vocabulary, with `--openvocab-model`): each predicted instance is named by an "
    "image-text embedder with the scene's category names as the vocabulary (`grounding.openvocab`; large planes "
    "are structure, i.e. background), then the mIoU as below: the masks and the embedder together.",
    "- **mIoU 2D / 3D**: each predicted instance is named by the majority ground-truth category of its pixels, "
    "then mean IoU over the categories present (background excluded).",
    "- **AbsRel, δ<1.25**: after median scaling per view, and with one scale for the whole scene. **Chamfer**: "
    "mean of accuracy and completeness (nearest-neighbour distances, 20k points) after a Umeyama similarity "
    "alignment to the ground truth. **RRA / RTA**: share of view pairs whose relative rotation / translation "
    "direction error is below the threshold (degrees); **AUC@30**: mean over 1..30 degrees of the share of "
    "pairs with max(rotation, translation) error below it.",
    "- **Baselines**: per-view = the model's features clustered in each view alone (cluster sizes divided by the "
    "number of views), ids chained between "
    "consecutive views by 2D mask IoU (Hungarian, IoU >= 0.1); geometry = large planes (floor, walls) removed "
    "by RANSAC from the model's points, the rest split by DBSCAN; oracle = ground-truth geometry and perfect "
    "features (one random unit vector per object) through the same clustering: the ceiling of the clustering.",
)
PANEL_VIEWS = 4
"""Views shown per scene in the mask comparison plots."""


@dataclass
class EvaluationConfig:
    """What to evaluate and where to write the report."""

    data: Path
    """Folder of scene records (searched recursively)."""
    checkpoint: str
    """Anything `iggt.loading.load_model` accepts: folder, file, preset name, Hub id."""
    out: Path
    clustering: ClusteringConfig = field(default_factory=lambda: ClusteringConfig.from_preset("medium"))
    """Used for the model, the per-view baseline and the oracle alike."""
    max_scenes: int | None = None
    baselines: bool = True
    device: str = "auto"
    worst_scenes: int = 3
    openvocab_model: str | None = None
    """Image-text embedder that names the masks for the open-vocabulary mIoU (a Hub id of a cached CLIP-family
    model, or "seeing"); None skips it."""
    """How many of the worst scenes (by the model's T-mIoU) get a mask comparison plot."""


# ============================================================================ ground truth


@dataclass
class GroundTruth:
    """A record's ground truth in the model's conventions."""

    extrinsics: np.ndarray
    """``[S, 3, 4]`` world = first camera."""
    points: np.ndarray
    """``[S, H, W, 3]`` world points (NaN where there is no surface)."""
    valid: np.ndarray
    """``[S, H, W]`` pixels with a surface (depth > 0)."""

    @classmethod
    def of(cls, record: SceneRecord) -> "GroundTruth":
        extrinsics = relative_extrinsics(record.extrinsics).astype(np.float64)
        valid = record.depth > 0
        points = unproject_depth(record.depth, extrinsics, record.intrinsics)
        points[~valid] = np.nan
        return cls(extrinsics, points, valid)


@dataclass
class RecordGrid:
    """Nearest-neighbour lookup of the model-input pixel that covers each pixel of the record.

    The model sees the views resized (and maybe cropped) to its own resolution; predictions
    are scored at the record's resolution, as depth benchmarks resize the prediction to the
    ground truth. Record pixels cropped away get a fill value (no prediction).
    """

    rows: np.ndarray
    """``[S, H, W]`` model-input row of each record pixel."""
    cols: np.ndarray
    inside: np.ndarray
    """``[S, H, W]`` whether that pixel exists in the model input."""

    @classmethod
    def of(cls, scene: Scene, record_size: tuple[int, int]) -> "RecordGrid":
        transforms = scene.view_transforms
        if not transforms and scene.image_size == record_size:
            transforms = [ViewTransform(record_size, record_size)] * scene.num_views
        if len(transforms) != scene.num_views:
            raise ValueError(f"the reconstruction has {scene.num_views} views but {len(transforms)} view transforms")
        grids = [nearest_pixels(t.from_original, record_size, scene.image_size) for t in transforms]
        return cls(*(np.stack(part) for part in zip(*grids)))

    def resample(self, array: np.ndarray, fill: float | int) -> np.ndarray:
        """``[S, h, w, ...]`` at the model input -> ``[S, H, W, ...]`` at the record."""
        views = np.arange(len(self.rows))[:, None, None]
        result = np.array(np.asarray(array)[views, self.rows, self.cols])
        result[~self.inside] = fill
        return result


# ============================================================================ one scene


def instance_figures(record: SceneRecord, truth: GroundTruth,
                     labels: np.ndarray) -> tuple[dict[str, float], metrics.TrackingResult]:
    """Every instance metric of one method's ``[S, H, W]`` labels (negative = background)."""
    gt_ids = record.instance_ids
    tracking = metrics.tracking_metrics(gt_ids, labels)
    figures = tracking.summary()
    figures.update(metrics.matched_instance_metrics(gt_ids, labels).summary())
    figures.update(metrics.instance_average_precision(gt_ids, labels).summary())
    semantic = record.semantic
    maps = [gt_ids, labels]
    if semantic is not None:
        named = metrics.semantic_from_instances(labels, semantic)
        figures["miou_2d"] = metrics.semantic_miou(named, semantic)
        maps += [semantic, named]
    fused = metrics.fuse_labels(truth.points, truth.valid, *maps)
    fused_ap = metrics.instance_average_precision(fused[0], fused[1])
    figures.update({"ap_3d": fused_ap.ap, "ap50_3d": fused_ap.ap50})
    if semantic is not None:
        figures["miou_3d"] = metrics.semantic_miou(fused[3], fused[2])
    return figures, tracking


def geometry_figures(scene: Scene, grid: RecordGrid, record: SceneRecord, truth: GroundTruth) -> dict[str, float]:
    """Depth, point-map and camera metrics of the model's reconstruction, at the record's pixels."""
    depth = grid.resample(scene.depth, np.nan)
    figures = metrics.depth_metrics(depth, record.depth, truth.valid).summary()
    for prefix, points in (("points", scene.world_points), ("depth_points", scene.points_from_depth)):
        result = metrics.pointmap_metrics(grid.resample(points, np.nan), truth.points, truth.valid)
        figures.update({f"{prefix}_{k}": v for k, v in result.summary().items()})
    figures.update(metrics.pose_metrics(scene.extrinsics, truth.extrinsics).summary())
    return figures


@dataclass
class MaskPanel:
    """What the mask comparison plot of one scene shows (a few views only)."""

    name: str
    score: float
    images: np.ndarray
    gt_ids: np.ndarray
    labels: dict[str, np.ndarray]
    matches: dict[str, dict[int, int]]
    """Per method: predicted id -> matched GT id (to draw both in the same colour)."""


@dataclass
class SceneResult:
    name: str
    geometry: dict[str, float] = field(default_factory=dict)
    methods: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    tracked_objects: dict[str, list[dict]] = field(default_factory=dict)
    """Per method: every GT object's match, T-IoU, per-view IoUs and whether it was tracked."""


def evaluate_record(record: SceneRecord, reconstructor, clustering: ClusteringConfig,
                    with_baselines: bool = True, embedder=None) -> tuple[SceneResult, MaskPanel]:
    """Reconstruct one record, label it with the model and the baselines, and score everything
    (with an image-text ``embedder``, also the open-vocabulary mIoU of `OPENVOCAB_METHODS`)."""
    result = SceneResult(record.name)
    truth = GroundTruth.of(record)
    start = time.perf_counter()
    scene = reconstructor([Image.fromarray(image) for image in record.images])
    result.seconds["reconstruct"] = time.perf_counter() - start
    grid = RecordGrid.of(scene, record.image_size)
    result.geometry = geometry_figures(scene, grid, record, truth)

    labelers: dict[str, Callable[[], np.ndarray]] = {
        MODEL: lambda: grid.resample(segment_instances(scene, clustering).labels, BACKGROUND)}
    if with_baselines:
        labelers["per_view"] = lambda: grid.resample(baselines.per_view_instances(scene, clustering), BACKGROUND)
        labelers["geometry"] = lambda: grid.resample(baselines.geometry_instances(scene), BACKGROUND)
        labelers["oracle"] = lambda: segment_instances(oracle_scene(record), clustering).labels
    shown = _panel_views(record.num_views)
    panel = MaskPanel(record.name, math.nan, record.images[shown], record.instance_ids[shown], {}, {})
    for method, labeler in labelers.items():
        start = time.perf_counter()
        labels = labeler()
        result.seconds[method] = time.perf_counter() - start
        result.methods[method], tracking = instance_figures(record, truth, labels)
        result.tracked_objects[method] = [asdict(o) for o in tracking.objects]
        panel.labels[method] = labels[shown]
        panel.matches[method] = {o.pred_id: o.gt_id for o in tracking.objects if o.pred_id is not None}
        if embedder is not None and method in OPENVOCAB_METHODS and record.semantic is not None:
            result.methods[method].update(openvocab_figures(record, truth, labels, embedder))
    panel.score = result.methods[MODEL]["t_miou"]
    return result, panel


def openvocab_figures(record: SceneRecord, truth: GroundTruth, labels: np.ndarray, embedder) -> dict[str, float]:
    """Open-vocabulary mIoU (2D over every view's pixels, 3D over the fused points) of one method's ``labels``:
    its instances (large planes marked as structure, as `reconstruct` does) named by ``embedder`` with the
    record's category names as the vocabulary."""
    from grounding.openvocab import label_instances
    from iggt.instances import describe_instances
    from iggt.structure import mark_structure

    scene = oracle_scene(record)  # the record's pictures and true geometry, so every method is named alike
    scene = scene.with_instances(describe_instances(labels, scene.points_from_depth, scene.images))
    scene = scene.with_instances(mark_structure(scene))
    categories = {}
    if scene.instances.object_ids:
        scene = label_instances(scene, list(record.categories), embedder, cache=None)
        categories = {i.id: semantic_index(record.categories, i.label) for i in scene.instances.info
                      if not i.structure}
    named = metrics.semantic_from_names(scene.instances.labels, categories)
    fused_truth, fused_named = metrics.fuse_labels(truth.points, truth.valid, record.semantic, named)
    return {"ov_miou_2d": metrics.semantic_miou(named, record.semantic),
            "ov_miou_3d": metrics.semantic_miou(fused_named, fused_truth)}


def _panel_views(num_views: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_views - 1, min(PANEL_VIEWS, num_views)).round().astype(int))


# ============================================================================ the run


def make_reconstructor(checkpoint: str, device: str = "auto"):
    """The model of ``checkpoint`` wrapped for inference."""
    from iggt.loading import load_model
    from iggt.reconstruct import Reconstructor

    return Reconstructor(load_model(checkpoint), device=device)


def run_evaluation(config: EvaluationConfig, reconstructor=None, progress: Progress | None = None) -> dict:
    """Evaluate every scene of ``config.data`` and write metrics.json, report.md and plots to ``config.out``.

    ``reconstructor`` (list of PIL images -> `Scene`, with view transforms when it resizes) defaults to the model of
    ``config.checkpoint``. Returns the content of metrics.json. (`iggt.evaluation.sharded` runs the same over
    several processes.)
    """
    directories = scene_directories(config)
    if reconstructor is None:
        reconstructor = make_reconstructor(config.checkpoint, config.device)
    config.out.mkdir(parents=True, exist_ok=True)

    results: list[SceneResult] = []
    failures: list[dict[str, str]] = []
    panels: list[MaskPanel] = []
    bar = tqdm(directories, desc="evaluate", unit="scene", disable=progress is not None)
    for index, directory in enumerate(bar):
        if progress is not None:
            progress(index / len(directories), f"scene {directory.name}")
        outcome = evaluate_directory(directory, reconstructor, config)
        if isinstance(outcome, dict):
            failures.append(outcome)
            continue
        results.append(outcome[0])
        panels = worst_panels(panels + [outcome[1]], config.worst_scenes)
    if progress is not None:
        progress(1.0, "writing the report")
    return write_report(config, getattr(reconstructor, "model_name", str(config.checkpoint)), results, failures,
                        panels)


def scene_directories(config: EvaluationConfig) -> list[Path]:
    """The scene records to evaluate, in order (the first ``config.max_scenes``)."""
    directories = list_scene_records(config.data)
    if not directories:
        raise FileNotFoundError(f"no scene records (folders with a meta.json) under {config.data}; make the benchmark "
                                f"with: python -m iggt generate --out {config.data} --count {BENCHMARK_COUNT} "
                                f"--seed {BENCHMARK_SEED}")
    return directories[:config.max_scenes] if config.max_scenes is not None else directories


def evaluate_directory(directory: Path, reconstructor, config: EvaluationConfig) -> tuple[SceneResult, MaskPanel] | dict:
    """One scene record scored, or (when anything fails) the failure entry of metrics.json."""
    try:
        return evaluate_record(load_scene_record(directory), reconstructor, config.clustering, config.baselines,
                               openvocab_embedder(config.openvocab_model))
    except Exception as error:  # one bad scene must not end the run: report it and go on
        tqdm.write(f"evaluate: skipped {directory.name}: {type(error).__name__}: {error}")
        return {"scene": str(directory), "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=-4)}  # the innermost frames


@functools.lru_cache(maxsize=2)
def openvocab_embedder(name: str | None):
    """The embedder of ``EvaluationConfig.openvocab_model``, loaded once per process (None: none)."""
    if name is None:
        return None
    from grounding.embedders import make_embedder

    return make_embedder(name)


def worst_panels(panels: list[MaskPanel], count: int) -> list[MaskPanel]:
    return sorted(panels, key=lambda p: _sort_key(p.score))[:count]


def write_report(config: EvaluationConfig, model_name: str, results: list[SceneResult], failures: list[dict],
                 panels: list[MaskPanel]) -> dict:
    """Write metrics.json, report.md and the plots of the scenes' results; returns metrics.json's content."""
    summary = {
        "data": str(config.data), "checkpoint": str(config.checkpoint),
        "model": model_name, "clustering": asdict(config.clustering),
        "scenes_evaluated": len(results), "scenes_failed": len(failures),
        "aggregate": aggregate(results),
        "scenes": [asdict(r) for r in results],
        "failures": failures,
    }
    (config.out / "metrics.json").write_text(json.dumps(_json_ready(summary), indent=1))
    shown = worst_panels(panels, config.worst_scenes)
    plots = plot_per_scene(results, config.out) + [plot_masks(p, config.out) for p in shown]
    (config.out / "report.md").write_text(markdown_report(summary, [p.name for p in plots]))
    return summary


def _sort_key(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def aggregate(results: list[SceneResult]) -> dict:
    """Mean of every figure over the scenes (NaN-aware: a figure undefined for a scene is left out)."""
    def mean_of(dicts: list[dict[str, float]]) -> dict[str, float]:
        keys = dict.fromkeys(k for d in dicts for k in d)
        return {k: metrics.nan_mean([d.get(k, math.nan) for d in dicts]) for k in keys}

    methods = dict.fromkeys(m for r in results for m in r.methods)
    return {"geometry": mean_of([r.geometry for r in results]),
            "methods": {m: mean_of([r.methods[m] for r in results if m in r.methods]) for m in methods},
            "seconds": mean_of([r.seconds for r in results])}


def _json_ready(value):
    """Plain JSON: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ============================================================================ report


def _format(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if key in PERCENT_FIGURES:
        return f"{100 * value:.1f}"
    return f"{value:.1f}" if key in COUNT_FIGURES else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_report(summary: dict, plot_files: list[str]) -> str:
    """``report.md``: what was run, instance table (model vs baselines), geometry table, failures, plots."""
    aggregate_ = summary["aggregate"]
    lines = [
        "# IGGT evaluation",
        "",
        f"- data: `{summary['data']}` ({summary['scenes_evaluated']} scenes evaluated, "
        f"{summary['scenes_failed']} failed)",
        f"- model: {summary['model']} (`{summary['checkpoint']}`); clustering: " + ", ".join(
            f"{k} {v}" for k, v in summary["clustering"].items() if k in CLUSTERING_SHOWN),
        "- percentages for T-mIoU, T-SR, AP, mIoU, δ, RRA/RTA and AUC; AbsRel as a fraction; "
        "Chamfer in ground-truth units (metres) after a similarity alignment",
        "",
        "## Instances (mean over scenes)",
        "",
    ]
    rows = [[METHOD_TITLES.get(method, method)] + [_format(k, figures.get(k)) for k in INSTANCE_COLUMNS]
            for method, figures in aggregate_["methods"].items()]
    lines += [_table(["Method", *INSTANCE_COLUMNS.values()], rows), ""]
    lines += ["## Geometry of the model (mean over scenes)", ""]
    geometry = aggregate_["geometry"]
    lines += [_table(list(GEOMETRY_COLUMNS.values()), [[_format(k, geometry.get(k)) for k in GEOMETRY_COLUMNS]]), ""]
    seconds = aggregate_["seconds"]
    if seconds:
        lines += ["Seconds per scene: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()), ""]
    lines += ["## Definitions", "", *DEFINITIONS, ""]
    if summary["failures"]:
        lines += ["## Failed scenes", ""] + [f"- `{f['scene']}`: {f['error']}" for f in summary["failures"]] + [""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plot_files] + [""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_scene(results: list[SceneResult], out: Path) -> list[Path]:
    """Bars per scene: T-mIoU and T-SR of every method, AbsRel and AUC@30 of the model."""
    if not results:
        return []
    plt = _pyplot()
    names = [r.name for r in results]
    x = np.arange(len(names))
    methods = list(dict.fromkeys(m for r in results for m in r.methods))
    panels = [("t_miou", "T-mIoU", True), ("t_sr", "T-SR", True), ("abs_rel_view", "AbsRel (per view)", False),
              ("auc@30", "pose AUC@30", False)]
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.5 * len(names) + 3), 2.6 * len(panels)),
                                squeeze=False)
    for ax, (key, title, per_method) in zip(axes[:, 0], panels):
        if per_method:
            width = 0.8 / max(len(methods), 1)
            for i, method in enumerate(methods):
                values = [r.methods.get(method, {}).get(key, math.nan) for r in results]
                ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method)
            ax.set_ylim(0, 1.25)  # room for the legend above the bars
            ax.legend(fontsize=7, ncol=len(methods), loc="upper center")
        else:
            ax.bar(x, [r.geometry.get(key, math.nan) for r in results], 0.6, color="gray")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x, names, rotation=60, fontsize=7, ha="right")
    figure.tight_layout()
    path = out / "per_scene.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path]


def _colorize(labels: np.ndarray, matches: dict[int, int], palette: np.ndarray, first_free: int) -> np.ndarray:
    """Labels -> RGB; a prediction matched to GT object g takes g's colour, others colours past the GT's."""
    image = np.zeros(labels.shape + (3,), dtype=np.uint8)
    unmatched = first_free
    for label in np.unique(labels[labels >= 0]):
        colour_index = matches.get(int(label))
        if colour_index is None:
            colour_index, unmatched = unmatched, unmatched + 1
        image[labels == label] = palette[colour_index % len(palette)]
    return image


def plot_masks(panel: MaskPanel, out: Path) -> Path:
    """Image, ground truth and every method's masks side by side for a few views of one scene."""
    plt = _pyplot()
    max_gt = int(panel.gt_ids.max(initial=0))
    palette = instance_colors(max_gt + 64)
    columns = [("image", panel.images)]
    columns.append(("ground truth", _colorize(np.where(panel.gt_ids > 0, panel.gt_ids, -1),
                                              {g: g for g in range(1, max_gt + 1)}, palette, max_gt + 1)))
    for method, labels in panel.labels.items():
        columns.append((method, _colorize(labels, panel.matches[method], palette, max_gt + 1)))
    views = len(panel.images)
    figure, axes = plt.subplots(views, len(columns), figsize=(2.0 * len(columns), 2.0 * views), squeeze=False)
    for col, (title, images) in enumerate(columns):
        for row in range(views):
            axes[row, col].imshow(images[row])
            axes[row, col].axis("off")
        axes[0, col].set_title(title, fontsize=8)
    figure.suptitle(f"{panel.name}: model T-mIoU {_format('t_miou', panel.score)} %", fontsize=9)
    figure.tight_layout()
    path = out / f"masks_{re.sub(r'[^A-Za-z0-9_.-]', '_', panel.name)}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
