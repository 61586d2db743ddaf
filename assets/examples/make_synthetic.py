"""Write the bundled synthetic example scenes: ``assets/examples/synthetic-<seed>/view_NN.png``.

Only the pictures are kept (the app reconstructs everything else); the scenes come from the
project's generator, so they look like what the shipped small model was trained on.
Run from the repository root: ``PYTHONPATH=. python assets/examples/make_synthetic.py``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from iggt.data.synthetic import GeneratorConfig, generate_scene

HERE = Path(__file__).resolve().parent
SEEDS = (5, 7, 12)
CONFIG = GeneratorConfig(num_views=6, image_size=(224, 224), object_count=(4, 7))


def write_example(seed: int, root: Path = HERE, config: GeneratorConfig = CONFIG) -> Path:
    """Render scene ``seed`` and save its views as PNG files in ``root/synthetic-<seed>``."""
    folder = root / f"synthetic-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(generate_scene(seed, config).images):
        Image.fromarray(image).save(folder / f"view_{index:02d}.png", optimize=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    for seed in parser.parse_args().seeds:
        print(f"wrote {write_example(seed).relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
