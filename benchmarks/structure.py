"""How well `iggt.structure.mark_structure` tells room from objects on the model's reconstructions.

The generated scenes carry a structure map (floor, each wall) beside the instance map, so the
marking can be scored per pixel: the share of room pixels marked structure (recall) and the
share of object pixels marked structure (objects lost to the grounding), and per object: how
many objects have most of their pixels marked structure. Each reconstruction is clustered once
(the app's preset) and marked with every variant, so the rows compare.

    python benchmarks/structure.py --data data/benchmark --checkpoint iggt/weights/iggt-small
    python benchmarks/structure.py --data data/benchmark --variant plane_tolerance=0.03
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from iggt.data.scene_format import list_scene_records, load_scene_record
from iggt.evaluation.evaluate import RecordGrid, make_reconstructor
from iggt.instances import ClusteringConfig, segment_instances
from iggt.structure import StructureConfig, mark_structure, structure_mask


def variant_config(text: str) -> StructureConfig:
    """``"name=value,name=value"`` -> a `StructureConfig` with those fields changed ("" = default)."""
    changes = {}
    for part in filter(None, text.split(",")):
        name, value = part.split("=")
        kind = type(getattr(StructureConfig(), name))
        changes[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return dataclasses.replace(StructureConfig(), **changes)


def score(marked: np.ndarray, room: np.ndarray, objects: np.ndarray) -> dict[str, float]:
    """Pixel recall of the room, share of object pixels marked, objects mostly marked."""
    ids = np.unique(objects[objects > 0])
    lost = sum(marked[objects == i].mean() > 0.5 for i in ids)
    return {"room_recall": float(marked[room].mean()), "object_marked": float(marked[objects > 0].mean()),
            "objects_lost": float(lost), "objects": float(len(ids))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/benchmark")
    parser.add_argument("--checkpoint", default="iggt/weights/iggt-small")
    parser.add_argument("--clustering", default="small")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--variant", action="append", default=[""],
                        help="StructureConfig changes, e.g. plane_tolerance=0.03 (repeatable; the default always runs)")
    args = parser.parse_args()

    reconstructor = make_reconstructor(args.checkpoint)
    clustering = ClusteringConfig.from_preset(args.clustering)
    totals = {v: [] for v in args.variant}
    for directory in list_scene_records(Path(args.data))[: args.scenes]:
        record = load_scene_record(directory)
        if record.structure is None:
            raise SystemExit(f"{directory} has no structure maps: regenerate it with `python -m iggt generate`")
        scene = reconstructor([Image.fromarray(image) for image in record.images])
        scene = scene.with_instances(segment_instances(scene, clustering))
        grid = RecordGrid.of(scene, record.image_size)
        room = (record.structure > 0) & grid.inside
        objects = np.where(grid.inside, record.instance_ids, 0)
        for variant in args.variant:
            marked = grid.resample(structure_mask(mark_structure(scene, variant_config(variant))), False)
            totals[variant].append(score(marked, room, objects))
    print(f"{len(totals[''])} scenes of {args.data}, {args.checkpoint}, clustering {args.clustering}")
    print(f"{'variant':40s} {'room recall':>12s} {'object px marked':>17s} {'objects lost':>13s}")
    for variant, rows in totals.items():
        lost, count = sum(r["objects_lost"] for r in rows), sum(r["objects"] for r in rows)
        print(f"{variant or 'default':40s} {100 * np.mean([r['room_recall'] for r in rows]):11.1f}% "
              f"{100 * np.mean([r['object_marked'] for r in rows]):16.1f}% {int(lost):6d} of {int(count)}")


if __name__ == "__main__":
    main()
