"""How flat a model reconstructs a surface that is flat in reality, on real photos without labels.

The real photo sets in ``../shared/examples-real`` have no ground truth, but some of their
scenes are dominated by one flat surface (demo6: a table top seen from above). A model that
bends that surface into a funnel puts few points near any plane. The figure printed per
photo set and checkpoint: the share of confident points (depth unprojected with the predicted
cameras, confidence above its median) within 2 % of the scene size from the best plane
(RANSAC, then least squares), the scene size being the diagonal of the points' 2-98 percentile
box. Beside it: the number of instances with the app's clustering of that model, and how many
of them are marked structure.

    python benchmarks/real_flatness.py --photos ../shared/examples-real/demo6 \
        --checkpoint iggt/weights/iggt-small --checkpoint runs/stage4-224/model

Every checkpoint runs on the same photos in the same run, so the rows compare.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iggt.geometry import ransac_plane  # noqa: E402
from iggt.instances import ClusteringConfig, segment_instances  # noqa: E402
from iggt.loading import load_model  # noqa: E402
from iggt.reconstruct import Reconstructor  # noqa: E402
from iggt.structure import mark_structure  # noqa: E402

PLANE_TOLERANCE = 0.02
"""Points within this share of the scene size from the plane count as on it."""


def flatness(points: np.ndarray, confidence: np.ndarray, seed: int = 0) -> float:
    """Share of the confident points within ``PLANE_TOLERANCE`` of the scene size from the best plane."""
    confident = points[confidence > np.median(confidence)]
    low, high = np.percentile(confident, [2, 98], axis=0)
    size = float(np.linalg.norm(high - low))
    rng = np.random.default_rng(seed)
    sample = confident[rng.choice(len(confident), min(len(confident), 20000), replace=False)]
    return float(ransac_plane(sample, PLANE_TOLERANCE * size, 500, rng).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", action="append", required=True, help="folder of photos (repeatable)")
    parser.add_argument("--checkpoint", action="append", required=True, help="model folder (repeatable)")
    parser.add_argument("--clustering", default="small", help="clustering preset (the app's for the small model)")
    args = parser.parse_args()

    print(f"| photos | checkpoint | points within {PLANE_TOLERANCE:.0%} of the best plane | instances | structure |")
    print("| --- | --- | ---: | ---: | ---: |")
    for checkpoint in args.checkpoint:
        reconstructor = Reconstructor(load_model(checkpoint))
        for folder in args.photos:
            photos = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            scene = reconstructor(photos)
            share = flatness(scene.points_from_depth.reshape(-1, 3), scene.depth_conf.reshape(-1))
            instances = mark_structure(scene.with_instances(
                segment_instances(scene, ClusteringConfig.from_preset(args.clustering))))
            structure = sum(info.structure for info in instances.info)
            print(f"| {Path(folder).name} | {checkpoint} | {share:.1%} | {len(instances.info)} | {structure} |")


if __name__ == "__main__":
    main()
