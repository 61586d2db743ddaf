"""Scene records and data sets from the generator: one pure function of a seed per scene, and
resumable, optionally parallel data set generation."""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from iggt.data.scene_format import (SceneRecord, SceneRecordError, quantize_depth, read_scene_meta, save_scene_record,
                                    semantic_index)
from iggt.data.synthetic.cameras import camera_path, look_at
from iggt.data.synthetic.config import CATEGORIES, GeneratorConfig
from iggt.data.synthetic.layout import make_layout
from iggt.data.synthetic.render import render
from iggt.scene import one_based_ids


def _intrinsics(fov_deg: float, size: tuple[int, int]) -> np.ndarray:
    """Square pixels, principal point at (W/2, H/2) as the model's pose encoding assumes."""
    height, width = size
    focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def generate_scene(seed: int, config: GeneratorConfig = GeneratorConfig()) -> SceneRecord:
    """One random scene, a pure function of ``seed`` and ``config``."""
    rng = np.random.default_rng(seed)
    layout = make_layout(config, rng)
    kind = str(rng.choice(config.trajectories)) if config.kind == "room" else "above"
    fov = float(rng.uniform(*config.fov_deg))
    intrinsic = _intrinsics(fov, config.image_size)
    eyes, targets, rolls = camera_path(kind, layout, config.num_views, rng)
    aims = np.array([o.aim for o in layout.objects])
    images, depths, indices, structures, extrinsics = [], [], [], [], []
    for eye, target, roll in zip(eyes, targets, rolls):
        extrinsic = look_at(eye, target, roll)
        rgb, depth, index, structure = render(layout, extrinsic, intrinsic, config.image_size, config.shadows)
        if not (index >= 0).any():  # aimed between objects and saw none: aim at the nearest one
            target = aims[np.argmin(np.linalg.norm(aims - target, axis=1))]
            extrinsic = look_at(eye, target, roll)
            rgb, depth, index, structure = render(layout, extrinsic, intrinsic, config.image_size, config.shadows)
        images.append(np.rint(rgb * 255).astype(np.uint8))
        depths.append(depth)
        indices.append(index)
        structures.append(structure)
        extrinsics.append(extrinsic)
    index = np.stack(indices)
    category_of = np.array([semantic_index(CATEGORIES, o.info.category) for o in layout.objects] + [0])  # [-1] = none
    return SceneRecord(
        name=f"synthetic_{seed}", images=np.stack(images), depth=quantize_depth(np.stack(depths)),
        extrinsics=np.stack(extrinsics).astype(np.float32),
        intrinsics=np.repeat(intrinsic[None], config.num_views, 0).astype(np.float32),
        instance_ids=one_based_ids(index).astype(np.int32), semantic=category_of[index].astype(np.int32),
        structure=np.stack(structures),
        objects=[o.info for o in layout.objects], categories=list(CATEGORIES),
        meta={"generator": "iggt.data.synthetic", "seed": int(seed), "config": asdict(config),
              "trajectory": kind, "fov_deg": fov, "room_half_size": [layout.room.half_x, layout.room.half_y]})


def scene_seed(dataset_seed: int, index: int) -> int:
    """Seed of scene ``index`` of a data set: independent streams for every (dataset, index)."""
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1)[0])


def _generate_and_save(job: tuple[int, Path, GeneratorConfig]) -> Path:
    seed, directory, config = job
    record = generate_scene(seed, config)
    record.name = directory.name
    return save_scene_record(record, directory)


def _already_done(directory: Path, seed: int, config: GeneratorConfig) -> bool:
    """A finished scene from an earlier run with the same seed and config (lets long runs resume)."""
    try:
        meta = read_scene_meta(directory).get("meta", {})
    except SceneRecordError:
        return False
    return meta.get("seed") == seed and meta.get("config") == json.loads(json.dumps(asdict(config)))


def generate_dataset(root: str | Path, count: int, seed: int = 0, config: GeneratorConfig = GeneratorConfig(),
                     progress: bool = True, workers: int = 1) -> list[Path]:
    """Write ``count`` scenes as ``root/scene_000000`` ... (scene record format), reusing
    scenes an interrupted earlier run already finished; ``workers`` > 1 uses processes."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    directories = [root / f"scene_{i:06d}" for i in range(count)]
    jobs = [(scene_seed(seed, i), d, config) for i, d in enumerate(directories)
            if not _already_done(d, scene_seed(seed, i), config)]
    with tqdm(total=count, initial=count - len(jobs), desc="generating scenes", unit="scene",
              disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_generate_and_save, jobs):
                    bar.update()
        else:
            for job in jobs:
                _generate_and_save(job)
                bar.update()
    return directories
